"""The circuit breaker on the real stack: five entries refused in a row by the exchange set safe
mode with its reason and origin; the open trade still moves its stop and closes meanwhile; the
API clears it and entries come back (the real API over HTTP, the rig's workers)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.safe_mode import read_safe_mode
from trading.models import TradeStatus
from workflows.trade_state import AdjustLevelsResult, TradeResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
D = Decimal


async def test_five_refused_entries_set_safe_mode_that_blocks_entries_only(api, rig, paper, redis_client):
    paper.set_price("BTCUSDT", 63000)
    paper.set_price("ETHUSDT", 3400)
    kept = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
    state = await rig.wait_status(kept, "OPEN")
    paper.add_fault(path="/fapi/v1/order", method="POST", status=400, code=-2019, count=5)

    for _ in range(5):
        failed = await rig.result(await rig.start(rig.intent("ETHUSDT", "BUY", 3400)))
        assert failed.status is TradeStatus.FAILED and "insufficient_funds" in failed.reason, failed

    mode = await read_safe_mode(redis_client)
    assert mode.active and mode.origin == "breaker:rejected" and mode.set_by == "circuit-breaker"
    assert "5 rejected order requests within 60 s" in mode.reason and "insufficient_funds" in mode.reason
    assert 0 < mode.ttl_s <= 900
    view = (await api.get("/api/v1/safe-mode")).json()
    assert view["active"] and view["origin"] == "breaker:rejected"
    refused = await rig.result(await rig.start(rig.intent("ETHUSDT", "BUY", 3400)))
    assert refused.status is TradeStatus.REJECTED and refused.reason.startswith("safe_mode: safe mode is on")

    # Safe mode never blocks what protects or ends a trade: a stop move and the close go through.
    moved = await kept.execute_update("adjust_levels", {"stop_loss": str(state.exit.stop + 100)},
                                      result_type=AdjustLevelsResult)
    assert moved.stop_loss == state.exit.stop + 100
    closed = await kept.execute_update("close", {"reason": "test"}, result_type=TradeResult)
    assert closed.status is TradeStatus.CLOSED

    cleared = await api.delete("/api/v1/safe-mode")
    assert cleared.status_code == 200 and cleared.json()["active"] is False
    again = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    assert (await rig.wait_status(again, "OPEN")).status is TradeStatus.OPEN  # one more refusal no longer trips it
    await again.execute_update("close", {})
