"""The signal engine: closed candles → features → LightGBM (or the trend rule) → signals and
trade intents, on the old system's streams.

For every closed candle on `quantum:stream:market.klines` (one entry per symbol and 5-minute
candle, written by the market feed): append it to the symbol's rolling window (48 candles, the
trade workflow's feature window); once the window is full compute the features
(`trading.features`), read the funding rate and the cross-venue divergence from the feed's
latest-price hash, evaluate the registered model (`model_registry`) or, without a valid one, the
rule-based fallback (`fallback-trend-following`), write one `quantum:stream:ai.signal_generated`
entry, and when the confidence reaches the threshold and the symbol is outside its cooldown
(market time), one `quantum:stream:trade.intent` entry with the old producers' fields and
metadata (`trading.signal_rules.build_intent`).

Reading: plain XREAD, not a consumer group. A consumer group hands each entry to *one* consumer,
so two engines would each see only part of a symbol's candles and compute features over broken
windows; every engine must see every candle. Progress is kept in Redis instead:

- `SIGNAL_LAST_EVAL_KEY` (per symbol): open time of the last candle evaluated. Evaluating a
  candle is one WATCH/MULTI transaction that checks and advances this marker, reads the cooldown
  marker (`SIGNAL_COOLDOWN_KEY`), and writes the signal entry, the intent (if any), both markers
  and the checkpoint together: all or nothing. A candle is therefore evaluated and published once,
  whether two engines run side by side or one restarts after a crash at any point; the
  deterministic `intent_id` (`sig-{symbol}-{open_time}`) is a second line of defence at the intake.
- `SIGNAL_CHECKPOINT_KEY`: id of the last klines entry evaluated. A restarted engine reads the
  stream *backwards* from there to refill its windows (warm-up, nothing published), then reads
  forward from there: no candle is skipped. Without a checkpoint (first start) it reads the stream
  from the beginning; candles that closed more than `max_candle_age_s` before the market clock
  (the latest-price hash's `timestamp`) are evaluated and recorded but get no intent (they would
  be rejected as stale).

Time is market time throughout: the intent's `timestamp` is the candle's close time, the cooldown
compares candle close times, staleness compares with the exchange's clock, never the wall clock.

A gap of more than `max_gap_candles` (12) missing candles restarts the symbol's window (a long
feed outage, or a new replay on a Redis that kept the old one's candles): features never span two
stretches of market that do not join up. Smaller gaps are kept inside the window.

A malformed klines entry (missing or non-numeric field, NaN, non-positive price, high < low) is
skipped with a warning; a Redis error leaves the entry unprocessed and the engine retries it after
a pause; any other error on one entry is logged and that entry skipped: the engine keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal as signals
from collections import deque
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError, WatchError

from signals_ingest.model_registry import LoadedModel, ModelRegistry
from signals_ingest.signal_settings import SignalSettings
from common.redis_keys import (MARKET_KLINES_STREAM, SIGNAL_CHECKPOINT_KEY, SIGNAL_COOLDOWN_KEY, SIGNAL_LAST_EVAL_KEY,
                               SIGNAL_STREAM, TRADE_INTENT_STREAM, latest_price_key)
from trading.features import CANDLE_MS, MarketFeatures, Candle, compute_features
from trading.intent import IntentError, parse_stream_fields, to_stream_fields
from trading.levels import LevelsError
from trading.signal_rules import (
    FALLBACK_MODEL,
    INTENT_SOURCE,
    Signal,
    build_intent,
    fallback_signal,
    feature_vector,
    market_time,
    model_signal,
    should_publish,
)

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 1.0

EVALUATIONS = Counter("qt_signal_evaluations", "Candles evaluated by the signal engine", ["model"])
INTENTS = Counter("qt_signal_intents", "Trade intents published by the signal engine", ["symbol", "side"])
SKIPPED = Counter("qt_signal_skipped_entries", "Klines entries the signal engine skipped", ["reason"])
MODEL_INFO = Gauge("qt_signal_model_info", "Model the signal engine evaluates with (value 1)", ["model", "version"])


class KlineError(ValueError):
    """A klines entry that cannot be a closed candle."""


class Kline:
    """A parsed klines entry."""

    __slots__ = ("symbol", "interval", "open_ms", "close_ms", "bar", "closed", "exchange")

    def __init__(self, symbol: str, interval: str, open_ms: int, close_ms: int, bar: Candle, closed: bool,
                 exchange: str) -> None:
        self.symbol, self.interval, self.open_ms, self.close_ms = symbol, interval, open_ms, close_ms
        self.bar, self.closed, self.exchange = bar, closed, exchange


def parse_kline(fields: Mapping[Any, Any], interval_ms: int = CANDLE_MS) -> Kline:
    """A klines stream entry (flat string fields, see the market feed) → `Kline`; `KlineError`
    names every problem. Without `close_time` the candle closes at open + interval - 1 ms."""
    data = {_text(k).strip().lower(): _text(v).strip() for k, v in fields.items()}
    problems: list[str] = []
    symbol = data.get("symbol", "").upper()
    if not symbol or not symbol.isalnum() or len(symbol) > 40:
        problems.append(f"symbol {data.get('symbol')!r} is not an exchange id")
    open_ms = _int(data.get("open_time"), "open_time", problems)
    close_ms = _int(data.get("close_time"), "close_time", problems) if data.get("close_time") else (
        open_ms + interval_ms - 1 if open_ms is not None else None)
    prices = {name: _decimal(data.get(name), name, problems) for name in ("open", "high", "low", "close", "volume")}
    if not problems:
        o, h, low, c, v = (prices[n] for n in ("open", "high", "low", "close", "volume"))
        if min(o, h, low, c) <= 0:
            problems.append("prices must be > 0")
        if v < 0:
            problems.append("volume must be >= 0")
        if h < low or h < max(o, c) or low > min(o, c):
            problems.append(f"inconsistent candle: high {h}, low {low}, open {o}, close {c}")
        if close_ms is not None and open_ms is not None and close_ms <= open_ms:
            problems.append(f"close_time {close_ms} is not after open_time {open_ms}")
    if problems:
        raise KlineError("; ".join(problems))
    bar = Candle(open_ms, prices["open"], prices["high"], prices["low"], prices["close"], prices["volume"])
    closed = data.get("closed", "1").lower() not in ("0", "false", "no")
    return Kline(symbol, data.get("interval", ""), open_ms, close_ms, bar, closed, data.get("exchange", ""))


class SignalEngine:
    """Reads closed candles, writes signals and intents (module docstring). `on_candle` is one
    step; `run` is the loop around it."""

    def __init__(self, redis: aioredis.Redis, settings: SignalSettings | None = None,
                 model: ModelRegistry | None = None) -> None:
        self.redis = redis
        self.settings = settings or SignalSettings()
        self.registry = model if model is not None else ModelRegistry(
            self.settings.model_path, check_interval_s=self.settings.model_check_s)
        self.windows: dict[str, deque[Candle]] = {}
        self.last_id: str = "0"
        self._symbols = set(self.settings.symbols)
        self._max_step_ms = (self.settings.max_gap_candles + 1) * self.settings.interval_ms
        self._model_label: tuple[str, str] | None = None
        self._predict_failures: set[str] = set()
        self._stale_warned: set[str] = set()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Warm up, then evaluate every new closed candle until `stop` is set."""
        while not stop.is_set():
            try:
                await self.warm_up()
                break
            except RedisError as exc:
                log.warning("signal engine warm-up failed (%s); retrying", exc)
                await _pause(stop)
        self._note_model(self.registry.current() if self.registry is not None else None)
        log.info("signal engine reading %s after %s (%d symbols warm, model %s, threshold %.2f)",
                 MARKET_KLINES_STREAM, self.last_id, len(self.windows), self._current_label()[0],
                 self.settings.confidence_threshold)
        while not stop.is_set():
            try:
                reply = await self.redis.xread({MARKET_KLINES_STREAM: self.last_id},
                                               count=self.settings.batch_size, block=self.settings.block_ms)
            except RedisError as exc:
                log.warning("signal engine cannot read %s (%s); retrying", MARKET_KLINES_STREAM, exc)
                await _pause(stop)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    if not await self._process(_text(entry_id), fields, stop):
                        return
                    self.last_id = _text(entry_id)

    async def _process(self, entry_id: str, fields: Mapping[Any, Any], stop: asyncio.Event) -> bool:
        """One entry, retried while Redis fails; False when stopped before it was processed."""
        while not stop.is_set():
            try:
                await self.on_candle(fields, entry_id=entry_id)
                return True
            except RedisError as exc:
                log.warning("signal engine: Redis error on klines entry %s (%s); retrying", entry_id, exc)
                await _pause(stop)
            except Exception:
                log.exception("signal engine: klines entry %s skipped after an unexpected error", entry_id)
                SKIPPED.labels("error").inc()
                return True
        return False

    async def warm_up(self) -> None:
        """Refill the windows from the stream's history up to the checkpoint (nothing published)
        and resume after it; without a checkpoint, start from the stream's beginning."""
        checkpoint = await self.redis.get(SIGNAL_CHECKPOINT_KEY)
        self.windows.clear()
        if checkpoint is None:
            self.last_id = "0"
            return
        checkpoint = _text(checkpoint)
        newest_first: dict[str, list[Candle]] = {}
        complete: set[str] = set()  # full, or a gap reached: older candles do not belong
        upper, read, window = checkpoint, 0, self.settings.window
        while read < self.settings.warmup_max_entries:
            entries = await self.redis.xrevrange(MARKET_KLINES_STREAM, max=upper, min="-",
                                                 count=self.settings.batch_size)
            if not entries:
                break
            new_symbol = False
            for _entry_id, fields in entries:
                try:
                    kline = parse_kline(fields, self.settings.interval_ms)
                except KlineError:
                    continue
                if not self._wanted(kline) or kline.symbol in complete:
                    continue
                bars = newest_first.get(kline.symbol)
                if bars is None:
                    bars, new_symbol = newest_first.setdefault(kline.symbol, []), True
                if bars and bars[-1].open_ms - kline.open_ms > self._max_step_ms:
                    complete.add(kline.symbol)
                elif not bars or kline.open_ms < bars[-1].open_ms:
                    bars.append(kline.bar)
                    if len(bars) >= window:
                        complete.add(kline.symbol)
            read += len(entries)
            if not new_symbol and complete >= newest_first.keys():
                break
            upper = "(" + _text(entries[-1][0])
        for symbol, bars in newest_first.items():
            self.windows[symbol] = deque(reversed(bars), maxlen=window)
        self.last_id = checkpoint

    # --- one candle -------------------------------------------------------------------------

    async def on_candle(self, fields: Mapping[Any, Any], entry_id: str | None = None) -> dict[str, str] | None:
        """Evaluate one klines entry. Returns the `ai.signal_generated` fields written (with
        `intent_published` "1" when an intent went out too), or None: malformed, filtered, still
        warming up, or already evaluated (by this engine before a restart, or by another)."""
        try:
            kline = parse_kline(fields, self.settings.interval_ms)
        except KlineError as exc:
            log.warning("klines entry %s skipped: %s (fields %s)", entry_id or "?", exc, _preview(fields))
            SKIPPED.labels("malformed").inc()
            return None
        if not self._wanted(kline):
            return None
        window = self.windows.setdefault(kline.symbol, deque(maxlen=self.settings.window))
        if window and kline.open_ms <= window[-1].open_ms:
            SKIPPED.labels("duplicate").inc()
            return None  # this candle (or a later one) is already in the window
        if window and kline.open_ms - window[-1].open_ms > self._max_step_ms:
            log.info("%s: %d candles missing before %s: window restarted (warm-up again)", kline.symbol,
                     (kline.open_ms - window[-1].open_ms) // self.settings.interval_ms - 1, kline.open_ms)
            window.clear()
        candles = [*window, kline.bar][-self.settings.window:]
        if len(candles) < self.settings.window:
            window.append(kline.bar)
            return None
        features = compute_features(candles)
        if features is None:  # cannot happen with window >= 20; kept for safety
            window.append(kline.bar)
            return None

        market = await self.redis.hgetall(latest_price_key(kline.symbol))
        market = {_text(k): _text(v) for k, v in (market or {}).items()}
        funding = _float_or(market.get("funding_rate"), 0.0)
        divergence = exchange_divergence(market, self.settings.divergence_max_age_s)
        vector = feature_vector(features, funding, divergence)
        signal = self._evaluate(features, vector)
        EVALUATIONS.labels(signal.model).inc()

        published = await self._publish(kline, features, signal, funding, divergence, market, entry_id)
        window.append(kline.bar)
        return published

    def _evaluate(self, features: MarketFeatures, vector: dict[str, float]) -> Signal:
        model = self.registry.current() if self.registry is not None else None
        self._note_model(model)
        if model is None:
            return fallback_signal(features)
        try:
            side, confidence = model.predict(vector)
        except Exception as exc:
            if model.sha256 not in self._predict_failures:
                self._predict_failures.add(model.sha256)
                log.error("model %s failed to predict (%s): using the fallback rule", model.label, exc)
            return fallback_signal(features)
        return model_signal(side, confidence, model.label, model.version, vector, features.regime)

    async def _publish(self, kline: Kline, features: MarketFeatures, signal: Signal, funding: float,
                       divergence: float, market: Mapping[str, str], entry_id: str | None) -> dict[str, str] | None:
        """The signal entry, and the intent when due, in one transaction (module docstring)."""
        s = self.settings
        intent_fields, why_not = None, ""
        if signal.side is not None and s.publish_intents and signal.confidence >= s.confidence_threshold:
            age_s = _candle_age_s(kline.close_ms, market)
            if s.max_candle_age_s and age_s is not None and age_s > s.max_candle_age_s:
                why_not = f"no intent: candle closed {age_s:.0f} s before the market clock (stale)"
                if kline.symbol not in self._stale_warned:  # once per symbol: a backfill has many
                    self._stale_warned.add(kline.symbol)
                    log.warning(
                        "%s: no intent for a candle that closed %.0f s before the market clock (max_candle_age_s "
                        "%.0f; the trade gate would reject it as stale). Replaying fast? Raise "
                        "QT_SIGNAL_MAX_CANDLE_AGE_S together with QT_RISK_MAX_INTENT_AGE_S.",
                        kline.symbol, age_s, s.max_candle_age_s)
            else:
                try:
                    intent = build_intent(
                        signal=signal, symbol=kline.symbol, features=features, candle_open_ms=kline.open_ms,
                        candle_close_ms=kline.close_ms, position_size_usd=s.position_size_usd,
                        leverage=s.leverage, funding_rate=funding, exchange_divergence=divergence)
                    intent_fields = to_stream_fields(intent)
                    parse_stream_fields(intent_fields)  # never write what the intake would dead-letter
                except (IntentError, LevelsError, ValueError) as exc:
                    log.error("no intent for %s at %s: %s", kline.symbol, kline.open_ms, exc)
                    intent_fields, why_not = None, f"no intent: {exc}"

        eval_key = SIGNAL_LAST_EVAL_KEY.format(symbol=kline.symbol)
        cooldown_key = SIGNAL_COOLDOWN_KEY.format(symbol=kline.symbol)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(eval_key, cooldown_key)
                    last_eval = await pipe.get(eval_key)
                    if last_eval is not None and int(_text(last_eval)) >= kline.open_ms:
                        await pipe.reset()
                        SKIPPED.labels("already_evaluated").inc()
                        return None
                    last_intent = await pipe.get(cooldown_key)
                    last_intent_ms = int(_text(last_intent)) if last_intent is not None else None
                    publish = intent_fields is not None and should_publish(
                        signal, s.confidence_threshold, last_intent_ms, kline.close_ms, s.cooldown_ms)
                    reason = signal.reason
                    if intent_fields is not None and not publish:
                        reason += f"; no intent: cooldown (last intent at {market_time(last_intent_ms).isoformat()})"
                    elif why_not:
                        reason += f"; {why_not}"
                    record = signal_fields(kline, features, signal, funding, divergence, reason,
                                           intent_fields["intent_id"] if publish else None)
                    pipe.multi()
                    pipe.set(eval_key, kline.open_ms)
                    if publish:
                        pipe.xadd(TRADE_INTENT_STREAM, intent_fields)
                        pipe.set(cooldown_key, kline.close_ms)
                    pipe.xadd(SIGNAL_STREAM, record, maxlen=s.signal_maxlen, approximate=True)
                    if entry_id is not None:
                        pipe.set(SIGNAL_CHECKPOINT_KEY, entry_id)
                    await pipe.execute()
                    break
                except WatchError:
                    continue  # another engine touched this symbol's markers: look again
        if publish:
            INTENTS.labels(kline.symbol, signal.side.value).inc()
            log.info("intent %s: %s %s confidence %.3f entry %s sl %s tp %s at %s by %s (%s)",
                     intent_fields["intent_id"], intent_fields["side"], kline.symbol, signal.confidence,
                     intent_fields["entry_price"], intent_fields.get("stop_loss"), intent_fields.get("take_profit"),
                     intent_fields["timestamp"], signal.model, signal.reason)
        return record

    # --- helpers ----------------------------------------------------------------------------

    def _wanted(self, kline: Kline) -> bool:
        if not kline.closed or (self.settings.interval and kline.interval and kline.interval != self.settings.interval):
            return False
        return not self._symbols or kline.symbol in self._symbols

    def _current_label(self) -> tuple[str, str]:
        model = self.registry.model if self.registry is not None else None
        return (model.label, model.version) if model is not None else (FALLBACK_MODEL, "")

    def _note_model(self, model: LoadedModel | None) -> None:
        label = (model.label, model.version) if model is not None else (FALLBACK_MODEL, "")
        if label != self._model_label:
            MODEL_INFO.clear()
            MODEL_INFO.labels(*label).set(1)
            self._model_label = label


def signal_fields(kline: Kline, features: MarketFeatures, signal: Signal, funding: float, divergence: float,
                  reason: str, intent_id: str | None) -> dict[str, str]:
    """One `ai.signal_generated` entry: flat strings, every number finite. `atr_value` is ATR as a
    fraction of price (as in the intent, the old producers' unit); `atr_price` is ATR in price
    units."""
    close = features.close
    fields = {
        "symbol": kline.symbol,
        "side": signal.side.value if signal.side is not None else "NONE",
        "confidence": _num(signal.confidence),
        "model": signal.model,
        "model_version": signal.model_version,
        "timestamp": market_time(kline.close_ms).isoformat(),
        "open_time": str(kline.open_ms),
        "close_time": str(kline.close_ms),
        "price": format(close, "f"),
        "exchange": kline.exchange,
        "returns_1": _num(features.returns_1),
        "atr_value": _num(features.atr_pct),
        "atr_price": _num(features.atr_pct * float(close)),
        "sigma": _num(features.sigma),
        "volatility_factor": _num(features.volatility_factor),
        "rsi": _num(features.rsi),
        "trend_strength": _num(features.trend_strength),
        "regime": features.regime,
        "funding_rate": _num(funding),
        "exchange_divergence": _num(divergence),
        "intent_published": "1" if intent_id else "0",
        "reason": reason,
        "source": INTENT_SOURCE,
    }
    if intent_id:
        fields["intent_id"] = intent_id
    return fields


def exchange_divergence(market: Mapping[str, str], max_age_s: float) -> float:
    """(secondary venue's price - primary price) / primary price, averaged over the secondary
    venues whose `price:{venue}` is present and whose `timestamp:{venue}` is within `max_age_s`
    of the primary's `timestamp`; 0.0 with one venue, stale or missing quotes."""
    primary = _float_or(market.get("price"), 0.0)
    primary_ts = _ms_or_none(market.get("timestamp"))
    if primary <= 0 or primary_ts is None:
        return 0.0
    primary_venue = market.get("exchange", "")
    moves = []
    for key, value in market.items():
        if not key.startswith("price:"):
            continue
        venue = key.split(":", 1)[1]
        if venue == primary_venue:
            continue
        price, ts = _float_or(value, 0.0), _ms_or_none(market.get(f"timestamp:{venue}"))
        if price > 0 and ts is not None and abs(primary_ts - ts) <= max_age_s * 1000:
            moves.append((price - primary) / primary)
    if not moves:
        return 0.0
    value = sum(moves) / len(moves)
    return value if math.isfinite(value) else 0.0


async def run_signal_engine(settings: SignalSettings | None = None, *, redis: aioredis.Redis | None = None,
                            stop: asyncio.Event | None = None) -> None:
    """Run the engine until `stop` is set (or SIGINT/SIGTERM when no `stop` is given). Connects to
    the stack's Redis (`QT_REDIS_URL` / the launcher's) when `redis` is None."""
    settings = settings or SignalSettings()
    own_redis = redis is None
    if redis is None:
        from common.settings import StackSettings

        redis = aioredis.from_url(StackSettings().effective_redis_url, decode_responses=True)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGINT, signals.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    try:
        await SignalEngine(redis, settings).run(stop)
    finally:
        if own_redis:
            await redis.aclose()


# --- small parsers ------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _int(value: str | None, name: str, problems: list[str]) -> int | None:
    if value is None or value == "":
        problems.append(f"missing {name}")
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        problems.append(f"{name} {value!r} is not a number")
        return None
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        problems.append(f"{name} {value!r} is not a time in milliseconds")
        return None
    return int(number)


def _decimal(value: str | None, name: str, problems: list[str]) -> Decimal:
    if value is None or value == "":
        problems.append(f"missing {name}")
        return Decimal(0)
    try:
        number = Decimal(value)
    except InvalidOperation:
        problems.append(f"{name} {value[:40]!r} is not a number")
        return Decimal(0)
    if not number.is_finite():
        problems.append(f"{name} is {value!r}, not a finite number")
        return Decimal(0)
    return number


def _float_or(value: Any, default: float) -> float:
    try:
        number = float(_text(value)) if value is not None else default
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def _ms_or_none(value: Any) -> int | None:
    """Epoch ms (a number below 1e11 is read as seconds); None when absent or not a number."""
    number = _float_or(value, math.nan) if value not in (None, "") else math.nan
    if not math.isfinite(number) or number <= 0:
        return None
    return int(number * 1000) if number < 1e11 else int(number)


def _candle_age_s(close_ms: int, market: Mapping[str, str]) -> float | None:
    now = _ms_or_none(market.get("timestamp"))
    return None if now is None else (now - close_ms) / 1000


def _num(x: float) -> str:
    x = float(x)
    return repr(x) if math.isfinite(x) else "0.0"


def _preview(fields: Mapping[Any, Any]) -> str:
    text = ", ".join(f"{_text(k)}={_text(v)[:24]}" for k, v in list(fields.items())[:12])
    return "{" + text[:300] + "}"


async def _pause(stop: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), RETRY_PAUSE_S)
