"""An `intent_id` names one intent. Re-publishing the same intent is a counted duplicate; the
same id with other content (side, size, confidence...) is a conflict: dead-lettered with both
versions and their differences, counted apart, and the first intent's workflow is untouched."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowExecutionStatus

from local_stack.intents import intent_fields
from tests.ingest.conftest import wait_until
from trading.intent import parse_stream_fields, workflow_id_for
from workflows.starter import IntentConflict, start_trade

pytestmark = pytest.mark.integration


async def test_same_id_other_content_is_a_conflict_not_a_duplicate(start_intake, temporal_client, paper):
    rig = await start_intake()
    first = intent_fields("BTCUSDT", "BUY", 63000, paper.clock()["market_ms"])
    other = {**first, "side": "SELL", "position_size_usd": "900", "confidence": "0.95"}
    await rig.xadd(first)
    await rig.wait_drained()  # (entries are started concurrently: the first must hold the id)
    await rig.xadd({**first, "entry_price": "63000.000", "reason": "re-published"})  # the same intent
    await rig.xadd(other)
    await rig.wait_drained()

    c = rig.intake.counters
    assert (c.started, c.duplicates, c.conflicts) == (1, 1, 1)
    [letter] = await rig.dlq()
    workflow_id = workflow_id_for(parse_stream_fields(first))
    assert letter["reason"] == "intent_id_conflict"
    assert letter["existing_workflow_id"] == workflow_id and letter["existing_run_id"]
    assert json.loads(letter["differences"]) == [
        "side: BUY -> SELL", "confidence: 0.8 -> 0.95", "position_size_usd: 100 -> 900"]
    assert "intent_id conflict" in letter["error"] and "side: BUY -> SELL" in letter["error"]
    assert json.loads(letter["original_fields"])["side"] == "SELL"  # this entry, as written
    assert json.loads(letter["existing_intent"])["side"] == "BUY"  # and the one that holds the id

    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    assert [w.status for w in runs] == [WorkflowExecutionStatus.RUNNING]  # untouched, one run
    status = await wait_until(rig.status, lambda s: s.total("conflicts") == 1, 5, "conflicts published")
    assert status.total("duplicates") == 1


async def test_the_starter_refuses_a_different_intent_under_a_running_id(temporal_client, paper):
    """The API and the demo start through the same starter: a conflict raises, it never returns
    the other intent's workflow as if it were this one's."""
    first = intent_fields("ETHUSDT", "BUY", 3400, paper.clock()["market_ms"])
    queue = "conflict-test-no-worker"
    handle, started = await start_trade(temporal_client, first, task_queue=queue)
    assert started
    _, again = await start_trade(temporal_client, dict(first), task_queue=queue)
    assert again is False
    with pytest.raises(IntentConflict) as err:
        await start_trade(temporal_client, {**first, "leverage": "20"}, task_queue=queue)
    assert err.value.workflow_id == handle.id and err.value.differences == ["leverage: 10 -> 20"]
    await handle.terminate("test done")
