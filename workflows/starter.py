"""Starting a TradeWorkflow the one right way (ingest, API, demo, tests all use this).

- id `trade-{intent_id}` (or the intent's fingerprint): a re-published duplicate maps to the
  same id, and the reuse policy REJECT_DUPLICATE refuses a second run of the same intent even
  after the first one ended;
- the input is the intent's own fields (SPEC names), exactly what `temporal workflow start
  --input` would send;
- the static summary is the one-line description the Web UI lists;
- the search attributes the intent already knows (symbol, side, model, source, confidence,
  leverage, status PENDING) are set at start, so a backlog started while no worker runs can
  already be filtered in the Web UI. The workflow upserts the same values when it begins;
- an id already taken is a duplicate only when the intent under it is the same one (a
  producer's re-publish, a restart between start and acknowledgement). The same `intent_id`
  with other content (another side, size...) is a conflict, raised as `IntentConflict` with
  the differences: the caller dead-letters it (intake) or answers 409 (API), never drops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from trading.intent import (
    IntentError,
    TradeIntent,
    intent_differences,
    parse_stream_fields,
    to_stream_fields,
    workflow_id_for,
)
from trading.models import TradeStatus
from common.task_queues import TRADE_WORKFLOWS
from common import search_attributes as sa
from workflows.trade_state import StaleAtIntake, TradeResult
from workflows.trade_view import static_details, static_summary

WORKFLOW_TYPE = "TradeWorkflow"


class IntentConflict(Exception):
    """Another intent already runs (or ran) under this intent's workflow id, or the one that
    does could not be read (`unreadable`: then nobody can tell a duplicate from a conflict)."""

    def __init__(self, workflow_id: str, run_id: str | None, existing: TradeIntent | None,
                 differences: list[str], unreadable: str | None = None) -> None:
        self.workflow_id, self.run_id, self.existing, self.differences = (
            workflow_id, run_id, existing, differences)
        self.unreadable = unreadable
        if unreadable is not None:
            message = (f"intent_id unverified: workflow {workflow_id} already exists and its intent "
                       f"could not be read ({unreadable}): kept here, not started twice")
        else:
            what = "; ".join(differences) if differences else "its input is not a valid intent"
            message = (f"intent_id conflict: workflow {workflow_id} (run {run_id}) already holds a "
                       f"different intent under this id ({what}; existing -> this one)")
        super().__init__(message)


def initial_search_attributes(intent: TradeIntent) -> TypedSearchAttributes:
    return TypedSearchAttributes([
        SearchAttributePair(sa.SYMBOL, intent.symbol),
        SearchAttributePair(sa.SIDE, intent.side.value),
        SearchAttributePair(sa.MODEL_VERSION, intent.model),
        SearchAttributePair(sa.INTENT_SOURCE, intent.source or "unknown"),
        SearchAttributePair(sa.CONFIDENCE, intent.confidence),
        SearchAttributePair(sa.LEVERAGE, float(intent.leverage)),
        SearchAttributePair(sa.TRADE_STATUS, TradeStatus.PENDING.value),
    ])


async def start_trade(client: Client, fields: Mapping[str, Any] | TradeIntent,
                      *, workflow_id: str | None = None, task_queue: str = TRADE_WORKFLOWS,
                      rpc_timeout: timedelta | None = None,
                      priority: Priority = Priority.default,
                      stale: StaleAtIntake | None = None) -> tuple[WorkflowHandle, bool]:
    """Start the trade; (handle, started). `started` False: this intent already has a workflow.
    `priority`: Temporal's task-queue priority (the intake lowers it for a stale backlog).
    `stale`: the intake's proof that the intent is stale: the workflow ends REJECTED at once.

    Raises `IntentError` for an intent that cannot be parsed (nothing is started), and
    `temporalio.service.RPCError` when Temporal did not take the start (unreachable, timeout...).
    """
    intent = fields if isinstance(fields, TradeIntent) else parse_stream_fields(fields)
    workflow_id = workflow_id or workflow_id_for(intent)
    try:
        args = [to_stream_fields(intent)] if stale is None else [to_stream_fields(intent), None, stale]
        handle = await client.start_workflow(
            WORKFLOW_TYPE, args=args, id=workflow_id, task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=static_summary(intent), static_details=static_details(intent), result_type=TradeResult,
            search_attributes=initial_search_attributes(intent), rpc_timeout=rpc_timeout,
            priority=priority)
        return handle, True
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id, result_type=TradeResult)
        try:
            run_id, existing = await existing_intent(client, handle, rpc_timeout)
        except RPCError as err:
            raise IntentConflict(workflow_id, None, None, [],
                                 unreadable=f"{err.status.name}: {err.message}") from None
        differences = intent_differences(existing, intent) if existing is not None else []
        if existing is None or differences:
            raise IntentConflict(workflow_id, run_id, existing, differences) from None
        return handle, False


_READ_ATTEMPTS = 3


async def existing_intent(client: Client, handle: WorkflowHandle, rpc_timeout: timedelta | None = None,
                          ) -> tuple[str | None, TradeIntent | None]:
    """(run id, intent) of the latest run under `handle`'s id: its first history event's input
    (the intent fields; a continued run carries them first too). The intent is None when the
    input is not a valid intent (a hand-made CLI start). A few tries, then the RPCError."""
    for attempt in range(1, _READ_ATTEMPTS + 1):
        try:
            return await _first_event_intent(client, handle, rpc_timeout)
        except RPCError:
            if attempt == _READ_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


async def _first_event_intent(client: Client, handle: WorkflowHandle, rpc_timeout: timedelta | None,
                              ) -> tuple[str | None, TradeIntent | None]:
    async for event in handle.fetch_history_events(page_size=1, rpc_timeout=rpc_timeout):
        attributes = event.workflow_execution_started_event_attributes
        run_id = attributes.original_execution_run_id or None
        args = await client.data_converter.decode(attributes.input.payloads)
        try:
            return run_id, parse_stream_fields(args[0]) if args and isinstance(args[0], dict) else None
        except IntentError:
            return run_id, None
    return None, None
