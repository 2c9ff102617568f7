"""Starting a TradeWorkflow the one right way (ingest, API, demo, tests all use this).

- id `trade-{intent_id}` (or the intent's fingerprint): a re-published duplicate maps to the
  same id, and the reuse policy REJECT_DUPLICATE refuses a second run of the same intent even
  after the first one ended;
- the input is the intent's own fields (SPEC names), exactly what `temporal workflow start
  --input` would send;
- the static summary is the one-line description the Web UI lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from trading.intent import TradeIntent, parse_stream_fields, to_stream_fields, workflow_id_for
from workers.queues import TRADE_WORKFLOWS
from workflows.trade_state import TradeResult
from workflows.trade_view import static_summary

WORKFLOW_TYPE = "TradeWorkflow"


async def start_trade(client: Client, fields: Mapping[str, Any] | TradeIntent,
                      *, workflow_id: str | None = None) -> tuple[WorkflowHandle, bool]:
    """Start the trade; (handle, started). `started` False: this intent already has a workflow.

    Raises `IntentError` for an intent that cannot be parsed (nothing is started).
    """
    intent = fields if isinstance(fields, TradeIntent) else parse_stream_fields(fields)
    workflow_id = workflow_id or workflow_id_for(intent)
    try:
        handle = await client.start_workflow(
            WORKFLOW_TYPE, to_stream_fields(intent), id=workflow_id, task_queue=TRADE_WORKFLOWS,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=static_summary(intent), result_type=TradeResult)
        return handle, True
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(workflow_id, result_type=TradeResult), False
