"""ReconcileWorkflow: compare the account's three books and fix what they disagree on.

Started by its Temporal Schedule (`workflows/reconcile_schedule.py`: every 60 s, overlap SKIP,
and once when a worker starts) or by `qt reconcile` (which triggers the same Schedule). One run:

    snapshot → findings → (something to do?) wait `confirm_s`, snapshot again, keep what both saw
    → act → report

- the decisions are `trading/reconcile.py`'s (`find_discrepancies`, `confirmed`);
- an incomplete snapshot (the exchange, visibility or Redis answered partly or not at all)
  changes nothing: the run reports the problem and ends (fail closed);
- a trade's own troubles (its position vanished or changed size, its stop is not resting) are
  told to its workflow by the `reconcile` signal; the TradeWorkflow reads the exchange itself
  and acts (it owns its trade);
- an orphan position is adopted by a new TradeWorkflow (a child with ParentClosePolicy ABANDON:
  it outlives this run), flattened, or only reported (`QT_RECONCILE_ORPHANS`);
- orphan orders, locks and position hashes are handled by one activity (`reconcile_act`);
- the report goes to `quantum:stream:reconcile.events` and the last report (API, metrics) and is
  this workflow's result.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.schemas.reconcile import ActionOutcome, ActRequest, ReconcileReport, SnapshotRequest
    from common.task_queues import TRADE_WORKFLOWS
    import common.search_attributes as sa
    from trading.client_ids import run_tag
    from trading.models import TradeStatus
    from trading.reconcile import (
        AccountSnapshot, Action, Finding, OrphanMode, actionable, confirmed, find_discrepancies,
    )
    import workflows.activity_calls as calls
    from activities.schemas.gates import AdoptPosition
    from workflows.trade_state import ReconcileNotice

WORKFLOW_TYPE = "ReconcileWorkflow"
_BY_ACTIVITY = (Action.CANCEL, Action.RELEASE, Action.REMOVE, Action.FLATTEN)


class ReconcileRequest(BaseModel):
    """The run's settings (the Schedule carries `QT_RECONCILE_*` as they were when a worker
    created or updated it)."""

    orphans: OrphanMode = OrphanMode.ADOPT
    confirm_s: float = 5.0


def adopt_workflow_id(symbol: str, run_id: str) -> str:
    return f"adopt-{symbol.lower()}-{run_tag(run_id)}"


@workflow.defn(name=WORKFLOW_TYPE)
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._report: ReconcileReport | None = None

    @workflow.query(name="report")
    def report(self) -> ReconcileReport | None:
        return self._report

    @workflow.run
    async def run(self, request: ReconcileRequest | None = None) -> ReconcileReport:
        request = request or ReconcileRequest()
        info = workflow.info()
        report = self._report = ReconcileReport(
            run_id=info.run_id, workflow_id=info.workflow_id, started_ms=self._now_ms(),
            orphans=request.orphans, complete=True)
        first = await self._snapshot(report)
        if first is not None:
            found = find_discrepancies(first, request.orphans)
            if actionable(found) and request.confirm_s > 0:
                # A second look: what a trade between two of its steps shows for a moment
                # (or visibility a second behind) is not there any more.
                await workflow.sleep(timedelta(seconds=request.confirm_s))
                second = await self._snapshot(report)
                if second is not None:
                    again = find_discrepancies(second, request.orphans)
                    report.findings = confirmed(found, again)
                    kept = {f.key for f in report.findings}
                    report.unconfirmed = [f for f in [*found, *again] if f.key not in kept]
            else:
                report.findings = found
            if report.complete:
                report.outcomes = await self._act(report.findings)
        report.finished_ms = self._now_ms()
        try:
            await workflow.execute_activity(calls.PUBLISH_RECONCILE_REPORT.name, report,
                                            **calls.PUBLISH_RECONCILE_REPORT.options())
        except ActivityError as err:
            report.problems.append(f"report not published: {err.cause or err}")
        return report

    async def _snapshot(self, report: ReconcileReport) -> AccountSnapshot | None:
        """A snapshot, or None (and the report marked incomplete) when a book did not answer."""
        try:
            snap = await workflow.execute_activity(calls.RECONCILE_SNAPSHOT.name, SnapshotRequest(),
                                                   **calls.RECONCILE_SNAPSHOT.options())
        except ActivityError as err:
            snap = AccountSnapshot(taken_at_ms=self._now_ms(), problems=[f"snapshot failed: {err.cause or err}"])
        report.positions, report.open_orders, report.running_trades = (
            len(snap.positions), len(snap.orders), len(snap.trades))
        report.unchecked_trades = snap.unchecked
        if snap.complete:
            return snap
        report.complete = False
        report.problems.extend(snap.problems)
        report.findings, report.unconfirmed = [], []
        return None

    async def _act(self, findings: list[Finding]) -> list[ActionOutcome]:
        outcomes: list[ActionOutcome] = []
        by_activity = [f for f in findings if f.action in _BY_ACTIVITY]
        if by_activity:
            try:
                outcomes += await workflow.execute_activity(
                    calls.RECONCILE_ACT.name, ActRequest(run_id=workflow.info().run_id, findings=by_activity),
                    **calls.RECONCILE_ACT.options())
            except ActivityError as err:
                outcomes += [self._outcome(f, False, f"failed: {err.cause or err}") for f in by_activity]
        for finding in findings:
            if finding.action is Action.TELL_WORKFLOW:
                outcomes.append(await self._tell(finding))
            elif finding.action is Action.ADOPT:
                outcomes.append(await self._adopt(finding))
        return outcomes

    async def _tell(self, finding: Finding) -> ActionOutcome:
        notice = ReconcileNotice(kind=finding.kind, detail=finding.detail, run_id=workflow.info().run_id)
        try:
            await workflow.get_external_workflow_handle(finding.workflow_id).signal("reconcile", notice)
        except FailureError as err:  # it ended meanwhile: the next run sees what is left
            return self._outcome(finding, False, f"not told: {err}")
        return self._outcome(finding, True, "told: the workflow checks the exchange and acts")

    async def _adopt(self, finding: Finding) -> ActionOutcome:
        """A TradeWorkflow takes the orphan position over: it skips the entry, takes the real size
        and price, places its stop at once and manages the trade to its close."""
        quantity, price = finding.quantity, finding.entry_price
        if not quantity or not price:
            return self._outcome(finding, False, "not adopted: the exchange gave no size or entry price")
        side = "BUY" if quantity > 0 else "SELL"
        workflow_id = adopt_workflow_id(finding.symbol, workflow.info().run_id)
        now = workflow.now().astimezone(UTC)
        intent = {
            "intent_id": workflow_id, "symbol": finding.symbol, "side": side, "confidence": "1",
            "entry_price": str(price), "position_size_usd": str(abs(quantity) * price),
            "leverage": str(finding.leverage or 1), "timestamp": now.isoformat(),
            "model": "adopted", "source": "reconcile",
            "reason": f"orphan position adopted by reconcile run {workflow.info().run_id}",
        }
        adopt = AdoptPosition(quantity=abs(quantity), entry_price=price, leverage=finding.leverage,
                              seen_at_ms=self._now_ms(), reconcile_run_id=workflow.info().run_id,
                              takes_lock_from=finding.lock_owner)
        try:
            await workflow.start_child_workflow(
                "TradeWorkflow", args=[intent, None, None, adopt], id=workflow_id, task_queue=TRADE_WORKFLOWS,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"adopt {side} {abs(quantity)} {finding.symbol} @ {price}",
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(sa.SYMBOL, finding.symbol), SearchAttributePair(sa.SIDE, side),
                    SearchAttributePair(sa.TRADE_STATUS, TradeStatus.PENDING.value),
                    SearchAttributePair(sa.INTENT_SOURCE, "reconcile"),
                    SearchAttributePair(sa.MODEL_VERSION, "adopted"),
                    SearchAttributePair(sa.LEVERAGE, float(finding.leverage or 1)),
                    SearchAttributePair(sa.CONFIDENCE, 1.0)]))
        except WorkflowAlreadyStartedError:  # (a retried task of this run started it already)
            pass
        return self._outcome(finding, True, f"adopted by {workflow_id}")

    @staticmethod
    def _outcome(finding: Finding, done: bool, detail: str) -> ActionOutcome:
        return ActionOutcome(kind=finding.kind, action=finding.action, symbol=finding.symbol, done=done,
                             detail=detail, workflow_id=finding.workflow_id,
                             client_order_id=finding.client_order_id)

    @staticmethod
    def _now_ms() -> int:
        return int(workflow.now().timestamp() * 1000)
