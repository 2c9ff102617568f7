"""Account-level safety: safe mode (no new trades; TTL, reason, who) and the kill switch (safe
mode on and every open trade killed, with a report of what was flattened).

Both live in the old system's Redis keys (`quantum:safety:*`), which the gates read, so a
switch set here stops the very next gate, and the old tools still see it.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from common.redis_keys import KILL_SWITCH_KEY, SAFE_MODE_KEY
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
    raw, ttl = await asyncio.gather(svc.redis.get(SAFE_MODE_KEY), svc.redis.ttl(SAFE_MODE_KEY))
    if raw is None:
        return SafeModeView(active=False)
    try:
        value = json.loads(raw)
    except ValueError:
        value = {"reason": raw}  # set by an old tool as plain text
    if not isinstance(value, dict):
        value = {"reason": str(value)}
    return SafeModeView(active=True, reason=value.get("reason"), set_by=value.get("set_by"),
                        since_ms=value.get("since_ms"), ttl_s=ttl if ttl >= 0 else None)


@router.get("/safe-mode", response_model=SafeModeView, summary="Is safe mode on, since when, why, set by whom")
async def get_safe_mode(svc: Services = Depends(services)) -> SafeModeView:
    return await _safe_mode(svc)


@router.put("/safe-mode", response_model=SafeModeView, responses=UNREADABLE_BODY,
            summary="Safe mode on: the gates refuse every new trade")
async def set_safe_mode(request: SafeModeRequest, svc: Services = Depends(services)) -> SafeModeView:
    value = {"reason": request.reason, "set_by": request.set_by, "since_ms": int(time.time() * 1000)}
    await svc.redis.set(SAFE_MODE_KEY, json.dumps(value), ex=request.ttl_s)
    return await _safe_mode(svc)


@router.delete("/safe-mode", response_model=SafeModeView, summary="Safe mode off")
async def clear_safe_mode(svc: Services = Depends(services)) -> SafeModeView:
    await svc.redis.delete(SAFE_MODE_KEY)
    return await _safe_mode(svc)


@router.post("/kill-switch", response_model=KillSwitchReport, responses=UNREADABLE_BODY,
             summary="Kill switch: safe mode on, every open trade killed (flattened), and what is left")
async def kill_switch_on(request: KillSwitchRequest, svc: Services = Depends(services)) -> KillSwitchReport:
    since = int(time.time() * 1000)
    value = json.dumps({"reason": request.reason, "set_by": request.set_by, "since_ms": since})
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
