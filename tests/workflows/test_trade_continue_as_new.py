"""Continue-as-new mid-position, forced by the server's `suggestContinueAsNew` limit: the whole
state (levels, stop, fills, trailing mark) crosses runs and nothing is placed twice. A position
held for days of market time (funding every 8 h) spans several runs and its PnL still matches
the paper account to the cent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.schemas.policy import MonitorPolicy, TradePolicy
from common.search_attributes import SEARCH_ATTRIBUTES
from common.temporal import temporal_binary
from tests.fixtures.client_ids import trade_cid
from tests.fixtures.stack import _SA_KEYS
from tests.fixtures.trading import TradeRig, running_workers
from trading.exits import ExitPolicy
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import TradeResult

pytestmark = pytest.mark.timeout(240)
D = Decimal
SUGGEST_AFTER = 40  # events: a handful of monitor sessions

# One-second monitor sessions: history grows fast enough to be suggested a new run quickly.
FAST_SESSIONS = TradePolicy(
    monitor=MonitorPolicy(session_cap_s=1, heartbeat_interval_s=0.5, heartbeat_timeout_s=5, kill_score=False),
    exits=ExitPolicy(max_hold_s=None), cooldown_s=0)


@pytest_asyncio.fixture(scope="module")
async def can_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[_SA_KEYS[kind](name) for name, kind in SEARCH_ATTRIBUTES.items()],
        ui=False, dev_server_log_level="warn", data_converter=pydantic_data_converter,
        dev_server_extra_args=["--dynamic-config-value",
                               f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER}"])
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def can_rig(can_env, paper, redis_client, exchange) -> AsyncIterator[TradeRig]:
    async with running_workers(can_env.client, exchange, redis_client, FAST_SESSIONS):
        yield TradeRig(can_env.client, paper, redis_client, exchange)


def wallet(paper) -> Decimal:
    return D(paper.state()["balance"]["walletBalance"])


async def test_continue_as_new_mid_position_loses_nothing(can_rig, paper):
    rig = can_rig
    paper.set_price("ETHUSDT", 3400)
    before = wallet(paper)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    opened = await rig.wait_status(handle, "OPEN")
    tp1 = opened.exit.levels.take_profits[0].price
    paper.set_price("ETHUSDT", tp1 + 1)  # harvest TP1 in run 1: break-even stop sl-2
    await rig.wait_for(handle, lambda s: s.exit.tps_done == 1 and s.stop_seq == 2)

    state = await rig.wait_for(handle, lambda s: s.run >= 3, timeout=120)
    # Everything the first run knew is still there.
    assert state.entry_qty == opened.entry_qty and state.entry_price == opened.entry_price
    assert state.exit.tps_done == 1 and state.stop_client_id == trade_cid(handle, "sl-2")
    assert [o.step for o in state.orders][:2] == ["entry", "sl-1"]
    # Every run stays short.
    description = await handle.describe()
    assert description.raw_description.workflow_execution_info.history_length <= SUGGEST_AFTER + 30

    result = await handle.execute_update("close", {}, result_type=TradeResult)
    assert result.status is TradeStatus.CLOSED and result.exit_reason is ExitReason.MANUAL
    assert wallet(paper) - before == result.realized_pnl.quantize(D("0.00000001"))
    # The run tag stays the first run's through continue-as-new.
    assert [o.client_order_id for o in state.orders][:2] == [trade_cid(handle, "entry"), trade_cid(handle, "sl-1")]
    audit = [r for r in paper.audit() if r.get("client_id", "").startswith(f"{handle.id}.")
             and r["result"] in ("filled", "accepted")]
    ids = [r["client_id"] for r in audit]
    assert len(ids) == len(set(ids)), ids  # every client id placed once across all runs
    assert set(ids) == set(result.details["orders"]), ids
    await rig.save_history(handle, "continued_as_new_last_run")


async def test_position_held_for_days_across_runs(can_rig, paper):
    rig = can_rig
    paper.set_price("NEARUSDT", "5.000")
    before = wallet(paper)
    handle = await rig.start(rig.intent("NEARUSDT", "SELL", "5.000"))
    await rig.wait_status(handle, "OPEN")
    for _ in range(9):  # three days of market time, funding at every 8 h boundary
        paper.advance(8 * 3_600_000)
        await asyncio.sleep(1.5)
    state = await rig.state(handle)
    assert state.status is TradeStatus.OPEN and state.run >= 2
    result = await handle.execute_update("close", {}, result_type=TradeResult)
    assert result.holding_s >= 3 * 86_400
    assert result.funding != 0  # funding was paid or received on the way
    assert wallet(paper) - before == result.realized_pnl.quantize(D("0.00000001"))
