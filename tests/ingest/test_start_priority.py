"""A stale backlog must not make a fresh intent wait: the intake starts intents that are already
stale on arrival at Temporal's lowest task-queue priority (the gates still decide), reading the
market's time from the feed's latest price, else the wall clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

from signals_ingest.start_priority import BACKLOG_PRIORITY, MarketClock
from common.redis_keys import latest_price_key
from local_stack.intents import intent_fields
from trading.intent import parse_stream_fields, workflow_id_for

HOUR_MS = 3_600_000
HISTORIES = Path(__file__).resolve().parents[1] / "workflows" / "histories"


async def feed_price(redis, symbol: str, market_ms: int, received_ms: int | None = None) -> None:
    """What the market feed writes for the symbol (exchange time + wall time of arrival)."""
    await redis.hset(latest_price_key(symbol), mapping={
        "price": "1", "timestamp": str(market_ms), "received_ms": str(received_ms or int(time.time() * 1000)),
        "exchange": "paper"})


async def test_market_clock_follows_the_feed_and_falls_back_to_the_wall_clock(raw_redis):
    clock = MarketClock(raw_redis, max_feed_age_s=60, cache_s=0)
    wall = int(time.time() * 1000)
    assert abs(await clock.now_ms("BTCUSDT") - wall) < 2_000  # no feed price: wall clock

    market = wall - 400 * 86_400_000  # a replay of last year's candles
    await feed_price(raw_redis, "BTCUSDT", market)
    assert abs(await clock.now_ms("BTCUSDT") - market) < 2_000

    await feed_price(raw_redis, "BTCUSDT", market, received_ms=wall - 120_000)  # the feed stopped
    assert abs(await clock.now_ms("BTCUSDT") - wall) < 2_000

    await raw_redis.hset(latest_price_key("BTCUSDT"), "timestamp", "garbage")
    assert abs(await clock.now_ms("BTCUSDT") - wall) < 2_000


async def test_intents_stale_on_arrival_start_at_the_lowest_priority_fresh_ones_at_the_default(
        start_intake, raw_redis, temporal_client, paper):
    # The feed's clock is the market's (the paper replay's), not the wall clock.
    market_ms = paper.clock()["market_ms"]
    for symbol in ("BTCUSDT", "ETHUSDT"):
        await feed_price(raw_redis, symbol, market_ms)
    rig = await start_intake()  # its own task queue: nothing runs these workflows
    fresh = intent_fields("BTCUSDT", "BUY", 63000, market_ms - 30_000)
    borderline = intent_fields("ETHUSDT", "SELL", 3400, market_ms - 200_000)  # stale for the gate (120 s), not yet here
    backlog = [intent_fields("ETHUSDT", "BUY", 3400, market_ms - (2 + i) * HOUR_MS) for i in range(3)]
    for fields in (*backlog, fresh, borderline):
        await rig.xadd(fields)
    await rig.wait_drained()

    async def priority_key(fields) -> int:
        desc = await temporal_client.get_workflow_handle(workflow_id_for(parse_stream_fields(fields))).describe()
        return desc.raw_description.workflow_execution_info.priority.priority_key

    assert [await priority_key(f) for f in backlog] == [BACKLOG_PRIORITY.priority_key] * 3
    assert await priority_key(fresh) == 0  # unset = Temporal's default (3), like any live intent
    assert await priority_key(borderline) == 0
    assert rig.intake.counters.started == 5 and rig.intake.counters.deprioritized == 3
    await rig.intake.publish_stats()
    assert (await rig.status()).total("deprioritized") == 3


async def test_deprioritizing_can_be_switched_off(start_intake, raw_redis, temporal_client, paper):
    market_ms = paper.clock()["market_ms"]
    await feed_price(raw_redis, "XRPUSDT", market_ms)
    rig = await start_intake(deprioritize_after_s=0)
    old = intent_fields("XRPUSDT", "BUY", "2.0", market_ms - 5 * HOUR_MS)
    await rig.xadd(old)
    await rig.wait_drained()
    desc = await temporal_client.get_workflow_handle(workflow_id_for(parse_stream_fields(old))).describe()
    assert desc.raw_description.workflow_execution_info.priority.priority_key == 0
    assert rig.intake.counters.deprioritized == 0


async def test_an_intent_the_feed_proves_stale_is_rejected_in_one_workflow_task_with_no_activity(
        start_intake, raw_redis, temporal_client, paper, exchange, redis_client, trade_policy, risk_settings):
    from temporalio.api.enums.v1 import EventType

    from common.redis_keys import GATE_REJECTIONS_KEY
    from tests.fixtures.trading import running_workers
    from workflows.trade_state import TradeResult

    market_ms = paper.clock()["market_ms"]
    for symbol in ("ETHUSDT", "BTCUSDT"):
        await feed_price(raw_redis, symbol, market_ms)
    stale = intent_fields("ETHUSDT", "BUY", 3400, market_ms - 600_000)  # 10 min old at the feed's clock
    # 60 s old: not provably stale, so the gates decide (here: on its low confidence), as before.
    fresh = intent_fields("BTCUSDT", "BUY", 63000, market_ms - 60_000, confidence="0.1")
    rig = await start_intake(task_queue="trade-workflows")
    async with running_workers(temporal_client, exchange, redis_client, trade_policy, risk_settings):
        for fields in (stale, fresh):
            await rig.xadd(fields)
        await rig.wait_drained()
        results, kinds = {}, {}
        for name, fields in (("stale", stale), ("fresh", fresh)):
            handle = temporal_client.get_workflow_handle(workflow_id_for(parse_stream_fields(fields)),
                                                         result_type=TradeResult)
            results[name] = await handle.result()
            history = await handle.fetch_history()
            kinds[name] = [EventType.Name(e.event_type) for e in history.events]
            if name == "stale" and os.environ.get("QT_RECORD_HISTORIES") == "1":  # a replay fixture
                (HISTORIES / "rejected_stale_at_intake.json").write_text(history.to_json())
    assert results["stale"].status.value == "REJECTED"
    assert results["stale"].reason.startswith("stale_intent: intent is stale: 600 s old at market time"), results
    assert "seen by the intake" in results["stale"].reason
    assert not {"EVENT_TYPE_ACTIVITY_TASK_SCHEDULED", "EVENT_TYPE_MARKER_RECORDED"} & set(kinds["stale"]), kinds["stale"]
    assert kinds["stale"].count("EVENT_TYPE_WORKFLOW_TASK_COMPLETED") == 1 and len(kinds["stale"]) <= 8, kinds["stale"]
    assert results["fresh"].status.value == "REJECTED" and results["fresh"].reason.startswith("confidence")
    assert "EVENT_TYPE_MARKER_RECORDED" in kinds["fresh"]  # the gates ran (a local activity)
    assert int(await raw_redis.hget(GATE_REJECTIONS_KEY, "stale_intent")) == 1  # counted like the gate does
    assert rig.intake.counters.stale_at_intake == 1
