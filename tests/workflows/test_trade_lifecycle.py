"""TradeWorkflow end to end on the real stack: each exit reason, with PnL checked against the
paper exchange's own account."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from activities.schemas.policy import MonitorPolicy, TradePolicy
from trading.exits import ExitPolicy
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import TradeResult

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
    await rig.save_history(handle, "exit_sl")


async def test_take_profit_stages_then_trailing_stop(rig, paper):
    """TP1 harvests 30 % and moves the stop to break-even; then the trailing stop follows the
    price up and the exit is TRAILING; every stop move placed the new stop before the old
    one was cancelled."""
    paper.set_price("ETHUSDT", 3400)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    state = await rig.wait_status(handle, "OPEN")
    tp1, tp2 = state.exit.levels.take_profits[0].price, state.exit.levels.take_profits[1].price
    entry_qty = state.entry_qty

    paper.set_price("ETHUSDT", tp1 + D("0.5"))
    state = await rig.wait_for(handle, lambda s: s.exit.tps_done == 1 and s.stop_seq >= 2)
    assert state.open_qty < entry_qty
    assert state.exit.stop >= state.entry_price  # break-even or better
    assert state.exit.stop_kind.value in ("BREAK_EVEN", "TRAILING")

    # Up towards TP2 (not through it): the trailing stop ratchets and is re-placed.
    high = tp1 + (tp2 - tp1) * D("0.8")
    paper.set_price("ETHUSDT", high.quantize(D("0.01")))
    state = await rig.wait_for(handle, lambda s: s.exit.stop_kind.value == "TRAILING" and s.exit.stop > s.entry_price)
    trailing_stop = state.exit.stop
    paper.set_price("ETHUSDT", (trailing_stop - 1).quantize(D("0.01")))
    result = await rig.result(handle)
    assert result.exit_reason is ExitReason.TRAILING
    assert result.realized_pnl > 0
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    for step in ("entry", "tp1", "sl-1", "sl-2"):
        assert placements(paper, f"{handle.id}-{step}") == 1
    await rig.save_history(handle, "exit_tp_then_trailing")


async def test_manual_close_update_returns_the_result(rig, paper):
    paper.set_price("NEARUSDT", "5.000")
    before = wallet(paper)
    handle = await rig.start(rig.intent("NEARUSDT", "SELL", "5.000"))
    await rig.wait_status(handle, "OPEN")
    result = await handle.execute_update("close", {"reason": "test"}, result_type=TradeResult)
    assert result.status is TradeStatus.CLOSED and result.exit_reason is ExitReason.MANUAL
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    assert wallet(paper) - before == result.realized_pnl.quantize(D("0.00000001"))
    await rig.save_history(handle, "exit_manual")


async def test_cancel_is_a_kill(rig, paper):
    paper.set_price("XRPUSDT", "2.0000")
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    await rig.wait_status(handle, "OPEN")
    await handle.cancel()
    result = await rig.result(handle)
    assert result.status is TradeStatus.KILLED and result.exit_reason is ExitReason.KILLED
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    await rig.save_history(handle, "exit_killed")


KILL_EASY = TradePolicy(
    monitor=MonitorPolicy(session_cap_s=600, heartbeat_interval_s=0.5, heartbeat_timeout_s=5, kill_score=True),
    exits=ExitPolicy(max_hold_s=None), cooldown_s=0,
    # Any score above 0.001 closes: the age component alone (0.03 × age / 24 h) passes it after
    # ~48 market minutes, so the test does not depend on how the replayed candles move.
    kill_threshold=0.001)


@pytest.mark.parametrize("trade_policy", [KILL_EASY], indirect=True)
async def test_kill_score_on_candle_closes(rig, paper):
    paper.advance(3 * 3_600_000)  # candle history for the features (>= 20 closed 5m candles)
    paper.set_price("DASHUSDT", "40.00")
    handle = await rig.start(rig.intent("DASHUSDT", "BUY", "40.00"))
    state = await rig.wait_status(handle, "OPEN")
    assert state.features_at_entry is not None and state.features_at_entry.candles >= 20
    for _ in range(18):  # 90 market minutes, one candle at a time
        paper.advance(5 * 60_000)
        await asyncio.sleep(0.3)
        if (await rig.state(handle)).status.is_final:
            break
    result = await rig.result(handle)
    assert result.exit_reason is ExitReason.KILL_SCORE, result.reason
    final = await rig.state(handle)
    assert final.kill is not None and final.kill.score >= 0.001 and final.kill.should_close
    await rig.save_history(handle, "exit_kill_score")


async def test_price_through_the_last_take_profit_closes_as_tp(rig, paper):
    paper.set_price("XLMUSDT", "0.40000")
    handle = await rig.start(rig.intent("XLMUSDT", "SELL", "0.40000"))
    state = await rig.wait_status(handle, "OPEN")
    tp3 = state.exit.levels.take_profits[-1].price
    paper.set_price("XLMUSDT", tp3 - D("0.001"))
    result = await rig.result(handle)
    assert result.exit_reason is ExitReason.TP and result.realized_pnl > 0
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    await rig.save_history(handle, "exit_tp")


async def test_position_closed_outside_the_workflow_is_external(rig, paper, exchange):
    paper.set_price("BTCUSDT", 63000)
    handle = await rig.start(rig.intent("BTCUSDT", "SELL", 63000))
    state = await rig.wait_status(handle, "OPEN")
    # Someone closes it by hand on the exchange.
    await exchange.create_order("BTC/USDT:USDT", "market", "buy", float(state.open_qty), None,
                                {"reduceOnly": True})
    result = await rig.result(handle)
    assert result.exit_reason is ExitReason.EXTERNAL
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
