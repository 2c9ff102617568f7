"""Reconciliation: the last report, and a run now (the Schedule is triggered, so a run that is
already going is waited for, never doubled)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from activities.schemas.reconcile import ReconcileReport
from api.reconcile_metrics import read_last_report
from api.security import TOKEN_ERRORS, require_token
from api.services import Services, services
from workflows.reconcile_schedule import run_reconcile_now

router = APIRouter(prefix="/api/v1", tags=["reconcile"], dependencies=[Depends(require_token)],
                   responses=TOKEN_ERRORS)


@router.get("/reconcile", response_model=ReconcileReport,
            responses={404: {"description": "no reconcile run has reported yet"}},
            summary="The last reconcile run's report: what the exchange, the open trades and Redis "
                    "disagreed on, and what was done")
async def last_report(svc: Services = Depends(services)) -> ReconcileReport:
    report = await read_last_report(svc.redis)
    if report is None:
        raise HTTPException(404, "no reconcile run has reported yet (a workflow worker runs one when it starts)")
    return report


@router.post("/reconcile", response_model=ReconcileReport,
             responses={504: {"description": "no run ended within wait_s (is a trade-workflows worker up?)"}},
             summary="Reconcile now and answer with the report")
async def reconcile_now(wait_s: float = Query(120, gt=0, le=600, description="how long to wait for the run"),
                        svc: Services = Depends(services)) -> ReconcileReport:
    try:
        return await run_reconcile_now(svc.temporal, timeout_s=wait_s)
    except TimeoutError as err:
        raise HTTPException(504, str(err) or f"no reconcile run ended within {wait_s:g}s") from None
