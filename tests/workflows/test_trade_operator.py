"""Operator surface: adjust_levels (validated: a refused change writes no history), pause and
resume, and the max holding time on the market clock."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from temporalio.client import WorkflowUpdateFailedError

from activities.schemas.policy import MonitorPolicy, TradePolicy
from tests.fixtures.client_ids import trade_cid
from trading.exits import ExitPolicy
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import AdjustLevelsResult

pytestmark = pytest.mark.timeout(120)
D = Decimal


async def _open(rig, paper, symbol="BTCUSDT", side="BUY", price=63000):
    paper.set_price(symbol, price)
    handle = await rig.start(rig.intent(symbol, side, price))
    return handle, await rig.wait_status(handle, "OPEN")


async def _quiet_history(rig, handle) -> int:
    """History length once the background position record after OPEN has landed."""
    length = -1
    while True:
        await asyncio.sleep(0.5)
        now = await rig.history_length(handle)
        if now == length:
            return now
        length = now


@pytest.mark.parametrize(("change", "message"), [
    ({"stop_loss": "64000"}, "must be below the current price"),
    ({"stop_loss": "-5"}, "must be a finite number > 0"),
    ({"stop_loss": "0"}, "must be a finite number > 0"),
    ({"stop_loss": "1000"}, "liquidation"),
    ({"take_profits": ["62000", "65000", "66000"]}, "must be above the current price"),
    ({"take_profits": ["64000"]}, "give exactly 3"),
    ({}, "give stop_loss and/or take_profits"),
])
async def test_adjust_levels_refuses_bad_levels_without_writing_history(rig, paper, change, message):
    handle, state = await _open(rig, paper)
    events_before = await _quiet_history(rig, handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("adjust_levels", change, result_type=AdjustLevelsResult)
    assert message in str(refused.value.cause), refused.value.cause
    assert await rig.history_length(handle) == events_before  # the validator refused it
    assert (await rig.state(handle)).exit.stop == state.exit.stop
    await handle.execute_update("close", {})


async def test_adjust_levels_moves_the_exchange_stop_new_before_old(rig, paper):
    handle, state = await _open(rig, paper)
    new_stop = (state.exit.stop + 100).quantize(D("0.1"))
    tps = [str(tp.price + 50) for tp in state.exit.levels.take_profits]
    result = await handle.execute_update("adjust_levels", {"stop_loss": str(new_stop), "take_profits": tps},
                                         result_type=AdjustLevelsResult)
    assert result.stop_loss == new_stop and [str(p) for p in result.take_profits] == tps
    algos = paper.state()["open_algo_orders"]
    sl_1, sl_2 = trade_cid(handle, "sl-1"), trade_cid(handle, "sl-2")
    assert [a["clientAlgoId"] for a in algos] == [sl_2]
    assert D(algos[0]["triggerPrice"]) == new_stop
    audit = [r for r in paper.audit() if r.get("client_id") in (sl_1, sl_2)]
    accepted_new = next(i for i, r in enumerate(audit) if r["client_id"] == sl_2 and r["result"] == "accepted")
    canceled_old = next(i for i, r in enumerate(audit) if r["client_id"] == sl_1 and r["result"] == "canceled")
    assert accepted_new < canceled_old
    await rig.save_history(handle, "adjust_levels")
    await handle.execute_update("close", {})


async def test_pause_stops_management_but_not_protection(rig, paper):
    handle, state = await _open(rig, paper, "ETHUSDT", "BUY", 3400)
    tp1 = state.exit.levels.take_profits[0].price
    await handle.signal("pause")
    await rig.wait_for(handle, lambda s: s.paused)
    paper.set_price("ETHUSDT", tp1 + 1)
    await paper_polls(rig)
    assert (await rig.state(handle)).exit.tps_done == 0  # paused: no harvest
    await handle.signal("resume")
    state = await rig.wait_for(handle, lambda s: s.exit.tps_done == 1)
    assert state.open_qty < state.entry_qty
    await handle.execute_update("close", {})


async def paper_polls(rig, seconds: float = 1.5) -> None:
    await asyncio.sleep(seconds)


TIME_LIMITED = TradePolicy(
    monitor=MonitorPolicy(session_cap_s=600, heartbeat_interval_s=0.5, heartbeat_timeout_s=5, kill_score=False),
    exits=ExitPolicy(max_hold_s=3600), cooldown_s=0)


@pytest.mark.parametrize("trade_policy", [TIME_LIMITED], indirect=True)
async def test_time_limit_on_the_market_clock(rig, paper):
    handle, _ = await _open(rig, paper, "XRPUSDT", "SELL", "2.0000")
    paper.advance(3_600_000 + 60_000)  # one market hour later (the price stays pinned)
    result = await rig.result(handle)
    assert result.status is TradeStatus.CLOSED and result.exit_reason is ExitReason.TIME_LIMIT
    assert result.holding_s >= 3600
    await rig.save_history(handle, "time_limit")
