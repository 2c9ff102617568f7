"""Feedback activities against real Redis, through Temporal's ActivityEnvironment.

What matters: the old system's consumers see the names and spellings they know (position hash,
execution.result, trade.closed), another workflow's hash is never touched, a retried activity
publishes nothing twice, and the learning step reads back exactly what the trade sent.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from temporalio.testing import ActivityEnvironment

from activities.feedback import (ExecutionReport, FeedbackActivities, PositionSnapshot, RecordCloseRequest,
                                 RecordPositionRequest, TradeClosedEvent, TradeOutcome, position_key, read_outcomes,
                                 read_position)
from common.redis_keys import EXECUTION_RESULT_STREAM, OUTCOME_STREAM, TRADE_CLOSED_STREAM
from trading.models import ExitReason, Side

pytestmark = pytest.mark.integration
NEAR = "NEARUSDT"
OPENED_MS = 1_770_153_103_456
WF = "trade-abc"


async def run(fn, arg):
    return await ActivityEnvironment().run(fn, arg)


def snapshot(workflow_id: str = WF, version: int = 1, side: str = "BUY", **changes) -> PositionSnapshot:
    fields = dict(
        workflow_id=workflow_id, symbol=NEAR, side=side, quantity=Decimal("13.8"),
        entry_price=Decimal("1.4520"), leverage=10, stop_loss=Decimal("1.4230"),
        take_profit=Decimal("1.4810"), take_profits=[Decimal("1.4810"), Decimal("1.5100")],
        status="OPEN", opened_at_ms=OPENED_MS, updated_at_ms=OPENED_MS + version, version=version)
    fields.update(changes)
    return PositionSnapshot.model_validate(fields)


def fill(trade_id: str, step: str = "entry", workflow_id: str = WF, **changes) -> ExecutionReport:
    fields = dict(
        workflow_id=workflow_id, intent_id="abc", symbol=NEAR, step=step,
        client_order_id=f"{workflow_id}-{step}", order_id=f"o-{trade_id}", trade_id=trade_id,
        side="BUY", quantity=Decimal("13.8"), price=Decimal("1.4520"), fee=Decimal("0.00801504"),
        reduce_only=False, leverage=10, time_ms=OPENED_MS)
    fields.update(changes)
    return ExecutionReport.model_validate(fields)


def closed_event(workflow_id: str = WF, closed_at_ms: int = OPENED_MS + 3_600_000,
                 **changes) -> TradeClosedEvent:
    fields = dict(
        workflow_id=workflow_id, intent_id="abc", symbol=NEAR, side="BUY",
        quantity=Decimal("13.8"), entry_price=Decimal("1.4520"), exit_price=Decimal("1.4810"),
        exit_reason="TP", realized_pnl=Decimal("0.38420000"), gross_pnl=Decimal("0.4002"),
        fees=Decimal("0.0160"), funding=Decimal("0.00000000"), r_multiple=Decimal("1.00"),
        holding_s=3600.0, leverage=10, confidence=0.82, model="lgbm-v3",
        opened_at_ms=OPENED_MS, closed_at_ms=closed_at_ms)
    fields.update(changes)
    return TradeClosedEvent.model_validate(fields)


def close_request(workflow_id: str = WF, closed_at_ms: int = OPENED_MS + 3_600_000,
                  executions: list[ExecutionReport] | None = None, label: int = 1,
                  **changes) -> RecordCloseRequest:
    event = closed_event(workflow_id, closed_at_ms, **changes)
    fills = executions if executions is not None else [
        fill("t-close", step="close", workflow_id=workflow_id, side="SELL", reduce_only=True,
             price=Decimal("1.4810"), time_ms=closed_at_ms)]
    outcome = TradeOutcome(
        workflow_id=workflow_id, symbol=NEAR, side=Side.BUY, model_version="lgbm-v3",
        intent={"symbol": NEAR, "side": "BUY", "confidence": "0.82", "atr_value": "0.0123"},
        features_at_entry={"rsi": 61.5, "regime": "trend", "atr": "0.012300"},
        levels={"planned": {"sl": "1.4230", "tp": ["1.4810", "1.5100"]}, "final": {"sl": "1.4520"}},
        fills=[fill("t-entry", workflow_id=workflow_id), *fills], closed=event, label=label)
    return RecordCloseRequest(closed=event, executions=fills, outcome=outcome)


async def entries(redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(stream)]


# -- position hash ---------------------------------------------------------------------------------

async def test_hash_has_old_field_names_and_spellings(redis_client):
    acts = FeedbackActivities(redis_client)
    result = await run(acts.record_position, RecordPositionRequest(position=snapshot()))
    assert result.published == 0  # no fills in this request

    stored = await redis_client.hgetall(f"quantum:position:{NEAR}")
    assert stored == await read_position(redis_client, NEAR)
    # the old hash's fields, as its dashboards read them
    assert stored["symbol"] == NEAR
    assert stored["side"] == "LONG"
    assert stored["quantity"] == "13.8"
    assert stored["leverage"] == "10"
    assert stored["stop_loss"] == "1.4230"
    assert stored["take_profit"] == "1.4810"
    assert stored["plan_id"] == WF
    assert stored["created_at"] == "1770153103"  # epoch seconds, like the old 1770153103
    # the new ones
    assert stored["workflow_id"] == WF
    assert stored["entry_price"] == "1.4520"
    assert json.loads(stored["take_profits"]) == ["1.4810", "1.5100"]
    assert stored["status"] == "OPEN"
    assert stored["opened_at_ms"] == str(OPENED_MS)
    assert stored["updated_at_ms"] == str(OPENED_MS + 1)
    assert stored["version"] == "1"


async def test_short_without_pending_take_profit(redis_client):
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position, RecordPositionRequest(
        position=snapshot(side="SELL", stop_loss=Decimal("1.4810"), take_profit=None,
                          take_profits=[])))
    stored = await read_position(redis_client, NEAR)
    assert stored["side"] == "SHORT"
    assert stored["take_profit"] == ""
    assert json.loads(stored["take_profits"]) == []
    assert await read_position(redis_client, "BTCUSDT") is None


async def test_older_version_never_overwrites_newer(redis_client):
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position, RecordPositionRequest(
        position=snapshot(version=2, stop_loss=Decimal("1.4520"), take_profit=Decimal("1.5100"),
                          take_profits=[Decimal("1.5100")], quantity=Decimal("6.9"))))
    # a late retry of the first write arrives after the break-even move
    await run(acts.record_position, RecordPositionRequest(position=snapshot(version=1)))
    stored = await read_position(redis_client, NEAR)
    assert (stored["version"], stored["stop_loss"], stored["quantity"]) == ("2", "1.4520", "6.9")
    # the same version again (a retry) changes nothing either
    await run(acts.record_position, RecordPositionRequest(
        position=snapshot(version=2, stop_loss=Decimal("9"))))
    assert (await read_position(redis_client, NEAR))["stop_loss"] == "1.4520"
    # a newer one is written
    await run(acts.record_position, RecordPositionRequest(
        position=snapshot(version=3, stop_loss=Decimal("1.4700"), take_profit=None, take_profits=[],
                          status="CLOSING")))
    stored = await read_position(redis_client, NEAR)
    assert (stored["version"], stored["stop_loss"], stored["take_profit"], stored["status"]) == (
        "3", "1.4700", "", "CLOSING")


async def test_another_workflows_hash_is_untouched(redis_client):
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position, RecordPositionRequest(position=snapshot("trade-other", 1)))
    before = await read_position(redis_client, NEAR)

    result = await run(acts.record_position,
                       RecordPositionRequest(position=snapshot(WF, version=99, quantity=Decimal("1"))))
    assert result.published == 0
    assert await read_position(redis_client, NEAR) == before
    assert before["workflow_id"] == "trade-other"


async def test_old_systems_hash_is_untouched(redis_client):
    old = {"symbol": NEAR, "side": "SHORT", "quantity": "13.84178835905599", "leverage": "10.0",
           "stop_loss": "14.73798", "take_profit": "13.871039999999999",
           "plan_id": "f374d81ad7d635f1", "created_at": "1770153103"}
    await redis_client.hset(position_key(NEAR), mapping=old)
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position, RecordPositionRequest(position=snapshot()))
    await run(acts.record_close, close_request())
    assert await read_position(redis_client, NEAR) == old


# -- execution.result --------------------------------------------------------------------------------

async def test_executions_published_once_on_retry(redis_client):
    acts = FeedbackActivities(redis_client)
    request = RecordPositionRequest(
        position=snapshot(), executions=[fill("t1"), fill("t2", quantity=Decimal("0.2"))])
    assert (await run(acts.record_position, request)).published == 2
    assert (await run(acts.record_position, request)).published == 0  # the retry
    assert await redis_client.xlen(EXECUTION_RESULT_STREAM) == 2

    first = (await entries(redis_client, EXECUTION_RESULT_STREAM))[0]
    assert first == {
        "workflow_id": WF, "intent_id": "abc", "symbol": NEAR, "step": "entry",
        "client_order_id": f"{WF}-entry", "order_id": "o-t1", "trade_id": "t1", "side": "BUY",
        "qty": "13.8", "quantity": "13.8", "price": "1.4520", "fee": "0.00801504",
        "reduce_only": "False", "leverage": "10", "status": "FILLED",
        "timestamp": "1770153103.456", "time_ms": str(OPENED_MS),
    }

    # the next change carries one fill already published and one new
    later = RecordPositionRequest(
        position=snapshot(version=2),
        executions=[fill("t2"), fill("t3", step="tp1", side="SELL", reduce_only=True)])
    assert (await run(acts.record_position, later)).published == 1
    stream = await entries(redis_client, EXECUTION_RESULT_STREAM)
    assert [e["trade_id"] for e in stream] == ["t1", "t2", "t3"]
    assert (stream[2]["step"], stream[2]["side"], stream[2]["reduce_only"]) == ("tp1", "SELL", "True")


async def test_fills_published_even_when_hash_is_foreign(redis_client):
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position, RecordPositionRequest(position=snapshot("trade-other")))
    result = await run(acts.record_position,
                       RecordPositionRequest(position=snapshot(), executions=[fill("t1")]))
    assert result.published == 1
    assert (await read_position(redis_client, NEAR))["workflow_id"] == "trade-other"


# -- close -------------------------------------------------------------------------------------------

async def test_close_publishes_everything_once(redis_client):
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position,
              RecordPositionRequest(position=snapshot(), executions=[fill("t-entry")]))
    request = close_request()

    # 1 close fill + trade.closed + outcome; the retry writes nothing
    assert (await run(acts.record_close, request)).published == 3
    assert (await run(acts.record_close, request)).published == 0
    assert await redis_client.xlen(EXECUTION_RESULT_STREAM) == 2
    assert await redis_client.xlen(TRADE_CLOSED_STREAM) == 1
    assert await redis_client.xlen(OUTCOME_STREAM) == 1
    assert await read_position(redis_client, NEAR) is None

    [closed] = await entries(redis_client, TRADE_CLOSED_STREAM)
    assert closed == {
        "workflow_id": WF, "intent_id": "abc", "symbol": NEAR, "side": "BUY",
        "quantity": "13.8", "entry_price": "1.4520", "exit_price": "1.4810", "exit_reason": "TP",
        "realized_pnl": "0.38420000", "pnl": "0.38420000", "gross_pnl": "0.4002",
        "fees": "0.0160", "funding": "0.00000000", "r_multiple": "1.00", "holding_s": "3600.0",
        "leverage": "10", "confidence": "0.82", "model": "lgbm-v3",
        "opened_at_ms": str(OPENED_MS), "closed_at_ms": str(OPENED_MS + 3_600_000),
        "timestamp": "1770156703.456",
    }
    [row] = await entries(redis_client, OUTCOME_STREAM)
    assert (row["workflow_id"], row["symbol"], row["label"], row["model_version"],
            row["closed_at_ms"]) == (WF, NEAR, "1", "lgbm-v3", str(OPENED_MS + 3_600_000))
    assert TradeOutcome.model_validate_json(row["json"]) == request.outcome

    # a late retry of an earlier record_position must not bring the hash back
    late = RecordPositionRequest(position=snapshot(version=5), executions=[fill("t-entry")])
    assert (await run(acts.record_position, late)).published == 0
    assert await read_position(redis_client, NEAR) is None


async def test_close_with_missing_values_and_short_side(redis_client):
    acts = FeedbackActivities(redis_client)
    request = close_request(side="SELL", exit_price=None, r_multiple=None, holding_s=None,
                            model=None, intent_id=None, exit_reason=ExitReason.EXTERNAL,
                            realized_pnl=Decimal("-1.5"), executions=[], label=0)
    assert (await run(acts.record_close, request)).published == 2
    [closed] = await entries(redis_client, TRADE_CLOSED_STREAM)
    assert (closed["side"], closed["exit_price"], closed["r_multiple"], closed["model"],
            closed["intent_id"], closed["exit_reason"], closed["pnl"]) == (
        "SELL", "", "", "", "", "EXTERNAL", "-1.5")
    assert await redis_client.xlen(EXECUTION_RESULT_STREAM) == 0


async def test_close_deletes_only_own_hash(redis_client):
    acts = FeedbackActivities(redis_client)
    await run(acts.record_position, RecordPositionRequest(position=snapshot("trade-other")))
    # this workflow never owned the symbol's hash: closing it must leave the other one alone
    assert (await run(acts.record_close, close_request(WF))).published == 3
    assert (await read_position(redis_client, NEAR))["workflow_id"] == "trade-other"
    # the owner's close removes it
    await run(acts.record_close, close_request("trade-other"))
    assert await read_position(redis_client, NEAR) is None
    assert await redis_client.xlen(TRADE_CLOSED_STREAM) == 2


# -- learning dataset --------------------------------------------------------------------------------

async def test_outcome_read_back_exactly(redis_client):
    acts = FeedbackActivities(redis_client)
    request = close_request()
    await run(acts.record_close, request)
    await run(acts.record_close, request)  # retry: still one outcome

    [outcome] = await read_outcomes(redis_client)
    assert outcome == request.outcome
    # Decimal exactness, trailing zeros included (equality alone would accept 0.3842)
    assert str(outcome.closed.realized_pnl) == "0.38420000"
    assert outcome.closed.funding.as_tuple() == Decimal("0.00000000").as_tuple()
    assert [str(f.fee) for f in outcome.fills] == ["0.00801504", "0.00801504"]
    assert outcome.fills[1].side is Side.SELL and outcome.fills[1].reduce_only is True
    assert outcome.intent["atr_value"] == "0.0123"
    assert outcome.features_at_entry == {"rsi": 61.5, "regime": "trend", "atr": "0.012300"}


async def test_read_outcomes_since_and_limit_in_market_time_order(redis_client):
    acts = FeedbackActivities(redis_client)
    base = OPENED_MS + 3_600_000
    # written out of market-time order: trade-c closed before trade-b but was recorded later
    for wf, offset in (("trade-a", 0), ("trade-b", 20_000), ("trade-c", 10_000), ("trade-d", 30_000)):
        await run(acts.record_close, close_request(wf, closed_at_ms=base + offset))

    assert [o.workflow_id for o in await read_outcomes(redis_client)] == [
        "trade-a", "trade-c", "trade-b", "trade-d"]
    since = await read_outcomes(redis_client, since_ms=base + 10_000)
    assert [o.workflow_id for o in since] == ["trade-c", "trade-b", "trade-d"]
    assert all(o.closed.closed_at_ms >= base + 10_000 for o in since)
    assert [o.workflow_id for o in await read_outcomes(redis_client, since_ms=base + 10_001, limit=1)] == [
        "trade-b"]
    assert await read_outcomes(redis_client, since_ms=base + 30_001) == []
    # paging through the stream gives the same answer
    assert [o.workflow_id for o in await read_outcomes(redis_client, page=1)] == [
        "trade-a", "trade-c", "trade-b", "trade-d"]


async def test_outcome_stream_uncapped_unless_asked(redis_client):
    capped = FeedbackActivities(redis_client, outcome_stream_maxlen=50)
    for i in range(300):
        await run(capped.record_close, close_request(f"trade-{i}", closed_at_ms=OPENED_MS + i,
                                                     executions=[]))
    # MAXLEN ~ trims whole stream nodes: at least 50 kept, far fewer than 300
    assert 50 <= await redis_client.xlen(OUTCOME_STREAM) <= 200
    assert await redis_client.xlen(TRADE_CLOSED_STREAM) == 300  # capped at 100000 only

    await redis_client.flushdb()
    uncapped = FeedbackActivities(redis_client)
    for i in range(300):
        await run(uncapped.record_close, close_request(f"trade-{i}", closed_at_ms=OPENED_MS + i,
                                                       executions=[]))
    assert await redis_client.xlen(OUTCOME_STREAM) == 300


async def test_client_without_decode_responses(redis_client, redis_server):
    raw = aioredis.from_url(redis_server.url)  # bytes in, bytes out
    try:
        acts = FeedbackActivities(raw)
        await run(acts.record_position, RecordPositionRequest(position=snapshot("trade-other")))
        # a foreign hash, reported back as bytes
        assert (await run(acts.record_position, RecordPositionRequest(
            position=snapshot(), executions=[fill("t1")]))).published == 1
        await run(acts.record_close, close_request("trade-other"))
        assert await read_position(raw, NEAR) is None

        await run(acts.record_position, RecordPositionRequest(position=snapshot(version=1)))
        await run(acts.record_position, RecordPositionRequest(position=snapshot(version=2, status="CLOSING")))
        await run(acts.record_position, RecordPositionRequest(position=snapshot(version=1)))  # stale
        position = await read_position(raw, NEAR)
        assert (position["side"], position["version"], position["status"]) == ("LONG", "2", "CLOSING")

        request = close_request()
        assert (await run(acts.record_close, request)).published == 3
        assert (await run(acts.record_close, request)).published == 0
        assert await read_position(raw, NEAR) is None
        outcomes = await read_outcomes(raw, page=1)
        assert [o.workflow_id for o in outcomes] == ["trade-other", WF]
        assert outcomes[1] == request.outcome
        # the decoded client reads the same data
        assert await read_outcomes(redis_client) == outcomes
        assert await redis_client.xlen(TRADE_CLOSED_STREAM) == 2
    finally:
        await raw.aclose()
