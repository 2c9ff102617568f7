"""TradeWorkflow end to end on the real stack: each exit reason, with PnL checked against the
paper exchange's own account."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.models import ExitReason, TradeStatus

pytestmark = pytest.mark.timeout(120)
D = Decimal


def wallet(paper) -> Decimal:
    return D(paper.state()["balance"]["walletBalance"])


def placements(paper, client_id: str) -> int:
    """How many times the exchange ACCEPTED an order with this client id (audit log)."""
    return sum(1 for r in paper.audit(client_id=client_id) if r["result"] in ("filled", "accepted"))


async def test_stop_loss_on_the_exchange_closes_the_trade(rig, paper):
    paper.set_price("BTCUSDT", 63000)
    before = wallet(paper)
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
    state = await rig.wait_status(handle, "OPEN")
    assert state.open_qty > 0 and state.stop_client_id.endswith("-sl-1")
    stop = state.exit.stop
    assert stop < D(63000)
    assert [o["symbol"] for o in paper.state()["open_algo_orders"]] == ["BTCUSDT"]

    paper.set_price("BTCUSDT", stop - 50)
    result = await rig.result(handle)
    assert result.status is TradeStatus.CLOSED
    assert result.exit_reason is ExitReason.SL
    assert result.realized_pnl < 0
    assert paper.state()["positions"] == []
    assert paper.state()["open_algo_orders"] == []
    assert wallet(paper) - before == result.realized_pnl.quantize(D("0.00000001"))
    for step in ("entry", "sl-1"):
        assert placements(paper, f"{handle.id}-{step}") == 1
