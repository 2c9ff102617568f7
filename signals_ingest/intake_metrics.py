"""Prometheus metrics of the intake (served by `qt ingest` on QT_INGEST_METRICS_PORT).

Counters count what this process did; the gauges show the group as a whole (lag, pending,
oldest pending age, DLQ length: read from Redis every few seconds), so any one intake's
/metrics answers "is the backlog growing?".
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

ENTRIES = Counter("qt_intake_entries_total", "Stream entries handled, by outcome",
                  ["outcome"])  # started | duplicate | conflict | dead_lettered
START_FAILURES = Counter("qt_intake_start_failures_total",
                         "Workflow starts that failed and will be retried (entry kept pending)", ["reason"])
RECLAIMED = Counter("qt_intake_reclaimed_total", "Entries taken over from a consumer that stopped (XAUTOCLAIM)")
TRIMMED = Counter("qt_intake_trimmed_before_start_total",
                  "Pending entries that vanished from the stream (trimmed) before they were started")
DEPRIORITIZED = Counter("qt_intake_deprioritized_total",
                        "Workflows started at the lowest task-queue priority (intent already stale)")
START_SECONDS = Histogram("qt_intake_start_seconds", "Time of one successful workflow start RPC",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
IN_FLIGHT = Gauge("qt_intake_in_flight", "Entries this process is starting right now")
STARTS_PER_SECOND = Gauge("qt_intake_starts_per_second", "Workflow starts per second over the last 10 s")
BACKING_OFF = Gauge("qt_intake_backing_off", "1 while Temporal is unreachable and starts are paused")
LAG = Gauge("qt_intake_group_lag", "Entries in the stream not yet delivered to the intake group")
PENDING = Gauge("qt_intake_pending", "Entries delivered but not yet acknowledged (all consumers)")
OLDEST_PENDING_AGE = Gauge("qt_intake_oldest_pending_age_seconds", "Age of the oldest pending entry (0: none)")
DLQ_LENGTH = Gauge("qt_intake_dlq_length", "Entries in the dead-letter stream")
CONSUMERS = Gauge("qt_intake_consumers", "Consumers registered in the intake group")


class RateWindow:
    """Events per second over the last `window_s` seconds (one bucket per second)."""

    def __init__(self, window_s: int = 10) -> None:
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, count]

    def add(self, n: int = 1, now: float | None = None) -> None:
        second = int(now if now is not None else time.monotonic())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
        self._trim(second)

    def rate(self, now: float | None = None) -> float:
        second = int(now if now is not None else time.monotonic())
        self._trim(second)
        return sum(count for _, count in self._buckets) / self.window_s

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            self._buckets.popleft()
