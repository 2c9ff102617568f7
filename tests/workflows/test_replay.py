"""Histories of real runs (tests/workflows/histories/*.json) replayed against today's code.

A change that makes TradeWorkflow take a different path for the same history (new activity
order, a removed step, non-deterministic code) fails here, in CI, before it can strand a
running trade. Re-record after an intended change with
`QT_RECORD_HISTORIES=1 python -m pytest tests/workflows` (and use `workflow.patched` for
trades already running in production).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.trade import TradeWorkflow

ROOT = Path(__file__).parent / "histories"
# histories/*.json: recorded with today's code (re-recorded on purpose); histories/<folder>/:
# trades started by an older version that must still replay (and finish) on today's code (none
# today: the last shape change re-recorded everything, see README "Changing the workflow").
HISTORIES = sorted(ROOT.rglob("*.json"))
NEEDED = ("exit_sl", "exit_tp", "exit_tp_then_trailing", "exit_kill_score", "exit_manual", "exit_killed",
          "time_limit", "adjust_levels", "continued_as_new_last_run")


def test_histories_are_recorded():
    names = {p.stem for p in ROOT.glob("*.json")}
    for needed in NEEDED:
        assert needed in names, f"missing replay fixture {needed}.json"


@pytest.mark.parametrize("path", HISTORIES, ids=[str(p.relative_to(ROOT).with_suffix("")) for p in HISTORIES])
async def test_replay(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[TradeWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure!r}"


async def test_a_history_the_code_would_not_produce_fails_the_replay():
    """The check above can fail: the SL history with its first activity renamed (as if the code had
    changed what it schedules first) is refused."""
    history = json.loads((ROOT / "exit_sl.json").read_text())
    first = next(e["activityTaskScheduledEventAttributes"] for e in history["events"]
                 if "activityTaskScheduledEventAttributes" in e)
    assert first["activityType"]["name"] == "open_position"
    first["activityType"]["name"] = "some_other_activity"
    tampered = json.dumps(history)
    replayer = Replayer(workflows=[TradeWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(WorkflowHistory.from_json("tampered", tampered),
                                            raise_on_replay_failure=False)
    assert result.replay_failure is not None
