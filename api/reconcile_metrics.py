"""Reconciliation in Prometheus format: the last report (from Redis) as gauges, refreshed when
`/metrics` is scraped, so the API process needs no state of its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge

from activities.schemas.reconcile import ReconcileReport
from common.redis_keys import RECONCILE_LAST_REPORT_KEY
from trading.reconcile import FindingKind

LAST_RUN = Gauge("qt_reconcile_last_run_timestamp_seconds", "When the last reconcile run ended (unix time)")
COMPLETE = Gauge("qt_reconcile_last_run_complete", "1 if every book answered in the last run, else 0 (nothing changed)")
FINDINGS = Gauge("qt_reconcile_findings", "Confirmed findings of the last run", ["kind"])
ACTIONS_FAILED = Gauge("qt_reconcile_actions_failed", "Actions of the last run that did not succeed")


async def read_last_report(redis: Any) -> ReconcileReport | None:
    raw = await redis.get(RECONCILE_LAST_REPORT_KEY)
    return ReconcileReport.model_validate_json(raw) if raw else None


async def refresh(redis: Any) -> None:
    report = await read_last_report(redis)
    if report is None:
        return
    LAST_RUN.set((report.finished_ms or report.started_ms) / 1000)
    COMPLETE.set(1 if report.complete else 0)
    for kind in FindingKind:
        FINDINGS.labels(kind=kind.value).set(sum(1 for f in report.findings if f.kind is kind))
    ACTIONS_FAILED.set(sum(1 for o in report.outcomes if not o.done))
