"""`POST /api/v1/intents`: a manual intent, started through the one starter the intake uses.

Safe to retry: the workflow id comes from the intent id (the body's `intent_id`, else the
`Idempotency-Key` header), so a retry finds the trade the first call started and returns it
(200), never a second one. The same id with other content is a 409 naming the differences.
Fields the caller left out (timestamp, entry price, confidence) are filled once, by the first
call; a retry is compared on the fields it gave.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response, status
from temporalio.service import RPCError, RPCStatusCode

from activities.market import resolve_symbol
from api.intent_fields import intent_problems_as_422, request_fields
from api.schemas import UNREADABLE_BODY, IntentAccepted, ManualIntentRequest, Problem
from api.security import TOKEN_ERRORS, require_token
from api.services import Services, services
from exchange.parse import last_price
from signals_ingest.known_symbols import usdt_perpetual_ids
from trading.intent import IntentError, TradeIntent, intent_differences, parse_stream_fields, workflow_id_for_intent_id
from workflows.starter import IntentConflict, existing_intent, start_trade
from workflows.trade_state import Stage, TradeState

router = APIRouter(prefix="/api/v1", tags=["intents"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)

GATES_WAIT_S = 15.0


@router.post(
    "/intents", status_code=status.HTTP_202_ACCEPTED, response_model=IntentAccepted,
    summary="Submit a manual intent (a TradeWorkflow, like the intake starts one)",
    responses={200: {"model": IntentAccepted, "description": "this intent already has its trade (a retry)"},
               409: {"model": Problem, "description": "the intent id already names a different intent"},
               422: {"model": Problem, "description": "an invalid field (named in `loc`)"}, **UNREADABLE_BODY})
async def submit_intent(
    body: ManualIntentRequest, response: Response,
    wait: Annotated[Literal["gates"] | None, Query(description="`gates`: wait for the gates' verdict")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128,
                                                  pattern=r"^[A-Za-z0-9._-]+$")] = None,
    svc: Services = Depends(services),
) -> IntentAccepted:
    given = request_fields(body)
    intent_id = body.intent_id or idempotency_key or f"api-{uuid.uuid4().hex[:20]}"
    given["intent_id"] = intent_id
    workflow_id = workflow_id_for_intent_id(intent_id)

    # Start first (one RPC on the happy path); a retry whose filled-in fields (timestamp, price)
    # differ from the first call's is told apart from a real conflict on the fields it gave.
    intent = await _complete_and_parse(svc, given)
    try:
        handle, started = await start_trade(svc.temporal, intent, workflow_id=workflow_id)
    except IntentConflict:
        retry = await _existing_trade(svc, workflow_id, given)
        if retry is None:
            raise
        response.status_code = status.HTTP_200_OK
        return await _with_gates(svc, retry, wait)
    accepted = IntentAccepted(workflow_id=handle.id, run_id=handle.first_execution_run_id, started=started,
                              web_ui_url=svc.web_ui_url(handle.id, handle.first_execution_run_id), intent=intent)
    if not started:
        response.status_code = status.HTTP_200_OK
    return await _with_gates(svc, accepted, wait)


async def _existing_trade(svc: Services, workflow_id: str, given: dict[str, Any]) -> IntentAccepted | None:
    """The trade already under this id, if the given fields agree with its intent; 409 if not."""
    handle = svc.temporal.get_workflow_handle(workflow_id)
    try:
        run_id, existing = await existing_intent(svc.temporal, handle)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return None
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"trade {workflow_id} exists but Temporal did not answer: {err.message}") from None
    if existing is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"workflow {workflow_id} exists and its input is not an intent")
    # What this call left out is what the first call filled in: take it from the existing one.
    merged = {**existing.model_dump(mode="json", exclude_none=True), **given}
    try:
        asked = parse_stream_fields(merged)
    except IntentError as err:
        raise intent_problems_as_422(err) from None
    differences = intent_differences(existing, asked)
    if differences:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"intent_id conflict: {workflow_id} (run {run_id}) holds a different intent "
                            f"({'; '.join(differences)}; existing -> this one)")
    return IntentAccepted(workflow_id=workflow_id, run_id=run_id, started=False,
                          web_ui_url=svc.web_ui_url(workflow_id, run_id), intent=existing)


async def _complete_and_parse(svc: Services, given: dict[str, Any]) -> TradeIntent:
    """Fill what the caller left out from the exchange (market clock, last price), then the one
    intent parser decides (its problems become a 422 naming each field)."""
    exchange = await svc.market_exchange()
    fields = dict(given)
    fields.setdefault("confidence", "1")
    fields["source"] = "api"
    known = usdt_perpetual_ids(exchange.markets)
    symbol = str(fields.get("symbol", "")).strip().upper()
    if symbol in known and ("entry_price" not in fields or "timestamp" not in fields):
        unified = resolve_symbol(exchange, symbol)
        ticker, now_ms = await asyncio.gather(exchange.fetch_ticker(unified), exchange.fetch_time())
        fields.setdefault("entry_price", str(last_price(ticker)))
        fields.setdefault("timestamp", datetime.fromtimestamp(int(now_ms) / 1000, UTC).isoformat())
    try:
        return parse_stream_fields(fields, known_symbols=known)
    except IntentError as err:
        raise intent_problems_as_422(err) from None


async def _with_gates(svc: Services, accepted: IntentAccepted, wait: str | None) -> IntentAccepted:
    if wait != "gates":
        return accepted
    handle = svc.temporal.get_workflow_handle(accepted.workflow_id)
    deadline = time.monotonic() + GATES_WAIT_S
    while time.monotonic() < deadline:
        try:
            state: TradeState = await handle.query("state", result_type=TradeState,
                                                   rpc_timeout=timedelta(seconds=2))
        except RPCError:
            state = None  # no worker has taken it yet
        if state is not None and (state.stage is not Stage.GATES or state.status.is_final):
            return accepted.model_copy(update={"status": state.status, "gates": state.gates,
                                               "reason": state.reason if state.status.is_final else None})
        await asyncio.sleep(0.2)
    return accepted.model_copy(update={"reason": f"no verdict within {GATES_WAIT_S:g} s (is a worker running?)"})
