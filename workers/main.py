"""`qt worker --queue NAME`: one Temporal worker per task queue, from one table.

The table below is the whole wiring: which workflows and activities each queue serves and how
many run at once. A worker checks at start that the search attributes it needs are registered,
so a misconfigured namespace fails loudly at deploy time, not in the middle of a trade.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from temporalio.worker import Worker

from qt.settings import StackSettings
from qt.temporal_setup import connect, ensure_search_attributes
from workers.queues import ALL, QUEUES

log = logging.getLogger("qt.worker")


@dataclass(frozen=True)
class QueueSpec:
    workflows: list[type] = field(default_factory=list)
    activities: list = field(default_factory=list)
    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100


def queue_table() -> dict[str, QueueSpec]:
    """Queue -> what it serves. Filled in as the lifecycle lands (TradeWorkflow issue)."""
    return {name: QueueSpec() for name in QUEUES}


async def run_worker(queue: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    table = queue_table()
    names = list(QUEUES) if queue == ALL else [queue]
    specs = {name: table[name] for name in names if table[name].workflows or table[name].activities}
    if not specs:
        log.error("queue(s) %s have no workflows or activities registered yet", ", ".join(names))
        return 2
    client = await connect(StackSettings())
    added = await ensure_search_attributes(client)
    if added:
        log.info("registered missing search attributes: %s", ", ".join(added))
    workers = [
        Worker(
            client,
            task_queue=name,
            workflows=spec.workflows,
            activities=spec.activities,
            max_concurrent_activities=spec.max_concurrent_activities,
            max_concurrent_workflow_tasks=spec.max_concurrent_workflow_tasks,
        )
        for name, spec in specs.items()
    ]
    log.info("polling %s", ", ".join(specs))
    await asyncio.gather(*(w.run() for w in workers))
    return 0
