"""Who polls each task queue, as Temporal sees it: what `qt status` shows, what `qt up` waits for.

Temporal lists a queue's pollers (`DescribeTaskQueue`, once per task type) with the identity
the worker's client gave (`PID@HOST` by default) and the time of its last poll. A poller stays
in that list for minutes after its worker died, so "listed" is not "alive":

- an identity of this host is alive while its process is (a SIGKILLed worker shows as gone at
  once, not minutes later);
- any identity is stale once it has not polled for `FRESH_S`: an idle worker re-polls at least
  every minute (the server's long-poll timeout), a busy one far more often.

A queue is polled when every task type it serves (from the worker registry: workflow tasks on
`trade-workflows`, activity tasks on the others) has at least one alive poller.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.table import Table
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from common.task_queues import QUEUES, TRADE_EXECUTION, TRADE_MARKET, TRADE_MONITOR, TRADE_WORKFLOWS

WORKFLOW, ACTIVITY = "workflow", "activity"
_TYPES = {WORKFLOW: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, ACTIVITY: TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}

# The task types a worker of each queue polls: what `workers/registry.py` registers there
# (tests/unit/test_pollers.py keeps the two in step).
QUEUE_TASK_TYPES: dict[str, tuple[str, ...]] = {
    TRADE_WORKFLOWS: (WORKFLOW,),
    TRADE_EXECUTION: (ACTIVITY,),
    TRADE_MONITOR: (ACTIVITY,),
    TRADE_MARKET: (ACTIVITY,),
}

# A poller that has not polled for this long is not counted (an idle worker re-polls every ~60 s).
FRESH_S = 90.0
HOST = socket.gethostname()


def served_queues(queues: Iterable[str] = QUEUES) -> list[str]:
    """The queues a worker has something to poll on."""
    return [q for q in queues if QUEUE_TASK_TYPES.get(q)]


def worker_identity(pid: int) -> str:
    """The identity Temporal lists for a worker process of this host (the SDK's default)."""
    return f"{pid}@{HOST}"


def _local_pid(identity: str) -> int | None:
    pid, sep, host = identity.partition("@")
    if sep and host == HOST and pid.isdigit():
        return int(pid)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - tiny read
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@dataclass
class Poller:
    identity: str
    task_type: str  # workflow | activity
    last_access: datetime | None
    age_s: float | None
    alive: bool
    note: str = ""  # "qt up: worker", "process gone", "no poll for 120 s"


@dataclass
class QueueReport:
    name: str
    serves: tuple[str, ...]
    pollers: list[Poller] = field(default_factory=list)
    backlog: dict[str, int] = field(default_factory=dict)  # task type -> approximate tasks waiting

    def alive(self, task_type: str | None = None) -> list[Poller]:
        return [p for p in self.pollers if p.alive and (task_type is None or p.task_type == task_type)]

    @property
    def polled(self) -> bool:
        return all(self.alive(t) for t in self.serves)

    def polled_by(self, identity: str) -> bool:
        return all(any(p.identity == identity for p in self.alive(t)) for t in self.serves)


def judge(identity: str, age_s: float | None, owned: Mapping[int, str] | None = None) -> tuple[bool, str]:
    """(alive, note) of one listed poller; `owned` maps the pids `qt up` started to their names."""
    owned = owned or {}
    pid = _local_pid(identity)
    note = f"qt up: {owned[pid]}" if pid is not None and pid in owned else ""
    if pid is not None and not _pid_alive(pid):
        return False, "process gone"
    if age_s is not None and age_s > FRESH_S:
        return False, f"no poll for {age_s:.0f} s"
    return True, note


async def _describe(client: Client, queue: str, task_type: str, owned: Mapping[int, str]):
    response = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=_TYPES[task_type],
        include_task_queue_status=True,
    ))
    now = time.time()
    pollers = []
    for p in response.pollers:
        last = p.last_access_time.ToDatetime(tzinfo=UTC) if p.HasField("last_access_time") else None
        age = max(0.0, now - p.last_access_time.ToMicroseconds() / 1e6) if last else None
        alive, note = judge(p.identity, age, owned)
        pollers.append(Poller(p.identity, task_type, last, age, alive, note))
    backlog = int(response.task_queue_status.backlog_count_hint) if response.HasField("task_queue_status") else 0
    return pollers, backlog


async def describe_queues(client: Client, queues: Iterable[str] = QUEUES,
                          owned: Mapping[int, str] | None = None) -> list[QueueReport]:
    """Every queue's pollers of both task types (the ones it does not serve too: a worker of an
    older registry may still poll them), judged alive or not."""
    owned = owned or {}
    reports = [QueueReport(q, QUEUE_TASK_TYPES.get(q, (WORKFLOW, ACTIVITY))) for q in queues]
    jobs = [(r, t) for r in reports for t in (WORKFLOW, ACTIVITY)]
    answers = await asyncio.gather(*(_describe(client, r.name, t, owned) for r, t in jobs))
    for (report, task_type), (pollers, backlog) in zip(jobs, answers, strict=True):
        report.pollers += pollers
        if backlog:
            report.backlog[task_type] = backlog
    return reports


def foreign_pollers(reports: Iterable[QueueReport], ours: Iterable[int] = ()) -> list[tuple[str, Poller]]:
    """Alive pollers of processes `qt` did not start (`ours`: pids to leave out)."""
    mine = {worker_identity(pid) for pid in ours}
    return [(r.name, p) for r in reports for p in r.alive() if p.identity not in mine]


def _ago(poller: Poller) -> str:
    if poller.last_access is None:
        return "never"
    local = poller.last_access.astimezone().strftime("%H:%M:%S")
    return f"{local} ({poller.age_s:.0f} s ago)"


def queues_table(reports: list[QueueReport]) -> Table:
    table = Table(title="Task queues (pollers as Temporal sees them)")
    table.add_column("task queue")
    table.add_column("serves")
    table.add_column("pollers: identity, last poll")
    table.add_column("state")
    for r in reports:
        lines = []
        for p in sorted(r.pollers, key=lambda p: (not p.alive, p.task_type, p.identity)):
            kind = "" if p.task_type in r.serves else f" {p.task_type} tasks"
            text = f"{p.identity}{kind}" + (f" ({p.note})" if p.note else "") + f", last poll {_ago(p)}"
            lines.append(text if p.alive else f"[dim]{text}[/]")
        if not r.serves:
            state = "[dim]nothing registered: no worker needed[/]"
        elif r.polled:
            workers = len({p.identity for p in r.alive()})
            state = f"[green]polled by {workers} worker{'s' if workers != 1 else ''}[/]"
        else:
            state = "[red]no worker polls this queue[/]"
        if r.backlog:
            state += "\n" + ", ".join(f"~{n} {t} tasks waiting" for t, n in r.backlog.items())
        serves = ", ".join(f"{t} tasks" for t in r.serves) or "-"
        table.add_row(r.name, serves, "\n".join(lines) or "-", state)
    return table
