"""`qt worker --queue NAME`: one Temporal worker per task queue (`all`: every queue in one process).

The wiring lives in `workers/registry.py` (orders go through their own exchange client, market
data through another). A worker checks at start that the search attributes it needs are
registered, so a misconfigured namespace fails loudly at deploy time, not in the middle of a
trade.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import Client
from temporalio.worker import Worker

from common.settings import StackSettings
from common.temporal import connect, ensure_search_attributes
from common.task_queues import ALL, QUEUES, TRADE_WORKFLOWS
from workers.registry import Dependencies, activities_for, worker_options, workflows_for

log = logging.getLogger("qt.worker")


def build_workers(client: Client, queues: list[str], deps: Dependencies) -> list[Worker]:
    if deps.temporal is None:
        deps.temporal = client
    workers = []
    for name in queues:
        workflows, activities = workflows_for(name), activities_for(name, deps)
        if not workflows and not activities:
            continue
        workers.append(_new_worker(client, name, workflows, activities, deps))
    return workers


def _new_worker(client: Client, name: str, workflows: list, activities: list, deps: Dependencies) -> Worker:
    """A Worker, its workflows validated in the sandbox. On Python < 3.12 that validation can fail
    at random with `KeyError: <thread id>` from the import lock (CPython bug 91351, seen by the SDK
    as temporalio/sdk-python#585, fix pending in #1833): a finalizer importing an already loaded
    module while a workflow module loads. Validating again succeeds; any other failure is raised."""
    for attempt in range(3):
        try:
            return Worker(client, task_queue=name, workflows=workflows, activities=activities,
                          **worker_options(name, deps.settings))
        except RuntimeError as err:
            cause = err.__cause__
            while cause is not None and not isinstance(cause, KeyError):
                cause = cause.__cause__
            if attempt == 2 or not str(err).startswith("Failed validating workflow") or cause is None:
                raise
            log.warning("%s (import-lock race, CPython bug 91351): validating again", err)
    raise AssertionError("unreachable")


@asynccontextmanager
async def running(workers: list[Worker]) -> AsyncIterator[list[Worker]]:
    """The workers poll until the block ends; then each shuts down (activities in flight get their
    graceful timeout) and the block waits for them: the one start/stop of every in-process worker
    (`qt worker`, the demo, the tests' rig, the benchmarks)."""
    tasks = [asyncio.create_task(w.run(), name=f"worker:{w.task_queue}") for w in workers]
    try:
        yield workers
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)


async def _keep_reconcile_schedule(client: Client) -> None:
    """Create or update the reconcile Schedule and run it once now (a worker that starts after
    a crash reconciles first). A failure is logged, never a reason not to serve trades."""
    from common.reconcile_settings import ReconcileSettings
    from workflows.reconcile_schedule import ensure_reconcile_schedule
    settings = ReconcileSettings()
    if not settings.schedule:
        return
    try:
        await ensure_reconcile_schedule(client, settings, run_now=True)
        log.info("reconcile schedule every %gs (orphans: %s), triggered once", settings.interval_s, settings.orphans)
    except Exception as exc:  # noqa: BLE001
        log.error("reconcile schedule not kept: %s", exc)


async def run_worker(queue: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    names = list(QUEUES) if queue == ALL else [queue]
    deps = Dependencies()
    client = await connect(StackSettings())
    added = await ensure_search_attributes(client)
    if added:
        log.info("registered missing search attributes: %s", ", ".join(added))
    workers = build_workers(client, names, deps)
    if not workers:
        log.error("queue(s) %s have nothing registered yet", ", ".join(names))
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("polling %s", ", ".join(w.task_queue for w in workers))
    async with running(workers):
        if TRADE_WORKFLOWS in names:
            await _keep_reconcile_schedule(client)
        await stop.wait()
        log.info("shutting down (activities in flight get their graceful timeout)")
    await deps.close()
    exchange = sys.modules.get("exchange.client")  # loaded only by queues that trade
    if exchange is not None:
        await exchange.close_shared_exchange()
    return 0
