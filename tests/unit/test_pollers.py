"""qt/pollers.py: the task types each queue serves match the worker registry, and how a poller
Temporal lists is judged alive (a dead local process at once, any poller after FRESH_S)."""

from __future__ import annotations

import os
import subprocess
import sys

import redis.asyncio as aioredis

from qt.pollers import (
    ACTIVITY,
    FRESH_S,
    QUEUE_TASK_TYPES,
    WORKFLOW,
    Poller,
    QueueReport,
    foreign_pollers,
    judge,
    served_queues,
    worker_identity,
)
from common.task_queues import QUEUES
from workers.registry import Dependencies, WorkerSettings, activities_for, worker_options, workflows_for


def test_task_types_follow_the_registry():
    deps = Dependencies(exchange=object(), order_exchange=object(), hub=object(),
                        redis=aioredis.from_url("redis://127.0.0.1:1"))  # never connected
    assert set(QUEUE_TASK_TYPES) == set(QUEUES)
    assert served_queues() == list(QUEUES)  # every queue has something registered
    for queue in QUEUES:
        types = QUEUE_TASK_TYPES[queue]
        assert bool(workflows_for(queue)) == (WORKFLOW in types), queue
        polls_activities = bool(activities_for(queue, deps)) and not worker_options(
            queue, WorkerSettings()).get("no_remote_activities")  # (local activities are not polled)
        assert polls_activities == (ACTIVITY in types), queue


def test_a_poller_is_alive_while_its_process_runs_and_it_polls():
    me = worker_identity(os.getpid())
    assert judge(me, 5.0) == (True, "")
    assert judge(me, 5.0, {os.getpid(): "worker"}) == (True, "qt up: worker")
    assert judge(me, FRESH_S + 1)[0] is False  # alive but not polling: does not count

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert judge(worker_identity(gone.pid), 1.0) == (False, "process gone")  # no need to wait

    assert judge("123@some-other-host", 30.0) == (True, "")  # cannot look: the age decides
    assert judge("123@some-other-host", FRESH_S + 1)[0] is False
    assert judge("a-custom-identity", 10.0)[0] is True


def test_a_queue_is_polled_when_every_task_type_it_serves_has_a_live_poller():
    live = Poller("1@h", WORKFLOW, None, 1.0, True)
    dead = Poller("2@h", WORKFLOW, None, 1.0, False, "process gone")
    wrong_type = Poller("3@h", ACTIVITY, None, 1.0, True)
    assert QueueReport("q", (WORKFLOW,), [live, dead]).polled
    assert not QueueReport("q", (WORKFLOW,), [dead, wrong_type]).polled
    assert QueueReport("q", (), []).polled  # a queue with nothing to poll for
    assert QueueReport("q", (WORKFLOW,), [live]).polled_by("1@h")
    assert not QueueReport("q", (WORKFLOW,), [live, dead]).polled_by("2@h")
    reports = [QueueReport("q", (WORKFLOW,), [live, dead, wrong_type])]
    assert [(q, p.identity) for q, p in foreign_pollers(reports)] == [("q", "1@h"), ("q", "3@h")]
