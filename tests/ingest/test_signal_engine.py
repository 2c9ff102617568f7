"""The signal engine against a real redis-server: shipped candles in as klines entries (written
here with XADD, the way the market feed writes them), signals and intents out.

What matters: nothing before the 48-candle window is full; every signal entry has finite
features; an intent passes the intake's parser with the old metadata, the candle's close time and
a deterministic id; the cooldown runs on market time; a restarted (or second) engine never
evaluates a candle twice; the model is the shipped LightGBM one by default, the trend rule when
there is none or it is corrupt; a malformed entry is skipped and the engine keeps going.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import math
import shutil
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from signals_ingest.model_registry import ModelRegistry
from signals_ingest.signal_engine import SignalEngine, exchange_divergence
from signals_ingest.signal_settings import DEFAULT_MODEL_PATH, SignalSettings
from common.redis_keys import (MARKET_KLINES_STREAM, SIGNAL_CHECKPOINT_KEY, SIGNAL_COOLDOWN_KEY, SIGNAL_STREAM,
                               TRADE_INTENT_STREAM, latest_price_key)
from trading.intent import parse_stream_fields, workflow_id_for
from trading.models import Side
from trading.signal_rules import FALLBACK_MODEL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "paper_exchange" / "data" / "ohlcv"
NEAR, XRP = "NEARUSDT", "XRPUSDT"
WINDOW = 48
FIVE_MIN = 300_000
NUMERIC = ("confidence", "price", "returns_1", "atr_value", "atr_price", "sigma", "volatility_factor", "rsi",
           "trend_strength", "funding_rate", "exchange_divergence")


def klines(file: str = "ADABTC", symbol: str = NEAR, start: int = 0, count: int = 120) -> list[dict[str, str]]:
    """Shipped candles as the feed's klines entries (flat strings, close = open + 299999)."""
    out = []
    with (DATA / f"{file}-5m.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[start:start + count]
    for row in rows:
        open_ms = int(row["timestamp_ms"])
        out.append({"symbol": symbol, "interval": "5m", "open_time": str(open_ms),
                    "close_time": str(open_ms + FIVE_MIN - 1), "open": row["open"], "high": row["high"],
                    "low": row["low"], "close": row["close"], "volume": row["volume"], "exchange": "binance",
                    "closed": "1"})
    return out


def settings(**changes) -> SignalSettings:
    values = dict(model_path=None, block_ms=20, batch_size=50, model_check_s=0.01)
    values.update(changes)
    return SignalSettings(**values)


class FixedModel:
    """Says the same thing on every candle (duck-types `LoadedModel`)."""

    def __init__(self, side: Side = Side.BUY, confidence: float = 0.9) -> None:
        self.side, self.confidence = side, confidence
        self.label, self.version, self.sha256 = "fixed-v0", "v0", "fixed"

    def predict(self, vector):
        return self.side, self.confidence


class FixedRegistry:
    def __init__(self, model) -> None:
        self.model = model

    def current(self):
        return self.model


async def add(redis, entries) -> list[str]:
    return [await redis.xadd(MARKET_KLINES_STREAM, e) for e in entries]


async def drain(engine: SignalEngine, redis, timeout: float = 60.0) -> None:
    """Run the engine until it has read every klines entry now in the stream, then stop it."""
    last = (await redis.xrevrange(MARKET_KLINES_STREAM, count=1))[0][0]
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while engine.last_id != last:
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline, f"engine stuck at {engine.last_id}"
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)


async def signals(redis) -> list[dict[str, str]]:
    return [fields for _id, fields in await redis.xrange(SIGNAL_STREAM)]


async def intents(redis) -> list[dict[str, str]]:
    return [fields for _id, fields in await redis.xrange(TRADE_INTENT_STREAM)]


# --- one step -------------------------------------------------------------------------------


async def test_nothing_before_the_window_is_full_then_one_signal_per_candle(redis_client):
    engine = SignalEngine(redis_client, settings())
    entries = klines(count=WINDOW + 2)
    for entry in entries[:WINDOW - 1]:
        assert await engine.on_candle(entry) is None
    assert await redis_client.xlen(SIGNAL_STREAM) == 0
    record = await engine.on_candle(entries[WINDOW - 1])
    assert record is not None and record["open_time"] == entries[WINDOW - 1]["open_time"]
    assert record["model"] == FALLBACK_MODEL and record["side"] in ("BUY", "SELL", "NONE")
    assert record["timestamp"] == datetime.fromtimestamp((int(record["open_time"]) + FIVE_MIN - 1) / 1000,
                                                         UTC).isoformat()
    assert all(math.isfinite(float(record[name])) for name in NUMERIC)
    assert Decimal(record["price"]) == Decimal(entries[WINDOW - 1]["close"])
    await engine.on_candle(entries[WINDOW])
    assert await redis_client.xlen(SIGNAL_STREAM) == 2
    assert await engine.on_candle(entries[WINDOW]) is None  # the same candle again: nothing
    assert await redis_client.xlen(SIGNAL_STREAM) == 2


async def test_run_over_real_candles_writes_finite_signals_with_the_fallback(redis_client):
    await add(redis_client, klines(count=400))
    engine = SignalEngine(redis_client, settings(confidence_threshold=0.6, cooldown_s=0))
    await drain(engine, redis_client)
    out = await signals(redis_client)
    assert len(out) == 400 - WINDOW + 1
    assert [int(s["open_time"]) for s in out] == sorted({int(s["open_time"]) for s in out})
    for s in out:
        assert s["model"] == FALLBACK_MODEL and s["symbol"] == NEAR and s["source"] == "signal-engine"
        assert all(math.isfinite(float(s[name])) for name in NUMERIC), s
        assert 0 <= float(s["confidence"]) <= 1 and s["regime"] and s["reason"]
        assert s["funding_rate"] == "0.0" and s["exchange_divergence"] == "0.0"  # no price hash
    published = [s for s in out if s["intent_published"] == "1"]
    assert published and len(published) == await redis_client.xlen(TRADE_INTENT_STREAM)
    assert all(float(s["confidence"]) >= 0.6 and s["side"] != "NONE" for s in published)
    assert not any(s["intent_published"] == "1" for s in out if float(s["confidence"]) < 0.6)


async def test_an_intent_passes_the_intake_parser_with_the_old_metadata(redis_client):
    entries = klines(count=400)
    await add(redis_client, entries)
    await drain(SignalEngine(redis_client, settings(confidence_threshold=0.55, cooldown_s=0)), redis_client)
    by_open = {e["open_time"]: e for e in entries}
    found = await intents(redis_client)
    assert found
    for fields in found:
        intent = parse_stream_fields(fields, known_symbols={NEAR})
        candle = by_open[fields["intent_id"].removeprefix(f"sig-{NEAR}-")]
        assert fields["intent_id"] == f"sig-{NEAR}-{candle['open_time']}"
        assert workflow_id_for(intent) == f"trade-sig-{NEAR}-{candle['open_time']}"
        assert intent.timestamp == datetime.fromtimestamp(int(candle["close_time"]) / 1000, UTC)
        assert intent.entry_price == parse_stream_fields({**fields, "entry_price": candle["close"]}).entry_price
        assert intent.model == FALLBACK_MODEL and intent.source == "signal-engine"
        assert intent.confidence >= 0.55 and intent.position_size_usd == 200 and intent.leverage == 10
        for name in ("atr_value", "volatility_factor", "exchange_divergence", "funding_rate", "regime"):
            assert getattr(intent, name) is not None, name
        assert 0 < intent.atr_value < 1  # a fraction of price, as trading.levels reads it
        if intent.side is Side.BUY:
            assert intent.stop_loss < intent.entry_price < intent.take_profit
            assert intent.regime == "TRENDING_UP"
        else:
            assert intent.take_profit < intent.entry_price < intent.stop_loss
            assert intent.regime == "TRENDING_DOWN"
        assert intent.reason.startswith("trend following")


async def test_cooldown_runs_on_market_time(redis_client):
    engine = SignalEngine(redis_client, settings(cooldown_s=900, confidence_threshold=0.68),
                          model=FixedRegistry(FixedModel(Side.BUY, 0.9)))
    entries = klines(file="ETHBTC", count=WINDOW + 7)  # ETHBTC has no gaps: one candle every 5 min
    for entry in entries:
        await engine.on_candle(entry)
    out = await signals(redis_client)
    assert [s["intent_published"] for s in out] == ["1", "0", "0", "1", "0", "0", "1", "0"]
    assert all(s["model"] == "fixed-v0" and s["model_version"] == "v0" for s in out)
    assert "cooldown" in out[1]["reason"]
    published = await intents(redis_client)
    closes = [int(parse_stream_fields(i).timestamp.timestamp() * 1000) for i in published]
    assert [b - a for a, b in zip(closes, closes[1:])] == [900_000, 900_000]
    assert int(await redis_client.get(SIGNAL_COOLDOWN_KEY.format(symbol=NEAR))) == closes[-1]
    assert REGISTRY.get_sample_value("qt_signal_intents_total", {"symbol": NEAR, "side": "BUY"}) >= 3
    assert REGISTRY.get_sample_value("qt_signal_evaluations_total", {"model": "fixed-v0"}) >= 8


async def test_below_threshold_or_with_publishing_off_no_intent(redis_client):
    engine = SignalEngine(redis_client, settings(), model=FixedRegistry(FixedModel(Side.SELL, 0.6)))
    for entry in klines(count=WINDOW + 3):
        await engine.on_candle(entry)
    assert await redis_client.xlen(TRADE_INTENT_STREAM) == 0
    assert [s["side"] for s in await signals(redis_client)] == ["SELL"] * 4
    await redis_client.flushdb()
    quiet = SignalEngine(redis_client, settings(publish_intents=False), model=FixedRegistry(FixedModel()))
    for entry in klines(count=WINDOW + 3):
        await quiet.on_candle(entry)
    assert await redis_client.xlen(TRADE_INTENT_STREAM) == 0 and await redis_client.xlen(SIGNAL_STREAM) == 4


# --- restarts and two engines ---------------------------------------------------------------


async def test_a_restarted_engine_warms_up_and_publishes_nothing_twice(redis_client):
    fixed = FixedRegistry(FixedModel(Side.BUY, 0.9))
    await add(redis_client, klines(file="ETHBTC", count=100))
    first = SignalEngine(redis_client, settings(cooldown_s=0), model=fixed)
    await drain(first, redis_client)
    assert await redis_client.xlen(SIGNAL_STREAM) == 100 - WINDOW + 1
    assert await redis_client.xlen(TRADE_INTENT_STREAM) == 100 - WINDOW + 1
    checkpoint = await redis_client.get(SIGNAL_CHECKPOINT_KEY)
    assert checkpoint == first.last_id

    # Restart: the same stream, nothing new, then 20 more candles.
    second = SignalEngine(redis_client, settings(cooldown_s=0), model=fixed)
    await second.warm_up()
    assert len(second.windows[NEAR]) == WINDOW and second.last_id == checkpoint
    await add(redis_client, klines(file="ETHBTC", start=100, count=20))
    await drain(second, redis_client)
    out = await signals(redis_client)
    assert len(out) == 120 - WINDOW + 1
    assert len({s["open_time"] for s in out}) == len(out)
    ids = [i["intent_id"] for i in await intents(redis_client)]
    assert len(ids) == len(set(ids)) == 120 - WINDOW + 1
    # The first candle after the restart was evaluated over a full window (warm-up worked).
    assert out[100 - WINDOW + 1]["open_time"] == klines(file="ETHBTC", start=100, count=1)[0]["open_time"]


async def test_an_engine_restarted_from_scratch_on_old_markers_does_not_republish(redis_client):
    """The checkpoint is lost but the per-symbol markers are not: still nothing twice."""
    fixed = FixedRegistry(FixedModel(Side.BUY, 0.9))
    await add(redis_client, klines(file="ETHBTC", count=80))
    await drain(SignalEngine(redis_client, settings(cooldown_s=0), model=fixed), redis_client)
    before = await redis_client.xlen(SIGNAL_STREAM), await redis_client.xlen(TRADE_INTENT_STREAM)
    await redis_client.delete(SIGNAL_CHECKPOINT_KEY)
    await drain(SignalEngine(redis_client, settings(cooldown_s=0), model=fixed), redis_client)
    assert (await redis_client.xlen(SIGNAL_STREAM), await redis_client.xlen(TRADE_INTENT_STREAM)) == before


async def test_two_engines_side_by_side_evaluate_each_candle_once(redis_client):
    fixed = FixedRegistry(FixedModel(Side.BUY, 0.9))
    await add(redis_client, klines(file="ETHBTC", count=90) + klines(file="XRPUSDT", symbol=XRP, count=90))
    a = SignalEngine(redis_client, settings(cooldown_s=0, batch_size=7), model=fixed)
    b = SignalEngine(redis_client, settings(cooldown_s=0, batch_size=5), model=fixed)
    await asyncio.gather(drain(a, redis_client), drain(b, redis_client))
    out = await signals(redis_client)
    assert Counter(s["symbol"] for s in out) == {NEAR: 90 - WINDOW + 1, XRP: 90 - WINDOW + 1}
    assert len({(s["symbol"], s["open_time"]) for s in out}) == len(out)
    ids = [i["intent_id"] for i in await intents(redis_client)]
    assert len(ids) == len(set(ids)) == 2 * (90 - WINDOW + 1)


# --- models ---------------------------------------------------------------------------------


async def test_the_shipped_model_is_used_by_default(redis_client):
    assert SignalSettings().model_path == DEFAULT_MODEL_PATH and DEFAULT_MODEL_PATH.exists()
    meta = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    await add(redis_client, klines(file="XRPUSDT", symbol=XRP, count=300))
    engine = SignalEngine(redis_client, SignalSettings(block_ms=20))
    await drain(engine, redis_client)
    out = await signals(redis_client)
    assert len(out) == 300 - WINDOW + 1
    assert {s["model"] for s in out} == {meta["model"]} == {"lgbm-signal-v1"}
    assert {s["model_version"] for s in out} == {meta["version"]}
    assert all(s["side"] in ("BUY", "SELL") and 0.5 <= float(s["confidence"]) <= 1 for s in out)
    assert len({s["confidence"] for s in out}) > 10  # it really scores each candle
    for fields in await intents(redis_client):
        intent = parse_stream_fields(fields)
        assert intent.model == "lgbm-signal-v1" and intent.confidence >= engine.settings.confidence_threshold
    assert REGISTRY.get_sample_value("qt_signal_model_info", {"model": "lgbm-signal-v1", "version": "v1"}) == 1


def _model_copy(tmp_path: Path) -> Path:
    for name in ("model.txt", "model.json"):
        shutil.copy(DEFAULT_MODEL_PATH.parent / name, tmp_path / name)
    return tmp_path / "model.txt"


async def test_a_corrupt_model_falls_back_to_the_rule_with_a_clear_log(redis_client, tmp_path, caplog):
    path = _model_copy(tmp_path)
    path.write_text("tree\nversion=v4\nthis is not a model\n")
    caplog.set_level(logging.INFO)
    engine = SignalEngine(redis_client, settings(model_path=path))
    for entry in klines(count=WINDOW + 2):
        await engine.on_candle(entry)
    assert {s["model"] for s in await signals(redis_client)} == {FALLBACK_MODEL}
    refusals = [r for r in caplog.records if "signal model refused" in r.getMessage()]
    assert len(refusals) == 1, "logged once, not per candle"
    assert "does not match its metadata" in refusals[0].getMessage()

    # The learning workflow promotes a good model by replacing the files: picked up, no restart.
    shutil.copy(DEFAULT_MODEL_PATH, path)
    await asyncio.sleep(0.02)
    more = klines(count=WINDOW + 4)[-2:]
    for entry in more:
        await engine.on_candle(entry)
    assert [s["model"] for s in await signals(redis_client)][-2:] == ["lgbm-signal-v1"] * 2


@pytest.mark.parametrize("damage,expected", [
    ("garbage", "not a valid LightGBM model"),
    ("features", "trained on features"),
    ("missing", "does not exist"),
    ("no_meta", "metadata"),
])
def test_the_registry_refuses_bad_models(tmp_path, damage, expected):
    path = _model_copy(tmp_path)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    if damage == "garbage":
        path.write_text("garbage that is no model\n")
        meta.pop("model_sha256")
    elif damage == "features":
        meta["feature_names"] = meta["feature_names"][::-1]
    elif damage == "missing":
        path.unlink()
    elif damage == "no_meta":
        meta_path.unlink()
    if meta_path.exists():
        meta_path.write_text(json.dumps(meta))
    registry = ModelRegistry(path)
    assert registry.current() is None
    assert expected in (registry.last_error or "")


# --- market hash and bad input --------------------------------------------------------------


async def test_funding_and_divergence_come_from_the_latest_price_hash(redis_client):
    entries = klines(file="XRPUSDT", symbol=XRP, count=WINDOW + 2)
    close_ms = int(entries[WINDOW - 1]["close_time"])
    await redis_client.hset(latest_price_key(XRP), mapping={
        "price": "1.0000", "timestamp": str(close_ms + 1_000), "received_ms": "1", "exchange": "binance",
        "funding_rate": "0.0001", "funding_time": "0", "price:binance": "1.0000",
        "timestamp:binance": str(close_ms + 1_000), "price:bybit": "1.0100", "timestamp:bybit": str(close_ms)})
    engine = SignalEngine(redis_client, settings(cooldown_s=0), model=FixedRegistry(FixedModel(Side.SELL, 0.8)))
    for entry in entries[:WINDOW]:
        await engine.on_candle(entry)
    record = (await signals(redis_client))[-1]
    assert float(record["funding_rate"]) == 0.0001
    assert float(record["exchange_divergence"]) == pytest.approx(0.01)
    intent = parse_stream_fields((await intents(redis_client))[-1])
    assert intent.funding_rate == 0.0001 and intent.exchange_divergence == pytest.approx(0.01)

    # The second venue's quote goes stale: divergence 0. The market clock moved far past the next
    # candle: it is recorded, but no intent (the gate would reject it as stale).
    await redis_client.hset(latest_price_key(XRP), mapping={"timestamp": str(close_ms + 3_600_000)})
    await engine.on_candle(entries[WINDOW])
    record = (await signals(redis_client))[-1]
    assert record["exchange_divergence"] == "0.0" and record["intent_published"] == "0"
    assert "stale" in record["reason"]


def test_divergence_rules():
    base = {"price": "100", "timestamp": "1700000000000", "exchange": "binance"}
    assert exchange_divergence(base, 60) == 0.0
    assert exchange_divergence({**base, "price:okx": "99", "timestamp:okx": "1700000030000"}, 60) == pytest.approx(-0.01)
    assert exchange_divergence({**base, "price:okx": "99"}, 60) == 0.0  # freshness unknown
    assert exchange_divergence({**base, "price:okx": "nan", "timestamp:okx": "1700000000000"}, 60) == 0.0
    assert exchange_divergence({**base, "price:binance": "120", "timestamp:binance": "1700000000000"}, 60) == 0.0


async def test_malformed_entries_are_skipped_and_the_engine_keeps_going(redis_client, caplog):
    good = klines(count=WINDOW + 10)
    bad = [
        {k: v for k, v in good[0].items() if k != "close"},
        {**good[0], "close": "NaN"},
        {**good[0], "high": "0.00000001"},  # high below low
        {**good[0], "open_time": "yesterday"},
        {"junk": "1"},
    ]
    mixed = good[:20] + bad + good[20:]
    await add(redis_client, mixed)
    caplog.set_level(logging.WARNING, logger="signals_ingest.signal_engine")
    engine = SignalEngine(redis_client, settings())
    await drain(engine, redis_client)
    assert await redis_client.xlen(SIGNAL_STREAM) == len(good) - WINDOW + 1
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == len(bad)
    assert any("missing close" in m for m in skipped) and any("not a finite number" in m for m in skipped)
    assert any("inconsistent candle" in m for m in skipped) and any("open_time" in m for m in skipped)


async def test_a_long_gap_restarts_the_window(redis_client):
    fixed = FixedRegistry(FixedModel(Side.BUY, 0.9))
    entries = klines(file="ETHBTC", count=WINDOW + 60)
    day = 86_400_000
    later = [{**e, "open_time": str(int(e["open_time"]) + day), "close_time": str(int(e["close_time"]) + day)}
             for e in entries[WINDOW:WINDOW + 3]]  # a new replay a day later, say
    await add(redis_client, entries[:WINDOW] + later)
    engine = SignalEngine(redis_client, settings(), model=fixed)
    await drain(engine, redis_client)
    assert await redis_client.xlen(SIGNAL_STREAM) == 1  # only the 48th candle; the rest warms up again
    assert len(engine.windows[NEAR]) == 3

    restarted = SignalEngine(redis_client, settings(), model=fixed)
    await restarted.warm_up()
    assert len(restarted.windows[NEAR]) == WINDOW  # read back up to the checkpoint (the 48th)
    await drain(restarted, redis_client)
    assert [b.open_ms for b in restarted.windows[NEAR]] == [int(e["open_time"]) for e in later]
    assert await redis_client.xlen(SIGNAL_STREAM) == 1


async def test_warm_up_stops_at_a_gap(redis_client):
    fixed = FixedRegistry(FixedModel(Side.BUY, 0.9))
    entries = klines(file="ETHBTC", count=2 * WINDOW)
    day = 86_400_000
    shifted = [{**e, "open_time": str(int(e["open_time"]) + day), "close_time": str(int(e["close_time"]) + day)}
               for e in entries[WINDOW:]]
    await add(redis_client, entries[:WINDOW] + shifted)
    await drain(SignalEngine(redis_client, settings(), model=fixed), redis_client)
    assert await redis_client.xlen(SIGNAL_STREAM) == 2  # the 48th of each stretch
    restarted = SignalEngine(redis_client, settings(), model=fixed)
    await restarted.warm_up()
    assert [b.open_ms for b in restarted.windows[NEAR]] == [int(e["open_time"]) for e in shifted]
