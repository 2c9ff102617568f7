"""Account-level safety: safe mode (no new trades; TTL, reason, who) and the kill switch (safe
mode on and every open trade killed, with a report of what was flattened).

Both live in the old system's Redis keys (`quantum:safety:*`), which the gates read, so a
switch set here stops the very next gate, and the old tools still see it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from common.redis_keys import KILL_SWITCH_KEY, SAFE_MODE_KEY
from common import safe_mode
from api.schemas import UNREADABLE_BODY, KilledTrade, KillSwitchReport, KillSwitchRequest, SafeModeRequest, SafeModeView
from api.security import TOKEN_ERRORS, require_token
from api.services import Services, services
from exchange.parse import positions_of
from common import search_attributes as sa
from workflows.starter import WORKFLOW_TYPE
from workflows.trade_state import TradeResult

router = APIRouter(prefix="/api/v1", tags=["safety"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)

# Trades that may hold or open a position: the kill switch cancels every one of them.
_LIVE = ("PENDING", "OPENING", "OPEN", "CLOSING")


async def _safe_mode(svc: Services) -> SafeModeView:
    mode = await safe_mode.read_safe_mode(svc.redis)
    return SafeModeView(active=mode.active, reason=mode.reason, set_by=mode.set_by, origin=mode.origin,
                        since_ms=mode.since_ms, ttl_s=mode.ttl_s)


@router.get("/safe-mode", response_model=SafeModeView, summary="Is safe mode on, since when, why, set by whom")
async def get_safe_mode(svc: Services = Depends(services)) -> SafeModeView:
    return await _safe_mode(svc)


@router.put("/safe-mode", response_model=SafeModeView, responses=UNREADABLE_BODY,
            summary="Safe mode on: the gates refuse every new trade")
async def set_safe_mode(request: SafeModeRequest, svc: Services = Depends(services)) -> SafeModeView:
    await safe_mode.set_safe_mode(svc.redis, reason=request.reason, ttl_s=request.ttl_s, set_by=request.set_by)
    return await _safe_mode(svc)


@router.delete("/safe-mode", response_model=SafeModeView,
               summary="Safe mode off (whoever set it: an operator, the kill switch or the circuit breaker, "
                       "whose failure counts start again from zero)")
async def safe_mode_off(svc: Services = Depends(services)) -> SafeModeView:
    await safe_mode.clear_safe_mode(svc.redis)
    return await _safe_mode(svc)


@router.post("/kill-switch", response_model=KillSwitchReport, responses=UNREADABLE_BODY,
             summary="Kill switch: safe mode on, every open trade killed (flattened), and what is left")
async def kill_switch_on(request: KillSwitchRequest, svc: Services = Depends(services)) -> KillSwitchReport:
    value = safe_mode.safe_mode_value(request.reason, request.set_by, origin="kill_switch")
    async with svc.redis.pipeline(transaction=True) as pipe:  # no new trade from here on
        pipe.set(KILL_SWITCH_KEY, value).set(SAFE_MODE_KEY, value)
        await pipe.execute()
    live = " OR ".join(f"{sa.TRADE_STATUS.name} = '{s}'" for s in _LIVE)
    query = f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND ({live})"
    handles = [svc.temporal.get_workflow_handle(w.id, result_type=TradeResult)
               async for w in svc.temporal.list_workflows(query)]
    for handle in handles:
        try:
            await handle.cancel()
        except RPCError:
            pass  # ended meanwhile: its result says how
    killed, still_running = [], []
    results = await asyncio.gather(*(asyncio.wait_for(h.result(), request.wait_s) for h in handles),
                                   return_exceptions=True)
    for handle, result in zip(handles, results):
        if isinstance(result, TradeResult):
            killed.append(KilledTrade(workflow_id=handle.id, status=result.status.value,
                                      exit_reason=result.exit_reason, realized_pnl=result.realized_pnl,
                                      reason=result.reason))
        elif isinstance(result, TimeoutError):
            still_running.append(handle.id)
        else:
            description = await handle.describe()
            killed.append(KilledTrade(workflow_id=handle.id, status=(description.status or
                                      WorkflowExecutionStatus.RUNNING).name, reason=str(result)))
    return KillSwitchReport(active=True, safe_mode=await _safe_mode(svc), killed=killed,
                            still_running=still_running, open_positions=await _open_positions(svc))


@router.delete("/kill-switch", response_model=KillSwitchReport,
               summary="Kill switch off (safe mode stays on until cleared: DELETE /safe-mode)")
async def kill_switch_off(svc: Services = Depends(services)) -> KillSwitchReport:
    await svc.redis.delete(KILL_SWITCH_KEY)
    return KillSwitchReport(active=False, safe_mode=await _safe_mode(svc),
                            open_positions=await _open_positions(svc))


async def _open_positions(svc: Services) -> list[str]:
    exchange = await svc.market_exchange()
    return sorted({p.symbol for p in positions_of(await exchange.fetch_positions())})
