"""TradeWorkflow end to end on the real stack: each exit reason, with PnL checked against the
paper exchange's own account, and the protection checked against the exchange's audit log: the
first stop is the first order after the entry fill, and from then until flat a stop of this
trade rests on the exchange at every event (the replay the crash tests use)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from activities.schemas.policy import MonitorPolicy, TradePolicy
from tests.fixtures.protection import ORDER_PATHS, Protection
from tests.fixtures.protection import placements as accepted_per_client_id
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


async def client_ids_by_step(rig, handle) -> dict[str, str]:
    """Step (`entry`, `sl-1`, `tp1`…) -> the client order id the workflow used for it, from its
    own state: the id's spelling (workflow id, run tag, short form) is not this test's business."""
    return {o.step: o.client_order_id for o in (await rig.state(handle)).orders}


def assert_stop_rested_until_flat(paper, symbol: str, result: TradeResult, first_stop_id: str | None = None,
                                  *, outside_orders: bool = False) -> Protection:
    """The audit log of `symbol` (the paper exchange is reset for each test; one trade per
    symbol) replayed: the position went flat, the first stop was placed before any other order
    after the entry fill, and from then until flat a stop rested at every event. Client ids are
    taken from the workflow (`result.details["orders"]`, `state.stop_client_id`), never spelled
    out here. `outside_orders`: someone else traded the symbol too (EXTERNAL close)."""
    records = paper.audit(symbol=symbol)
    protection = Protection.replay(records)
    timeline = f"audit of {symbol}:\n{protection.describe()}"
    assert protection.entry_fill_wall_ms is not None, timeline
    assert protection.first_stop_wall_ms is not None, f"no stop was ever placed\n{timeline}"
    assert protection.final_position == 0 and protection.flat_wall_ms is not None, timeline
    assert protection.unprotected == [], f"a position without a resting stop after the first stop\n{timeline}"

    # Nothing else was placed between the entry fill and the first stop.
    placed_orders = [r for r in records if r["method"] == "POST" and r["path"] in ORDER_PATHS
                     and r["result"] in ("accepted", "filled")]
    entry, first_after = placed_orders[0], placed_orders[1]
    assert first_after["path"] == "/fapi/v1/algoOrder" and first_after["type"] == "STOP_MARKET", timeline
    if first_stop_id is not None:
        assert first_after["client_id"] == first_stop_id, timeline

    orders = result.details["orders"]
    assert entry["client_id"] in orders and first_after["client_id"] in orders, timeline
    placed = accepted_per_client_id(records)
    assert {cid: placed[cid] for cid in orders} == {cid: 1 for cid in orders}, timeline  # each once
    if not outside_orders:
        assert set(placed) == set(orders), f"orders the workflow does not know\n{timeline}"
    return protection


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
    ids = await client_ids_by_step(rig, handle)
    for step in ("entry", "sl-1"):
        assert placements(paper, ids[step]) == 1
    protection = assert_stop_rested_until_flat(paper, "BTCUSDT", result, state.stop_client_id)
    assert protection.open_stops == set()  # the stop fired: nothing left resting
    await rig.save_history(handle, "exit_sl")


async def test_take_profit_stages_then_trailing_stop(rig, paper):
    """TP1 harvests 30 % and moves the stop to break-even; then the trailing stop follows the
    price up and the exit is TRAILING; every stop move placed the new stop before the old
    one was cancelled."""
    paper.set_price("ETHUSDT", 3400)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    state = await rig.wait_status(handle, "OPEN")
    first_stop_id = state.stop_client_id
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
    ids = await client_ids_by_step(rig, handle)
    for step in ("entry", "tp1", "sl-1", "sl-2"):
        assert placements(paper, ids[step]) == 1
    assert_stop_rested_until_flat(paper, "ETHUSDT", result, first_stop_id)
    stops_placed = [r for r in paper.audit(symbol="ETHUSDT")
                    if r["path"] == "/fapi/v1/algoOrder" and r["method"] == "POST" and r["result"] == "accepted"]
    assert len(stops_placed) >= 2  # the stop was moved at least once, and a stop rested throughout
    await rig.save_history(handle, "exit_tp_then_trailing")


async def test_manual_close_update_returns_the_result(rig, paper):
    paper.set_price("NEARUSDT", "5.000")
    before = wallet(paper)
    handle = await rig.start(rig.intent("NEARUSDT", "SELL", "5.000"))
    state = await rig.wait_status(handle, "OPEN")
    result = await handle.execute_update("close", {"reason": "test"}, result_type=TradeResult)
    assert result.status is TradeStatus.CLOSED and result.exit_reason is ExitReason.MANUAL
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    assert wallet(paper) - before == result.realized_pnl.quantize(D("0.00000001"))
    protection = assert_stop_rested_until_flat(paper, "NEARUSDT", result, state.stop_client_id)
    assert protection.open_stops == set()  # cancelled once flat, not before
    await rig.save_history(handle, "exit_manual")


async def test_cancel_is_a_kill(rig, paper):
    paper.set_price("XRPUSDT", "2.0000")
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    state = await rig.wait_status(handle, "OPEN")
    await handle.cancel()
    result = await rig.result(handle)
    assert result.status is TradeStatus.KILLED and result.exit_reason is ExitReason.KILLED
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    assert_stop_rested_until_flat(paper, "XRPUSDT", result, state.stop_client_id)
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
    assert_stop_rested_until_flat(paper, "DASHUSDT", result, state.stop_client_id)
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
    assert_stop_rested_until_flat(paper, "XLMUSDT", result, state.stop_client_id)
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
    assert_stop_rested_until_flat(paper, "BTCUSDT", result, state.stop_client_id, outside_orders=True)
