"""Holes found by trying the system as an adversary would, each closed on the real stack
(Temporal dev server, redis-server, paper exchange over HTTP through ccxt):

- an intent stamped in the future is refused (`future_intent`), from the starter the intake
  uses and from a raw `temporal workflow start`, and counted;
- a second run under a workflow id that already traded (the CLI's default reuse policy allows
  one) ends REJECTED naming the first run, and adopts none of its orders: the account's change
  equals the one real trade's PnL;
- an entry sent late (a retried attempt) re-checks the price and refuses when it moved away;
- gates that cannot run (Redis down) end the trade REJECTED within their retry budget instead of
  leaving it PENDING until Redis returns;
- a size no account could margin is refused with a reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy

from common.redis_keys import GATE_REJECTIONS_KEY
from activities.risk_settings import RiskSettings
from tests.fixtures.client_ids import trade_cid
from local_stack.intents import intent_fields
from local_stack.redis_server import RedisServer
from tests.fixtures.trading import TEST_POLICY, running_workers
from trading.models import TradeStatus
from common.task_queues import TRADE_WORKFLOWS
from workflows.starter import start_trade
from workflows.trade_state import Stage, TradeResult

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]
D = Decimal


def wallet(paper) -> Decimal:
    return D(paper.state()["balance"]["walletBalance"])


def sent_by(paper, workflow_id: str) -> list[dict]:
    """Every order request of any run under this workflow id (tagged or not)."""
    return [r for r in paper.audit() if r.get("client_id", "").startswith(workflow_id)]


async def cli_start(client, fields: dict, workflow_id: str):
    """What `temporal workflow start --workflow-id ... --input '{...}'` does: the raw fields, the
    CLI's default reuse policy (a new run may follow a closed one)."""
    return await client.start_workflow(
        "TradeWorkflow", fields, id=workflow_id, task_queue=TRADE_WORKFLOWS, result_type=TradeResult,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)


# ====================================================================== intents from the future


async def test_future_intents_are_refused_from_both_paths_and_counted(rig, paper, redis_client, temporal_client):
    paper.set_price("BTCUSDT", 63000)
    now = datetime.fromtimestamp(paper.clock()["market_ms"] / 1000, UTC)
    one_hour = {**rig.intent("BTCUSDT", "BUY", 63000), "timestamp": (now + timedelta(hours=1)).isoformat()}
    two_hours = {**rig.intent("BTCUSDT", "BUY", 63000), "timestamp": str(int((now + timedelta(hours=2)).timestamp()))}
    # A local time (UTC+1) written with a UTC offset: an hour early.
    wrong_offset = {**rig.intent("BTCUSDT", "BUY", 63000),
                    "timestamp": (now + timedelta(hours=1)).replace(tzinfo=None).isoformat() + "+00:00"}
    handles = [await rig.start(one_hour), await rig.start(two_hours),
               await cli_start(temporal_client, wrong_offset, f"trade-cli-{uuid.uuid4().hex[:8]}")]
    for handle in handles:
        result = await rig.result(handle)
        assert result.status is TradeStatus.REJECTED
        assert result.reason.startswith("future_intent: intent is stamped"), result.reason
        assert sent_by(paper, handle.id) == []
    assert await redis_client.hget(GATE_REJECTIONS_KEY, "future_intent") == "3"


# ============================================================= a reused workflow id (CLI reuse)


async def test_a_second_run_of_a_traded_workflow_id_is_rejected_and_adopts_nothing(rig, paper, temporal_client):
    paper.set_price("ETHUSDT", 3400)
    before = wallet(paper)
    workflow_id = f"trade-reuse-{uuid.uuid4().hex[:8]}"
    first = await cli_start(temporal_client, rig.intent("ETHUSDT", "BUY", 3400), workflow_id)
    await rig.wait_status(first, "OPEN")
    closed = await first.execute_update("close", {"reason": "test"}, result_type=TradeResult)
    assert closed.status is TradeStatus.CLOSED and closed.realized_pnl is not None
    first_orders = {r["client_id"] for r in sent_by(paper, workflow_id)}
    assert trade_cid(first, "entry") in first_orders

    # The same workflow id again, now for a SELL: it used to find the first run's filled BUY
    # entry and its cancelled stop by client id and end CLOSED with the first trade's PnL.
    second = await cli_start(temporal_client, rig.intent("ETHUSDT", "SELL", 3400), workflow_id)
    assert second.first_execution_run_id != first.first_execution_run_id
    result = await rig.result(second)
    assert result.status is TradeStatus.REJECTED
    assert result.reason.startswith("workflow_id_reuse: "), result.reason
    assert first.first_execution_run_id in result.reason  # names the run that traded
    assert result.realized_pnl is None and result.details["orders"] == []
    assert {r["client_id"] for r in sent_by(paper, workflow_id)} == first_orders  # nothing new sent
    # Its ids could never have matched the first run's anyway: they carry their own run tag.
    assert trade_cid(second, "entry") != trade_cid(first, "entry")
    assert wallet(paper) - before == closed.realized_pnl.quantize(D("0.00000001"))


# ============================================================================ a late entry


async def test_a_retried_entry_rechecks_the_price_and_refuses_when_it_moved(rig, paper):
    paper.set_price("XRPUSDT", "2.0000")
    # The first entry attempt is held, then fails without being executed (as when the worker
    # died mid-request); meanwhile the market drops 2.5 %, past the 1 % deviation gate.
    paper.add_fault(path="/fapi/v1/order", method="POST", latency_ms=1500, status=503, code=-1001)
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    await rig.wait_for(handle, lambda s: s.stage is Stage.ENTRY)
    paper.set_price("XRPUSDT", "1.9500")
    result = await rig.result(handle, timeout=90)
    assert result.status is TradeStatus.REJECTED
    assert result.reason.startswith("late entry refused: price moved 2.50 %"), result.reason
    entry = [r for r in paper.audit(client_id=trade_cid(handle, "entry")) if r["result"] in ("filled", "accepted")]
    assert entry == [] and paper.state()["positions"] == []
    state = await rig.state(handle)
    assert not state.lock_held


async def test_a_retried_entry_within_the_rule_trades(rig, paper):
    paper.set_price("XRPUSDT", "2.0000")
    paper.add_fault(path="/fapi/v1/order", method="POST", latency_ms=500, status=503, code=-1001)
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    state = await rig.wait_status(handle, "OPEN", timeout=60)
    assert state.entry_qty > 0 and state.stop_client_id == trade_cid(handle, "sl-1")
    await handle.execute_update("close", {"reason": "test"}, result_type=TradeResult)


# =================================================================== gates while Redis is down


async def test_gates_during_a_redis_outage_end_rejected(temporal_client, paper, exchange, tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    redis = aioredis.from_url(server.url, decode_responses=True)
    try:
        server.process.kill()  # SIGKILL: Redis is gone for the whole trade
        server.process.wait(timeout=10)
        paper.set_price("BTCUSDT", 63000)
        async with running_workers(temporal_client, exchange, redis, TEST_POLICY, RiskSettings(cooldown_s=0)):
            handle, _ = await start_trade(temporal_client, intent_fields(
                "BTCUSDT", "BUY", 63000, paper.clock()["market_ms"]))
            began = time.monotonic()
            result = await asyncio.wait_for(handle.result(), 90)
            took = time.monotonic() - began
    finally:
        await redis.aclose()
    print(f"gates with Redis down: REJECTED after {took:.1f} s")
    assert result.status is TradeStatus.REJECTED
    assert result.reason.startswith("gates could not run: "), result.reason
    assert "symbol lock could not be released either" in result.reason
    assert sent_by(paper, handle.id) == []


# ===================================================================== a size beyond any account


async def test_a_size_no_account_could_margin_is_refused(rig, paper):
    paper.set_price("BTCUSDT", 63000)
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000, position_size_usd="500000"))
    result = await rig.result(handle)
    assert result.status is TradeStatus.REJECTED
    assert result.reason.startswith("position_size: position_size_usd 500000 is more than the account's equity")
    assert sent_by(paper, handle.id) == []


# ======================================================================== oversized operator input


async def test_an_oversized_update_is_refused_and_the_trade_lives_on(rig, paper):
    """An adjust_levels sent straight to Temporal (CLI, SDK) with a huge reason used to be kept in
    the state and make every later workflow task too large: now the update's model refuses it."""
    paper.set_price("ETHUSDT", 3400)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    await rig.wait_status(handle, "OPEN")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("adjust_levels", {"stop_loss": "3300", "reason": "x" * 100_000})
    assert "Failed decoding arguments" in str(refused.value.cause)  # the model's bound refused it
    state = await rig.state(handle)  # still answers
    assert state.status.value == "OPEN"
    closed = await handle.execute_update("close", {"reason": "test"}, result_type=TradeResult)
    assert closed.status is TradeStatus.CLOSED
