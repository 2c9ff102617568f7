"""Arguments and results of the reconciliation activities (`activities/reconcile.py`) and the
ReconcileWorkflow's report; the snapshot and the findings are `trading/reconcile.py`'s."""

from __future__ import annotations

from pydantic import BaseModel, Field

from trading.reconcile import Action, Finding, FindingKind, OrphanMode


class SnapshotRequest(BaseModel):
    # Open trades whose `state` query takes longer are left unchecked this run (still owners).
    query_timeout_s: float = 5.0


class ActRequest(BaseModel):
    run_id: str  # the ReconcileWorkflow run: flatten orders' client ids derive from it
    findings: list[Finding]


class ActionOutcome(BaseModel):
    kind: FindingKind
    action: Action
    symbol: str
    done: bool
    detail: str
    workflow_id: str | None = None
    client_order_id: str | None = None


class ReconcileReport(BaseModel):
    """One run: what it saw, what it did. Published to `quantum:stream:reconcile.events` and
    kept as the last report (API, `qt reconcile`, Prometheus)."""

    run_id: str
    workflow_id: str
    started_ms: int
    finished_ms: int | None = None
    orphans: OrphanMode
    complete: bool  # False: a book answered partly or not at all, nothing was changed
    problems: list[str] = Field(default_factory=list)
    positions: int = 0
    open_orders: int = 0
    running_trades: int = 0
    unchecked_trades: list[str] = Field(default_factory=list)  # their state query did not answer
    findings: list[Finding] = Field(default_factory=list)  # confirmed by the second look
    unconfirmed: list[Finding] = Field(default_factory=list)  # seen once only: left alone
    outcomes: list[ActionOutcome] = Field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.complete and not self.findings
