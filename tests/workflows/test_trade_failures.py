"""Failure paths: the exchange refuses the entry (FAILED, lock released, nothing open), refuses
the protective stop (closed at market at once, never left unprotected), or drops the connection
after accepting an order (looked up by client id: placed exactly once)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from activities.gates import lock_key
from tests.fixtures.client_ids import trade_cid
from trading.models import ExitReason, TradeStatus

pytestmark = pytest.mark.timeout(120)
D = Decimal


def placements(paper, client_id: str) -> int:
    return sum(1 for r in paper.audit(client_id=client_id) if r["result"] in ("filled", "accepted"))


def flat(paper) -> bool:
    state = paper.state()
    return state["positions"] == [] and state["open_algo_orders"] == [] and state["open_orders"] == []


async def test_entry_refused_fails_cleanly(rig, paper, redis_client):
    paper.set_price("BTCUSDT", 63000)
    paper.add_fault(path="/fapi/v1/order", method="POST", code=-2019)  # margin is insufficient
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
    result = await rig.result(handle)
    assert result.status is TradeStatus.FAILED
    assert "entry order failed" in result.reason and "insufficient_funds" in result.reason, result.reason
    assert flat(paper)
    assert await redis_client.get(lock_key("BTCUSDT")) is None  # released: the symbol is free again


async def test_protection_refused_closes_at_market(rig, paper):
    paper.set_price("ETHUSDT", 3400)
    paper.add_fault(path="/fapi/v1/algoOrder", method="POST", code=-4006)  # stop price rejected
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    result = await rig.result(handle)
    assert result.status is TradeStatus.CLOSED
    assert result.exit_reason is ExitReason.PROTECTION_FAILED
    assert flat(paper)
    assert placements(paper, trade_cid(handle, "close")) == 1


async def test_dropped_connection_after_accept_places_once(rig, paper):
    paper.set_price("NEARUSDT", "5.000")
    paper.add_fault(path="/fapi/v1/order", method="POST", drop_after_accept=True)  # the entry
    paper.add_fault(path="/fapi/v1/algoOrder", method="POST", drop_after_accept=True)  # the stop
    handle = await rig.start(rig.intent("NEARUSDT", "BUY", "5.000"))
    state = await rig.wait_status(handle, "OPEN")
    assert placements(paper, trade_cid(handle, "entry")) == 1
    assert placements(paper, trade_cid(handle, "sl-1")) == 1
    assert state.entry_qty > 0
    await handle.execute_update("close", {})
    assert flat(paper)
