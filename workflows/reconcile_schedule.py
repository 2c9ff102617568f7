"""The reconcile Schedule: created or updated idempotently by every workflow worker that starts
(and by `qt reconcile`), with overlap SKIP, so two runs never act at once however many workers
or operators ask. `run_reconcile_now` triggers it and waits for the run's report; with
QT_RECONCILE_SCHEDULE=false and no Schedule it runs once without creating one.

Client-side code (workers, the CLI): never imported by a workflow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.schemas.reconcile import ReconcileReport
from common.reconcile_settings import ReconcileSettings
from common.task_queues import TRADE_WORKFLOWS
from trading.reconcile import OrphanMode
from workflows.reconcile import WORKFLOW_TYPE, ReconcileRequest

SCHEDULE_ID = "reconcile"


def reconcile_schedule(settings: ReconcileSettings) -> Schedule:
    every = timedelta(seconds=settings.interval_s)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW_TYPE, ReconcileRequest(orphans=OrphanMode(settings.orphans), confirm_s=settings.confirm_s),
            id="reconcile", task_queue=TRADE_WORKFLOWS, execution_timeout=timedelta(minutes=30),
            static_summary="compare the exchange, the open trades and Redis; fix what disagrees"),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A run still going when the next is due is not doubled; missed runs (no worker, server
        # down) are not caught up one by one: the next run sees the account as it is then.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=max(every, timedelta(seconds=60))),
        state=ScheduleState(note=f"every {settings.interval_s:g}s, orphans: {settings.orphans}"),
    )


async def ensure_reconcile_schedule(client: Client, settings: ReconcileSettings | None = None, *,
                                    run_now: bool = False, update: bool = True) -> ScheduleHandle:
    """Create the Schedule, or (`update`) bring an existing one to `settings`: what a worker
    does as it starts, so the workers' `QT_RECONCILE_*` is what runs."""
    settings = settings or ReconcileSettings()
    schedule = reconcile_schedule(settings)
    try:
        handle = await client.create_schedule(SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(SCHEDULE_ID)
        if update:  # the interval, the action and its settings; an operator's pause stays
            await handle.update(lambda current: ScheduleUpdate(schedule=dataclasses.replace(
                schedule, state=current.description.schedule.state)))
    if run_now:
        await handle.trigger(overlap=ScheduleOverlapPolicy.SKIP)
    return handle


async def run_reconcile_now(client: Client, settings: ReconcileSettings | None = None, *,
                            timeout_s: float = 120) -> ReconcileReport:
    """Trigger the Schedule and wait for the run it started (or the one already running, which
    the trigger does not double) to end; its report. An existing Schedule keeps the settings
    the workers gave it (the caller's environment, an API's or a CLI's, may not carry them)."""
    settings = settings or ReconcileSettings()
    if not settings.schedule and not await _schedule_exists(client):
        return await _run_once(client, settings, timeout_s)
    handle = await ensure_reconcile_schedule(client, settings, update=False)
    asked = time.time()
    await handle.trigger(overlap=ScheduleOverlapPolicy.SKIP)
    deadline = asked + timeout_s
    while True:
        info = (await handle.describe()).info
        started = list(info.running_actions)
        started += [a.action for a in info.recent_actions if a.started_at.timestamp() >= asked - 1]
        if started:
            action = started[0]
            run = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id,
                                             result_type=ReconcileReport)
            return await asyncio.wait_for(run.result(), max(1.0, deadline - time.time()))
        if time.time() > deadline:
            raise TimeoutError(f"no reconcile run started within {timeout_s:g}s: is a trade-workflows worker up?")
        await asyncio.sleep(0.2)


async def _schedule_exists(client: Client) -> bool:
    try:
        await client.get_schedule_handle(SCHEDULE_ID).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _run_once(client: Client, settings: ReconcileSettings, timeout_s: float) -> ReconcileReport:
    """QT_RECONCILE_SCHEDULE=false and no Schedule: one run started directly, not a Schedule the
    operator turned off created behind their back. Its fixed id with USE_EXISTING keeps the
    Schedule's rule that two runs never act at once: a second caller waits for the same run."""
    action = reconcile_schedule(settings).action
    run = await client.start_workflow(
        action.workflow, action.args[0], id=f"{SCHEDULE_ID}-now", task_queue=action.task_queue,
        execution_timeout=action.execution_timeout, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=ReconcileReport)
    try:
        return await asyncio.wait_for(run.result(), timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"no reconcile run ended within {timeout_s:g}s: is a trade-workflows worker up?") from None
