"""What a trade tells the old system and the learning step: the position hash kept in step
while open, one execution.result entry per fill, one trade.closed with the PnL, one outcome
record in the learning dataset."""

from __future__ import annotations

from decimal import Decimal

import pytest

from activities.feedback import read_outcomes, read_position
from common.redis_keys import EXECUTION_RESULT_STREAM, TRADE_CLOSED_STREAM
from workflows.trade_state import TradeResult

pytestmark = pytest.mark.timeout(120)
D = Decimal


async def test_position_hash_streams_and_outcome(rig, paper, redis_client):
    paper.set_price("ETHUSDT", 3400)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    state = await rig.wait_status(handle, "OPEN")

    position = await _wait_hash(rig, redis_client, "ETHUSDT", lambda h: h and h["version"] == "1")
    assert position["side"] == "LONG" and position["plan_id"] == handle.id
    assert D(position["quantity"]) == state.entry_qty and D(position["stop_loss"]) == state.exit.stop

    tp1 = state.exit.levels.take_profits[0].price
    paper.set_price("ETHUSDT", tp1 + 1)
    state = await rig.wait_for(handle, lambda s: s.exit.tps_done == 1 and s.stop_seq == 2)
    position = await _wait_hash(rig, redis_client, "ETHUSDT",
                                lambda h: h and D(h["quantity"]) == state.open_qty)
    assert D(position["stop_loss"]) == state.exit.stop  # the break-even stop

    result = await handle.execute_update("close", {"reason": "feedback test"}, result_type=TradeResult)
    assert await read_position(redis_client, "ETHUSDT") is None  # gone once flat

    executions = await redis_client.xrange(EXECUTION_RESULT_STREAM)
    steps = [fields["step"] for _, fields in executions if fields["workflow_id"] == handle.id]
    assert steps.count("entry") == 1 and steps.count("tp1") == 1 and "close" in steps
    closed = [f for _, f in await redis_client.xrange(TRADE_CLOSED_STREAM) if f["workflow_id"] == handle.id]
    assert len(closed) == 1
    assert D(closed[0]["realized_pnl"]) == result.realized_pnl and closed[0]["exit_reason"] == "MANUAL"

    outcomes = [o for o in await read_outcomes(redis_client) if o.workflow_id == handle.id]
    assert len(outcomes) == 1
    outcome = outcomes[0]
    assert outcome.closed.realized_pnl == result.realized_pnl
    assert outcome.label == (1 if result.realized_pnl > 0 else 0)
    assert outcome.intent["symbol"] == "ETHUSDT" and outcome.levels["final"]["tps_done"] == 1
    filled = {step: sum(f.quantity for f in outcome.fills if f.step == step) for step in ("entry", "tp1", "close")}
    assert filled["entry"] == state.entry_qty and filled["tp1"] + filled["close"] == state.entry_qty


async def test_a_stop_out_reports_the_stops_fill_as_sl(rig, paper, redis_client):
    """The triggered stop's market order carries no client id of ours: its fill is still the
    stop's ("sl"), never an outside order ("exchange")."""
    paper.set_price("XRPUSDT", "2.0000")
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    state = await rig.wait_status(handle, "OPEN")
    paper.set_price("XRPUSDT", state.exit.stop - D("0.01"))
    result = await rig.result(handle)
    assert result.exit_reason.value == "SL"
    executions = await redis_client.xrange(EXECUTION_RESULT_STREAM)
    steps = [fields["step"] for _, fields in executions if fields["workflow_id"] == handle.id]
    assert steps.count("entry") == 1 and "sl" in steps and "exchange" not in steps, steps


async def _wait_hash(rig, redis_client, symbol, check, timeout: float = 10):
    import asyncio
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await read_position(redis_client, symbol)
        if check(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"position hash never matched: {value}")
