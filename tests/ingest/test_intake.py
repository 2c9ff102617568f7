"""The intake on the real stack: Redis stream entries written as the old producers wrote them
become TradeWorkflows (one per intent, whatever the repeats), invalid ones go to the DLQ with
their reason and never block the stream, and pending entries of a vanished consumer are taken
over."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from temporalio.client import WorkflowExecutionStatus

from common.redis_keys import TRADE_INTENT_STREAM
from local_stack.intents import intent_fields
from tests.fixtures.trading import running_workers
from signals_ingest.intake_status import read_intake_status
from tests.ingest.conftest import intake_settings, wait_until
from trading.intent import parse_stream_fields, workflow_id_for
from common import search_attributes as sa
from workflows.trade_state import TradeResult, TradeState

# The seeds' samples, field for field (000_…: NEARUSDT from the AI engine with its metadata;
# 004_…: the last trade.intent entry, FHEUSDT SELL from the fallback trend follower, which the
# old bot wrote as one JSON object). Only the timestamp is replaced by "now" on the market
# clock, as the producer would have stamped it; verbatim seeds are months old → stale.
SEED_NEAR = {
    "symbol": "NEARUSDT", "side": "BUY", "confidence": "0.72", "entry_price": "1.465",
    "stop_loss": "1.4357", "take_profit": "1.4943", "position_size_usd": "200.0", "leverage": "1",
    "timestamp": "2025-12-24T04:32:14.062679", "model": "ensemble", "reason": "AI signal",
    "atr_value": "0.02", "volatility_factor": "0.5513439007580968", "exchange_divergence": "0.0",
    "funding_rate": "0.0", "regime": "unknown",
}
SEED_FHE = {
    "symbol": "FHEUSDT", "side": "SELL", "confidence": 0.56116, "entry_price": 0.12433,
    "stop_loss": 0.1268166, "take_profit": 0.11935679999999999, "position_size_usd": 200.0,
    "leverage": 10.0, "timestamp": "2026-02-03T22:45:36.933921", "model": "fallback-trend-following",
}


def market_iso(paper) -> str:
    return datetime.fromtimestamp(paper.clock()["market_ms"] / 1000, UTC).replace(tzinfo=None).isoformat()


async def search_attributes(client, workflow_id: str) -> dict[str, object]:
    desc = await client.get_workflow_handle(workflow_id).describe()
    keys = (sa.SYMBOL, sa.SIDE, sa.MODEL_VERSION, sa.INTENT_SOURCE, sa.CONFIDENCE, sa.LEVERAGE, sa.TRADE_STATUS)
    return {k.name: desc.typed_search_attributes.get(k) for k in keys}


async def test_seed_intents_written_by_xadd_become_trades_with_their_search_attributes(
        start_intake, temporal_client, paper, exchange, redis_client, trade_policy, risk_settings):
    paper.set_price("NEARUSDT", "1.465")
    paper.set_price("FHEUSDT", "0.12433")
    now = market_iso(paper)
    near = {**SEED_NEAR, "timestamp": now}
    fhe = {**SEED_FHE, "timestamp": now}
    rig = await start_intake(task_queue="trade-workflows")
    async with running_workers(temporal_client, exchange, redis_client, trade_policy, risk_settings):
        await rig.xadd(near)  # flat string fields, as simple_bot's XADD
        await rig.xadd({"payload": json.dumps(fhe)})  # one JSON field
        await rig.wait_drained()
        ids = [workflow_id_for(parse_stream_fields(near)), workflow_id_for(parse_stream_fields({"payload": json.dumps(fhe)}))]
        handles = [temporal_client.get_workflow_handle(i, result_type=TradeResult) for i in ids]
        for handle in handles:  # both really trade: gates pass, the entry fills, a stop rests
            await wait_until(lambda h=handle: h.query("state", result_type=TradeState),
                             lambda s: s.status.value == "OPEN", 30, f"{handle.id} did not open")
        assert await search_attributes(temporal_client, ids[0]) == {
            "Symbol": "NEARUSDT", "Side": "BUY", "ModelVersion": "ensemble", "IntentSource": "unknown",
            "Confidence": 0.72, "Leverage": 1.0, "TradeStatus": "OPEN"}
        assert await search_attributes(temporal_client, ids[1]) == {
            "Symbol": "FHEUSDT", "Side": "SELL", "ModelVersion": "fallback-trend-following",
            "IntentSource": "unknown", "Confidence": 0.56116, "Leverage": 10.0, "TradeStatus": "OPEN"}
        for handle in handles:
            result = await handle.execute_update("close", {}, result_type=TradeResult)
            assert result.exit_reason == "MANUAL"
    for symbol, handle in zip(("NEARUSDT", "FHEUSDT"), handles):
        entries = [e for e in paper.audit(symbol=symbol) if e.get("client_id", "").endswith("-entry")]
        assert len(entries) == 1 and entries[0]["client_id"].startswith(f"{handle.id}.")  # run-tagged
    assert not (await rig.dlq())


async def test_seed_intent_months_old_is_started_and_rejected_as_stale(
        start_intake, temporal_client, paper, exchange, redis_client, trade_policy, risk_settings):
    # The seed as the stranded backlog held it: three months old on the market clock. (The
    # session's market clock is not moved: later tests share the paper exchange's replay.)
    market_ms = paper.clock()["market_ms"]
    old = {**SEED_NEAR, "timestamp": datetime.fromtimestamp(market_ms / 1000 - 90 * 86_400, UTC).isoformat()}
    rig = await start_intake(task_queue="trade-workflows")
    async with running_workers(temporal_client, exchange, redis_client, trade_policy, risk_settings):
        await rig.xadd(old)
        await rig.wait_drained()
        handle = temporal_client.get_workflow_handle(workflow_id_for(parse_stream_fields(old)),
                                                     result_type=TradeResult)
        result = await handle.result()
    assert result.status.value == "REJECTED" and "stale" in result.reason
    assert not [e for e in paper.audit(symbol="NEARUSDT") if e["path"].endswith("/order")]


async def test_the_same_intent_twice_is_one_workflow(start_intake, temporal_client, paper):
    rig = await start_intake()
    fields = intent_fields("BTCUSDT", "BUY", 63000, paper.clock()["market_ms"])
    no_id = {k: v for k, v in fields.items() if k != "intent_id"}
    as_json = {"payload": json.dumps(no_id)}
    for entry in (fields, fields, no_id, no_id, as_json):  # re-published, with and without id
        await rig.xadd(entry)
    await rig.wait_drained()
    assert rig.intake.counters.started == 2  # trade-{intent_id} and trade-{fingerprint}
    assert rig.intake.counters.duplicates == 3
    with_id = workflow_id_for(parse_stream_fields(fields))
    fingerprint = workflow_id_for(parse_stream_fields(no_id))
    assert fingerprint == workflow_id_for(parse_stream_fields(as_json))  # same intent, other encoding
    query = f"WorkflowId = '{with_id}' OR WorkflowId = '{fingerprint}'"
    runs = [w async for w in temporal_client.list_workflows(query)]
    assert sorted(w.id for w in runs) == sorted([with_id, fingerprint])  # one run each
    assert all(w.status == WorkflowExecutionStatus.RUNNING for w in runs)
    assert not await rig.dlq()


def near(**change) -> dict:
    fields = dict(SEED_NEAR, timestamp=datetime.now(UTC).isoformat())
    fields.update(change)
    return {k: v for k, v in fields.items() if v is not None}


# (what the producer wrote, words the DLQ reason must contain)
MALFORMED = [
    ("bad JSON", {"payload": '{"symbol": "NEARUSDT", "side": '}, "is not valid JSON"),
    ("JSON that is not an object", {"data": "[1, 2, 3]"}, "must hold a JSON object"),
    ("missing symbol", near(symbol=None), "symbol: missing required field"),
    ("NaN price", near(entry_price="NaN"), "entry_price: must be a finite number"),
    ("infinite price", near(entry_price="inf"), "entry_price: must be a finite number"),
    ("zero price", near(entry_price="0"), "entry_price: must be greater than 0"),
    ("stop on the wrong side", near(stop_loss="1.5"), "stop_loss 1.5 must be below entry_price 1.465"),
    ("confidence 7", near(confidence="7"), "confidence: must be between 0 and 1"),
    ("leverage 0", near(leverage="0"), "leverage: must be between 1 and 125"),
    ("negative size", near(position_size_usd="-200"), "position_size_usd: must be greater than 0"),
    ("unknown symbol", near(symbol="DOGEUSDT"), "unknown symbol 'DOGEUSDT': not listed on the exchange"),
    ("huge field", near(reason="x" * 100_000), "field 'reason' is too large (100000 bytes"),
    ("empty entry", {"": ""}, "missing required field"),
    ("empty JSON object", {"json": "{}"}, "symbol: missing required field"),
    ("side HOLD", near(side="HOLD"), "side: must be BUY or SELL"),
    ("text as a number", near(position_size_usd="two hundred"), "position_size_usd: must be a number"),
    ("garbage timestamp", near(timestamp="yesterday"), "timestamp: not a date/time"),
    ("invalid UTF-8", {**near(), "reason": b"\xff\xfe"}, "is not valid UTF-8"),
    ("two JSON fields", {"payload": "{}", "data": "{}"}, "more than one JSON field"),
    ("model name too long", near(model="m" * 500), "model: is too long"),
    ("size of 1e12 USD", near(position_size_usd="1e12"), "position_size_usd: is implausibly large"),
]


async def test_malformed_entries_go_to_the_dlq_with_a_reason_and_never_block_the_stream(start_intake, paper):
    rig = await start_intake()
    ids = {}
    for label, fields, _ in MALFORMED:
        ids[label] = await rig.xadd(fields)
    good = intent_fields("ETHUSDT", "SELL", 3400, paper.clock()["market_ms"])
    await rig.xadd(good)  # behind every bad entry: still started
    await rig.wait_drained()
    assert rig.intake.counters.started == 1
    letters = {letter["stream_id"]: letter for letter in await rig.dlq()}
    assert len(letters) == len(MALFORMED) >= 15
    for label, fields, reason in MALFORMED:
        letter = letters[ids[label]]
        assert reason in letter["error"], (label, letter["error"])
        assert json.loads(letter["problems"]) and letter["stream"] == TRADE_INTENT_STREAM
        original = json.loads(letter["original_fields"])
        assert set(original) == {k.decode() if isinstance(k, bytes) else k for k in fields}, label
    assert json.loads(letters[ids["huge field"]]["original_fields"])["reason"].endswith(
        "[cut: 100000 characters in the original]")
    assert letters[ids["huge field"]]["original_truncated"] == "1"
    assert json.loads(letters[ids["NaN price"]]["original_fields"])["entry_price"] == "NaN"
    assert json.loads(letters[ids["invalid UTF-8"]]["original_fields"])["reason"] == "\\xff\\xfe"
    wid = workflow_id_for(parse_stream_fields(good))
    assert (await rig.client.get_workflow_handle(wid).describe()).status == WorkflowExecutionStatus.RUNNING


async def _ghost_holds(raw_redis, entries: list[dict], consumer: str = "ghost") -> list[bytes]:
    """Before any intake runs: the group exists and `consumer` has read `entries` (never acked)."""
    settings = intake_settings()
    await raw_redis.xgroup_create(TRADE_INTENT_STREAM, settings.group, id="0", mkstream=True)
    for fields in entries:
        await raw_redis.xadd(TRADE_INTENT_STREAM, fields)
    got = await raw_redis.xreadgroup(settings.group, consumer, {TRADE_INTENT_STREAM: ">"})
    return [entry_id for entry_id, _ in got[0][1]]


async def test_pending_entries_of_a_dead_consumer_are_reclaimed(start_intake, raw_redis, paper):
    """A consumer read entries and vanished (no ack): a live intake takes them over by idle time."""
    market_ms = paper.clock()["market_ms"]
    held = await _ghost_holds(raw_redis, [intent_fields("XRPUSDT", "BUY", 1, market_ms) for _ in range(3)])
    assert len(held) == 3
    rig = await start_intake(claim_idle_ms=500)
    await rig.xadd(intent_fields("XRPUSDT", "BUY", 1, market_ms))  # new entries flow meanwhile
    status = await rig.wait_drained()
    assert rig.intake.counters.started == 4 and rig.intake.counters.reclaimed == 3
    assert [c.pending for c in status.consumers if c.name == "ghost"] == [0]


async def test_poison_entry_delivered_too_often_is_dead_lettered(start_intake, raw_redis, paper):
    [entry_id] = await _ghost_holds(raw_redis, [intent_fields("XRPUSDT", "BUY", 1, paper.clock()["market_ms"])],
                                    consumer="crashy")
    settings = intake_settings()
    for _ in range(3):  # three more deliveries, each of which (say) crashed its consumer
        await raw_redis.xclaim(TRADE_INTENT_STREAM, settings.group, "crashy", 0, [entry_id])
    rig = await start_intake(claim_idle_ms=300, max_deliveries=3)
    await rig.wait_drained()
    [letter] = await rig.dlq()
    assert letter["stream_id"] == entry_id.decode()
    assert "delivered 5 times without being started (limit 3)" in letter["error"]
    assert rig.intake.counters.started == 0


async def test_entries_trimmed_while_pending_are_reported_not_started(start_intake, raw_redis, paper):
    [entry_id] = await _ghost_holds(raw_redis, [intent_fields("XRPUSDT", "BUY", 1, paper.clock()["market_ms"])])
    await raw_redis.xdel(TRADE_INTENT_STREAM, entry_id)  # a producer's MAXLEN trimmed it
    rig = await start_intake(claim_idle_ms=300)
    await wait_until(rig.status, lambda s: s.pending == 0 and s.group_exists, 10, "the trimmed entry was not cleared")
    assert rig.intake.counters.trimmed_before_start == 1
    assert rig.intake.counters.started == 0 and not await rig.dlq()


async def test_status_shows_lag_pending_oldest_age_and_dlq(start_intake, raw_redis, paper):
    market_ms = paper.clock()["market_ms"]
    for _ in range(5):
        await raw_redis.xadd(TRADE_INTENT_STREAM, intent_fields("BTCUSDT", "BUY", 63000, market_ms))
    await raw_redis.xadd(TRADE_INTENT_STREAM, {"payload": "not json"})
    before = await read_intake_status(raw_redis, intake_settings())
    assert not before.group_exists and before.lag == 6 and before.stream_length == 6
    rig = await start_intake()
    after = await rig.wait_drained()
    assert after.lag == 0 and after.pending == 0 and after.dlq_length == 1
    assert after.oldest_pending_age_s is None
    stats = await wait_until(rig.status, lambda s: s.total("started") == 5, 5, "stats")
    assert stats.total("dead_lettered") == 1 and len([c for c in stats.consumers if c.alive]) == 1
    assert math.isfinite(stats.total("starts_per_s"))
