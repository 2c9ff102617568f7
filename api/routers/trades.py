"""Trades: list and filter through Temporal visibility (search attributes), inspect one (its
`state` query, or its result from history once closed), and act on it through the workflow's
own updates, signals, cancellation and termination.

Errors: 404 unknown trade, 409 acting on a trade that is closed or already closing, 422 a
change the workflow's validator refuses (its message is the detail), 503 when no worker answers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import (UNREADABLE_BODY, Accepted, AdjustRequest, Problem, TerminateRequest, TradeDetail, TradePage,
                         TradeSummary)
from api.security import TOKEN_ERRORS, require_token
from api.services import Services, services
from trading.models import ExitReason, Side, TradeStatus
from common import search_attributes as sa
from workflows.starter import WORKFLOW_TYPE
from workflows.trade_state import AdjustLevelsResult, CloseRequest, TradeResult, TradeState

router = APIRouter(prefix="/api/v1/trades", tags=["trades"], dependencies=[Depends(require_token)],
                   responses=TOKEN_ERRORS)

WorkflowId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
                                 description="the trade's workflow id, e.g. trade-x1")]
_LABEL = r"^[A-Za-z0-9._:/-]{1,128}$"  # model / source: safe inside a visibility query
_QUERY_TIMEOUT = timedelta(seconds=5)


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _page_mac(request: Request, query: str, raw: bytes) -> bytes:
    """Page tokens are Temporal's, signed for their query: any other string never reaches Temporal
    (which answers a forged one with an internal error, retried for seconds)."""
    return hmac.digest(request.app.state.token.encode(), query.encode() + b"\0" + raw, "sha256")[:16]


_NOT_FOUND = {404: {"model": Problem, "description": "no trade with this id"}}
_ACTION_ERRORS = {**_NOT_FOUND, 409: {"model": Problem, "description": "the trade is closed or already closing"},
                  503: {"model": Problem, "description": "Temporal refused the call"}}
_REFUSED = {422: {"model": Problem, "description": "an invalid field (named in `loc`), or the refusal in words"}}
_BODY_ACTION_ERRORS = {**_ACTION_ERRORS, **UNREADABLE_BODY}


@router.get("", response_model=TradePage, summary="List trades, newest first, filtered by search attributes",
            responses=_REFUSED)
async def list_trades(
    request: Request,
    svc: Services = Depends(services),
    status_: Annotated[TradeStatus | None, Query(alias="status")] = None,
    symbol: Annotated[str | None, Query(pattern=r"^[A-Z0-9]{2,24}USDT$")] = None,
    side: Side | None = None,
    exit_reason: ExitReason | None = None,
    model: Annotated[str | None, Query(pattern=_LABEL)] = None,
    source: Annotated[str | None, Query(pattern=_LABEL)] = None,
    since: Annotated[datetime | None, Query(description="started at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="started before (ISO 8601)")] = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> TradePage:
    clauses = [f"WorkflowType = {_quoted(WORKFLOW_TYPE)}"]
    for key, value in ((sa.TRADE_STATUS, status_), (sa.SYMBOL, symbol), (sa.SIDE, side),
                       (sa.EXIT_REASON, exit_reason), (sa.MODEL_VERSION, model), (sa.INTENT_SOURCE, source)):
        if value is not None:
            clauses.append(f"{key.name} = {_quoted(getattr(value, 'value', value))}")
    if since is not None:
        clauses.append(f"StartTime >= {_quoted(since.isoformat())}")
    if until is not None:
        clauses.append(f"StartTime < {_quoted(until.isoformat())}")
    query, token = " AND ".join(clauses), None
    if page_token:
        try:
            signed = base64.urlsafe_b64decode(page_token.encode())
        except (binascii.Error, ValueError):
            signed = b""
        token = signed[16:]
        if not token or not hmac.compare_digest(signed[:16], _page_mac(request, query, token)):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                "page_token is not a token this API gave for these filters")
    pages = svc.temporal.list_workflows(query, page_size=page_size, next_page_token=token)
    try:
        await pages.fetch_next_page()
    except RPCError as err:
        if err.status is RPCStatusCode.INVALID_ARGUMENT:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"query refused: {err.message}") from None
        raise
    trades = [summary_of(svc, w) for w in pages.current_page or []]
    # Visibility lists running trades first, then closed ones by close time; newest first in each.
    trades.sort(key=lambda t: (t.closed_at is None, t.closed_at or t.started_at, t.started_at), reverse=True)
    raw = pages.next_page_token
    next_token = base64.urlsafe_b64encode(_page_mac(request, query, raw) + raw).decode() if raw else None
    return TradePage(trades=trades, next_page_token=next_token)


def summary_of(svc: Services, w: WorkflowExecution) -> TradeSummary:
    attrs = w.typed_search_attributes
    return TradeSummary(
        workflow_id=w.id, run_id=w.run_id, status=attrs.get(sa.TRADE_STATUS),
        execution_status=w.status.name if w.status else "UNKNOWN",
        symbol=attrs.get(sa.SYMBOL), side=attrs.get(sa.SIDE), exit_reason=attrs.get(sa.EXIT_REASON),
        realized_pnl=attrs.get(sa.REALIZED_PNL), leverage=attrs.get(sa.LEVERAGE),
        confidence=attrs.get(sa.CONFIDENCE), model=attrs.get(sa.MODEL_VERSION), source=attrs.get(sa.INTENT_SOURCE),
        started_at=w.start_time, closed_at=w.close_time, web_ui_url=svc.web_ui_url(w.id, w.run_id))


@router.get("/{workflow_id}", response_model=TradeDetail, responses=_NOT_FOUND,
            summary="One trade: its live state (stage, levels, orders, PnL, gates, notes) or its result")
async def get_trade(workflow_id: WorkflowId, svc: Services = Depends(services)) -> TradeDetail:
    handle = svc.temporal.get_workflow_handle(workflow_id, result_type=TradeResult)
    description = await _describe(handle)
    closed = description.status is not WorkflowExecutionStatus.RUNNING
    key = (workflow_id, description.run_id)
    if closed and (known := svc.closed_details.get(key)) is not None:
        return known
    detail = TradeDetail(workflow_id=workflow_id, run_id=description.run_id,
                         execution_status=description.status.name if description.status else "UNKNOWN",
                         web_ui_url=svc.web_ui_url(workflow_id, description.run_id))
    state, result = await asyncio.gather(
        handle.query("state", result_type=TradeState, rpc_timeout=_QUERY_TIMEOUT),
        handle.result(rpc_timeout=_QUERY_TIMEOUT) if description.status is WorkflowExecutionStatus.COMPLETED
        else asyncio.sleep(0), return_exceptions=True)
    if isinstance(result, BaseException):
        raise result
    detail.result = result
    if isinstance(state, BaseException):  # no worker, or the query failed: say so (not kept)
        detail.note = f"state not available ({type(state).__name__}: {state})"
    else:
        detail.state = state
        if closed:
            svc.closed_details.put(key, detail)
    return detail


# ===================================================================================== actions


@router.post("/{workflow_id}/close", response_model=TradeResult, responses={**_BODY_ACTION_ERRORS, **_REFUSED},
             summary="Close at market now (the `close` update); answers with the trade's result")
async def close_trade(workflow_id: WorkflowId, request: CloseRequest | None = None,
                      svc: Services = Depends(services)) -> TradeResult:
    handle = await _open_trade(svc, workflow_id)
    try:
        return await handle.execute_update("close", request or CloseRequest(), result_type=TradeResult)
    except WorkflowUpdateFailedError as err:
        message = _cause(err)  # an invalid amount is the request's fault; the rest the trade's state
        code = status.HTTP_422_UNPROCESSABLE_CONTENT if message.startswith("amount:") else status.HTTP_409_CONFLICT
        raise HTTPException(code, message) from None


@router.post("/{workflow_id}/adjust", response_model=AdjustLevelsResult,
             responses={**_BODY_ACTION_ERRORS, **_REFUSED},
             summary="Move the stop and/or the pending take-profits (the validated `adjust_levels` update)")
async def adjust_trade(workflow_id: WorkflowId, request: AdjustRequest,
                       svc: Services = Depends(services)) -> AdjustLevelsResult:
    handle = await _open_trade(svc, workflow_id)
    try:
        return await handle.execute_update("adjust_levels", request, result_type=AdjustLevelsResult)
    except WorkflowUpdateFailedError as err:
        # The validator refused it (nothing written to history), or the exchange refused the stop.
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _cause(err)) from None


@router.post("/{workflow_id}/pause", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED,
             responses=_ACTION_ERRORS,
             summary="Stop managing (TPs, trailing, kill score, time limit); the exchange stop stays")
async def pause_trade(workflow_id: WorkflowId, svc: Services = Depends(services)) -> Accepted:
    handle = await _open_trade(svc, workflow_id)
    await _signal(handle, "pause")
    return Accepted(workflow_id=workflow_id, action="pause", detail="management paused; the stop rests")


@router.post("/{workflow_id}/resume", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED,
             responses=_ACTION_ERRORS,
             summary="Resume management after a pause")
async def resume_trade(workflow_id: WorkflowId, svc: Services = Depends(services)) -> Accepted:
    handle = await _open_trade(svc, workflow_id)
    await _signal(handle, "resume")
    return Accepted(workflow_id=workflow_id, action="resume", detail="management resumed")


@router.post("/{workflow_id}/kill", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED,
             responses=_ACTION_ERRORS,
             summary="Kill (cancellation): flatten, cancel the orders, end KILLED")
async def kill_trade(workflow_id: WorkflowId, svc: Services = Depends(services)) -> Accepted:
    handle = await _open_trade(svc, workflow_id)
    try:
        await handle.cancel()
    except RPCError as err:
        raise _closed_or(err, workflow_id) from None
    return Accepted(workflow_id=workflow_id, action="kill",
                    detail="cancellation requested: the trade flattens and ends KILLED (GET it to follow)")


@router.post("/{workflow_id}/terminate", response_model=Accepted, responses=_BODY_ACTION_ERRORS,
             summary="Terminate (hard: no flattening, orders stay on the exchange); a reason is required")
async def terminate_trade(workflow_id: WorkflowId, request: TerminateRequest,
                          svc: Services = Depends(services)) -> Accepted:
    handle = await _open_trade(svc, workflow_id)
    try:
        await handle.terminate(reason=request.reason)
    except RPCError as err:
        raise _closed_or(err, workflow_id) from None
    return Accepted(workflow_id=workflow_id, action="terminate",
                    detail=f"terminated ({request.reason}); the exchange was not touched")


# ================================================================================== helpers


async def _describe(handle: WorkflowHandle):
    try:
        return await handle.describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no trade {handle.id}") from None
        raise


async def _open_trade(svc: Services, workflow_id: str) -> WorkflowHandle:
    """The handle of a trade still running (404 unknown, 409 already closed)."""
    handle = svc.temporal.get_workflow_handle(workflow_id)
    description = await _describe(handle)
    if description.status is not WorkflowExecutionStatus.RUNNING:
        name = description.status.name if description.status else "closed"
        raise HTTPException(status.HTTP_409_CONFLICT, f"trade {workflow_id} is {name}: nothing to act on")
    return handle


async def _signal(handle: WorkflowHandle, name: str) -> None:
    try:
        await handle.signal(name)
    except RPCError as err:
        raise _closed_or(err, handle.id) from None


def _closed_or(err: RPCError, workflow_id: str) -> HTTPException:
    if err.status is RPCStatusCode.NOT_FOUND:  # completed between the check and the call
        return HTTPException(status.HTTP_409_CONFLICT, f"trade {workflow_id} has ended: {err.message}")
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal: {err.status.name}: {err.message}")


def _cause(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    while cause is not None and not isinstance(cause, ApplicationError) and getattr(cause, "cause", None):
        cause = cause.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)
