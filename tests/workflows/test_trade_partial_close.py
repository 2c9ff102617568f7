"""A partial close (the `close` update with `amount`): that many contracts go at market, the rest
stays open and managed under its resting stop; the PnL of the whole trade equals the account."""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.fixtures.client_ids import trade_cid
from tests.fixtures.protection import Protection, trade_audit
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import TradeResult

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]
D = Decimal


def wallet(paper) -> Decimal:
    return D(paper.state()["balance"]["walletBalance"])


def position(paper, symbol: str) -> Decimal:
    return sum((abs(D(p["positionAmt"])) for p in paper.state()["positions"] if p["symbol"] == symbol), D(0))


async def test_partial_close_then_the_rest(rig, paper):
    paper.set_price("BTCUSDT", 63000)
    before = wallet(paper)
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000, position_size_usd="300"))
    state = await rig.wait_status(handle, "OPEN")
    whole, step = state.entry_qty, state.rules.step_size
    part = (whole / 2 // step) * step
    assert part > 0

    with pytest.raises(WorkflowUpdateFailedError) as refused:  # off the step grid: refused, nothing sent
        await handle.execute_update("close", {"reason": "x", "amount": str(part + step / 10)}, result_type=TradeResult)
    assert "amount:" in str(refused.value.cause)

    partial = await handle.execute_update("close", {"reason": "take some off", "amount": str(part)},
                                          result_type=TradeResult)
    assert partial.status is TradeStatus.OPEN
    state = await rig.state(handle)
    assert state.open_qty == whole - part and position(paper, "BTCUSDT") == whole - part
    assert [o["clientAlgoId"] for o in paper.state()["open_algo_orders"]] == [state.stop_client_id]  # still protected

    result = await handle.execute_update("close", {"reason": "the rest"}, result_type=TradeResult)
    assert (result.status, result.exit_reason) == (TradeStatus.CLOSED, ExitReason.MANUAL)
    assert trade_cid(handle, "reduce-1") in result.details["orders"]
    assert position(paper, "BTCUSDT") == 0 and paper.state()["open_algo_orders"] == []
    assert wallet(paper) - before == result.realized_pnl.quantize(D("0.00000001"))
    protection = Protection.replay(trade_audit(paper, handle.id))
    assert protection.unprotected == []


async def test_an_amount_of_the_whole_position_closes_it_all(rig, paper):
    paper.set_price("XRPUSDT", "2.0000")
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    state = await rig.wait_status(handle, "OPEN")
    result = await handle.execute_update("close", {"amount": str(state.open_qty * 2)}, result_type=TradeResult)
    assert (result.status, result.exit_reason) == (TradeStatus.CLOSED, ExitReason.MANUAL)
