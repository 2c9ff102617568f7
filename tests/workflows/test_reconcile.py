"""ReconcileWorkflow on the real stack: every case of issue 13 made on purpose through ccxt,
Redis or Temporal behind the trades' backs, found by one run and handled.

The workers here serve every queue but `trade-monitor`: an OPEN trade then waits for a monitor
session that never starts, so what the trade's own monitor would notice (a position that
vanished or changed size) can only reach it through reconcile's `reconcile` signal.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus

from activities.price_hub import PriceHub
from activities.schemas.reconcile import ReconcileReport
from common.redis_keys import LOCK_KEY, POSITION_KEY, RECONCILE_EVENTS_STREAM, RECONCILE_LAST_REPORT_KEY
from common.task_queues import TRADE_EXECUTION, TRADE_MARKET, TRADE_WORKFLOWS
from tests.fixtures.client_ids import trade_cid
from tests.fixtures.trading import TEST_POLICY, TradeRig
from trading.client_ids import client_order_id
from trading.models import ExitReason, TradeStatus
from trading.reconcile import Action, FindingKind, OrphanMode
from workers.main import build_workers, running
from workers.registry import Dependencies, WorkerSettings
from workflows.reconcile import ReconcileRequest
from workflows.trade_state import TradeResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
D = Decimal
BTC, ETH, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"
FOREIGN_CID = "other-bot-7f3a"  # another bot on the same account: never touched


async def _terminate_running(client: Client) -> None:
    """Trades other tests left running would be live trades to this run's eyes (and no reconcile
    Schedule may run beside these tests' own runs)."""
    try:
        await client.get_schedule_handle("reconcile").delete()
    except Exception:  # noqa: BLE001 - none
        pass
    async for wf in client.list_workflows("ExecutionStatus = 'Running'"):
        try:
            await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate("reconcile test isolation")
        except Exception:  # noqa: BLE001 - ended meanwhile
            pass


@pytest_asyncio.fixture
async def rig(temporal_client, paper, redis_client, exchange, risk_settings):
    await _terminate_running(temporal_client)
    hub = PriceHub(exchange, poll_interval_s=0.05, position_interval_s=0.2, max_backoff_s=0.2)
    deps = Dependencies(exchange=exchange, redis=redis_client, policy=TEST_POLICY, risk=risk_settings, hub=hub,
                        settings=WorkerSettings(execution_rate_per_s=0))
    queues = [TRADE_WORKFLOWS, TRADE_EXECUTION, TRADE_MARKET]  # no monitor: see the module's docstring
    async with running(build_workers(temporal_client, queues, deps)):
        yield TradeRig(temporal_client, paper, redis_client, exchange)
    await hub.close()


async def reconcile(rig: TradeRig, orphans: OrphanMode = OrphanMode.REPORT) -> ReconcileReport:
    return await rig.client.execute_workflow(
        "ReconcileWorkflow", ReconcileRequest(orphans=orphans, confirm_s=0.5),
        id=f"reconcile-test-{uuid.uuid4().hex[:8]}", task_queue=TRADE_WORKFLOWS, result_type=ReconcileReport)


def kinds(report: ReconcileReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.kind.value, []).append(f.symbol)
    return out


def outcome(report: ReconcileReport, kind: FindingKind):
    return next(o for o in report.outcomes if o.kind is kind)


async def open_trade(rig: TradeRig, symbol="BTCUSDT", price=63000):
    rig.paper.set_price(symbol, price)
    handle = await rig.start(rig.intent(symbol, "BUY", price))
    return handle, await rig.wait_status(handle, "OPEN")


async def open_orders(exchange, symbol, trigger=False) -> dict[str, dict]:
    orders = await exchange.fetch_open_orders(symbol, params={"trigger": True} if trigger else {})
    return {o["clientOrderId"]: o for o in orders}


async def contracts(exchange, symbol) -> float:
    return sum(p["contracts"] or 0 for p in await exchange.fetch_positions([symbol]))


async def test_an_account_that_agrees_has_nothing_to_fix_and_the_report_is_published(rig, paper, redis_client):
    handle, _ = await open_trade(rig)
    report = await reconcile(rig)
    assert report.complete and report.findings == [], report
    assert (report.positions, report.running_trades) == (1, 1)
    events = await redis_client.xrange(RECONCILE_EVENTS_STREAM)
    assert [e[1]["type"] for e in events] == ["run"] and events[0][1]["run_id"] == report.run_id
    assert json.loads(await redis_client.get(RECONCILE_LAST_REPORT_KEY))["run_id"] == report.run_id
    await handle.execute_update("close", {})


async def test_orphan_position_and_its_orders_are_flattened_and_another_bots_order_is_left(rig, paper, exchange):
    paper.set_price("ETHUSDT", 3400)
    await exchange.create_order(ETH, "market", "buy", 0.5)  # no workflow behind it
    dead_stop = client_order_id("trade-gone", "sl-1", "a1b2c3")  # a trade that ended, its stop left
    await exchange.create_order(ETH, "market", "sell", 0.5, params={
        "triggerPrice": 3000, "reduceOnly": True, "clientOrderId": dead_stop})
    await exchange.create_order(ETH, "limit", "buy", 0.1, 3000, params={"clientOrderId": FOREIGN_CID})

    report = await reconcile(rig, OrphanMode.FLATTEN)

    assert report.complete
    assert kinds(report) == {"orphan_position": ["ETHUSDT"], "orphan_order": ["ETHUSDT"]}, report.findings
    assert all(o.done for o in report.outcomes), report.outcomes
    assert await contracts(exchange, ETH) == 0
    assert dead_stop not in await open_orders(exchange, ETH, trigger=True)
    assert FOREIGN_CID in await open_orders(exchange, ETH)  # not ours: never touched
    assert await rig.redis.get(LOCK_KEY.format(symbol="ETHUSDT")) is None  # held for the close only
    again = await reconcile(rig, OrphanMode.FLATTEN)
    assert again.complete and again.findings == [], again.findings


async def test_an_orphan_position_in_report_mode_is_told_and_its_stop_kept(rig, paper, exchange):
    paper.set_price("ETHUSDT", 3400)
    await exchange.create_order(ETH, "market", "buy", 0.5)
    kept_stop = client_order_id("trade-gone", "sl-1", "a1b2c3")
    await exchange.create_order(ETH, "market", "sell", 0.5, params={
        "triggerPrice": 3000, "reduceOnly": True, "clientOrderId": kept_stop})

    report = await reconcile(rig, OrphanMode.REPORT)

    assert {(f.kind, f.action) for f in report.findings} == {
        (FindingKind.ORPHAN_POSITION, Action.REPORT), (FindingKind.ORPHAN_ORDER, Action.REPORT)}
    assert "protects the ETHUSDT position" in next(f.detail for f in report.findings if f.kind is FindingKind.ORPHAN_ORDER)
    assert await contracts(exchange, ETH) == 0.5
    assert kept_stop in await open_orders(exchange, ETH, trigger=True)  # the position stays protected


async def test_an_orphan_position_is_adopted_protected_and_managed_to_a_close(rig, paper, exchange):
    paper.set_price("XRPUSDT", "2.5")
    await exchange.create_order(XRP, "market", "sell", 100)  # a short nobody manages

    report = await reconcile(rig, OrphanMode.ADOPT)

    adopted = outcome(report, FindingKind.ORPHAN_POSITION)
    assert adopted.done and adopted.detail.startswith("adopted by adopt-xrpusdt-"), adopted
    handle = rig.client.get_workflow_handle(adopted.detail.removeprefix("adopted by "))
    state = await rig.wait_status(handle, "OPEN")
    assert (state.open_qty, state.entry_price, state.adopted.quantity) == (D(100), D("2.5"), D(100))
    assert state.stop_client_id is not None and state.exit.stop > D("2.5")  # a short's stop is above
    stops = await open_orders(exchange, XRP, trigger=True)
    assert stops[state.stop_client_id]["amount"] == 100 and stops[state.stop_client_id]["reduceOnly"]
    assert not [line for line in paper.audit(symbol="XRPUSDT") if line["path"] == "/fapi/v1/order"
                and line["method"] == "POST" and line.get("client_id", "").endswith("-entry")]
    again = await reconcile(rig, OrphanMode.ADOPT)
    assert again.findings == [], again.findings  # the adopter owns the symbol now

    paper.set_price("XRPUSDT", "2.4")
    result = await handle.execute_update("close", {"reason": "test"}, result_type=TradeResult)
    assert result.status is TradeStatus.CLOSED and result.exit_reason is ExitReason.MANUAL
    assert result.realized_pnl is not None and result.realized_pnl > 0  # short 2.5 → 2.4, less fees
    assert await contracts(exchange, XRP) == 0
    assert await open_orders(exchange, XRP, trigger=True) == {}


async def test_a_vanished_position_ends_the_trade_with_the_reason_the_exchange_shows(rig, paper, exchange):
    handle, state = await open_trade(rig)
    await exchange.create_order(BTC, "market", "sell", float(state.open_qty), params={
        "reduceOnly": True, "clientOrderId": FOREIGN_CID})  # closed by hand, behind the workflow

    report = await reconcile(rig)

    assert kinds(report) == {"vanished_position": ["BTCUSDT"]}, report.findings
    assert outcome(report, FindingKind.VANISHED_POSITION).done
    result = await rig.result(handle)
    assert (result.status, result.exit_reason) == (TradeStatus.CLOSED, ExitReason.EXTERNAL)
    assert await open_orders(exchange, BTC, trigger=True) == {}  # its stop cancelled at the close


async def test_a_size_mismatch_is_adopted_and_the_stop_resized(rig, paper, exchange):
    handle, state = await open_trade(rig)
    sold = D("0.005")
    half = state.open_qty - sold  # what is left
    await exchange.create_order(BTC, "market", "sell", float(sold), params={"reduceOnly": True})

    report = await reconcile(rig)

    assert kinds(report) == {"size_mismatch": ["BTCUSDT"]}, report.findings
    after = await rig.wait_for(handle, lambda s: s.open_qty == half and s.stop_seq == 2)
    stops = await open_orders(exchange, BTC, trigger=True)
    assert list(stops) == [trade_cid(handle, "sl-2")] and D(str(stops[trade_cid(handle, "sl-2")]["amount"])) == half
    assert after.exit.stop == state.exit.stop and after.status is TradeStatus.OPEN
    await handle.execute_update("close", {})


async def test_a_stop_cancelled_behind_the_workflow_is_placed_again(rig, paper, exchange):
    handle, state = await open_trade(rig)
    await exchange.cancel_order(None, BTC, {"clientOrderId": state.stop_client_id, "trigger": True})
    assert await open_orders(exchange, BTC, trigger=True) == {}

    report = await reconcile(rig)

    assert kinds(report) == {"missing_stop": ["BTCUSDT"]}, report.findings
    after = await rig.wait_for(handle, lambda s: s.stop_seq == 2)
    stops = await open_orders(exchange, BTC, trigger=True)
    assert list(stops) == [trade_cid(handle, "sl-2")]
    assert D(str(stops[trade_cid(handle, "sl-2")]["triggerPrice"])) == state.exit.stop == after.exit.stop
    again = await reconcile(rig)
    assert again.findings == [], again.findings
    await handle.execute_update("close", {})


async def test_locks_and_position_hashes_of_ended_workflows_are_released(rig, paper, redis_client):
    handle, _ = await open_trade(rig)
    await redis_client.set(LOCK_KEY.format(symbol="XRPUSDT"), "trade-long-gone")
    await redis_client.hset(POSITION_KEY.format(symbol="XRPUSDT"), mapping={"workflow_id": "trade-long-gone"})
    await redis_client.hset(POSITION_KEY.format(symbol="DOGEUSDT"), mapping={"plan_id": "old-system-7"})

    report = await reconcile(rig)

    assert kinds(report) == {"orphan_lock": ["XRPUSDT"], "stale_position_hash": ["DOGEUSDT", "XRPUSDT"]}
    assert await redis_client.get(LOCK_KEY.format(symbol="XRPUSDT")) is None
    assert not await redis_client.exists(POSITION_KEY.format(symbol="XRPUSDT"))
    assert await redis_client.exists(POSITION_KEY.format(symbol="DOGEUSDT"))  # no owner to check: reported
    assert await redis_client.get(LOCK_KEY.format(symbol="BTCUSDT")) == handle.id  # a live trade's lock stays
    await handle.execute_update("close", {})


async def test_it_fails_closed_when_the_exchange_answers_5xx(rig, paper, exchange):
    paper.set_price("ETHUSDT", 3400)
    dead_stop = client_order_id("trade-gone", "sl-1", "a1b2c3")
    await exchange.create_order(ETH, "market", "buy", 0.5)
    await exchange.create_order(ETH, "market", "sell", 0.5, params={
        "triggerPrice": 3000, "reduceOnly": True, "clientOrderId": dead_stop})
    paper.add_fault(path="/fapi/v1/openAlgoOrders", status=503, code=-1001, count=50)

    report = await reconcile(rig, OrphanMode.FLATTEN)

    paper.clear_faults()
    assert not report.complete and report.findings == [] and report.outcomes == []
    assert any("exchange" in p for p in report.problems), report.problems
    assert await contracts(exchange, ETH) == 0.5  # nothing changed
    assert dead_stop in await open_orders(exchange, ETH, trigger=True)


async def test_a_trade_whose_workflow_was_terminated_leaves_an_orphan_that_is_adopted(rig, paper, exchange):
    handle, state = await open_trade(rig, "BTCUSDT", 63000)
    await handle.terminate("deleted behind the system's back")
    assert (await handle.describe()).status is WorkflowExecutionStatus.TERMINATED

    report = await reconcile(rig, OrphanMode.ADOPT)

    found = {(f.kind, f.action) for f in report.findings}
    assert (FindingKind.ORPHAN_POSITION, Action.ADOPT) in found
    assert (FindingKind.ORPHAN_LOCK, Action.REPORT) in found  # handed to the adopter by its gates, atomically
    adopter = rig.client.get_workflow_handle(outcome(report, FindingKind.ORPHAN_POSITION).detail.removeprefix("adopted by "))
    adopted = await rig.wait_status(adopter, "OPEN", "REJECTED")
    assert adopted.status is TradeStatus.OPEN, adopted.reason
    assert adopted.open_qty == state.open_qty
    # The dead trade's stop is kept until the adopter's own stop rests; the next run cancels it.
    await asyncio.sleep(0.5)
    later = await reconcile(rig, OrphanMode.ADOPT)
    assert kinds(later) == {"orphan_order": ["BTCUSDT"]}, later.findings
    assert list(await open_orders(exchange, BTC, trigger=True)) == [adopted.stop_client_id]
    await adopter.execute_update("close", {})
