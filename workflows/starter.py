"""Starting a TradeWorkflow the one right way (ingest, API, demo, tests all use this).

- id `trade-{intent_id}` (or the intent's fingerprint): a re-published duplicate maps to the
  same id, and the reuse policy REJECT_DUPLICATE refuses a second run of the same intent even
  after the first one ended;
- the input is the intent's own fields (SPEC names), exactly what `temporal workflow start
  --input` would send;
- the static summary is the one-line description the Web UI lists;
- the search attributes the intent already knows (symbol, side, model, source, confidence,
  leverage, status PENDING) are set at start, so a backlog started while no worker runs can
  already be filtered in the Web UI. The workflow upserts the same values when it begins.
"""

from __future__ import annotations

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

from trading.intent import TradeIntent, parse_stream_fields, to_stream_fields, workflow_id_for
from trading.models import TradeStatus
from workers.queues import TRADE_WORKFLOWS
from workflows import search_attributes as sa
from workflows.trade_state import TradeResult
from workflows.trade_view import static_summary

WORKFLOW_TYPE = "TradeWorkflow"


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
                      priority: Priority = Priority.default) -> tuple[WorkflowHandle, bool]:
    """Start the trade; (handle, started). `started` False: this intent already has a workflow.
    `priority`: Temporal's task-queue priority (the intake lowers it for a stale backlog).

    Raises `IntentError` for an intent that cannot be parsed (nothing is started), and
    `temporalio.service.RPCError` when Temporal did not take the start (unreachable, timeout...).
    """
    intent = fields if isinstance(fields, TradeIntent) else parse_stream_fields(fields)
    workflow_id = workflow_id or workflow_id_for(intent)
    try:
        handle = await client.start_workflow(
            WORKFLOW_TYPE, to_stream_fields(intent), id=workflow_id, task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=static_summary(intent), result_type=TradeResult,
            search_attributes=initial_search_attributes(intent), rpc_timeout=rpc_timeout,
            priority=priority)
        return handle, True
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(workflow_id, result_type=TradeResult), False
