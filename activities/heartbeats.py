"""Heartbeats on a timer while an activity's block runs, so Temporal notices a dead worker after
the call's short heartbeat timeout instead of its whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from temporalio import activity


class Heartbeats:
    """Heartbeat every `interval_s` while the block runs (the SDK throttles what it sends), so
    Temporal notices a dead worker after the call's short heartbeat timeout."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.details: dict[str, Any] = {"phase": "started", "at_ms": _now_ms()}
        self._task: asyncio.Task | None = None

    def phase(self, name: str) -> None:
        self.details = {"phase": name, "at_ms": _now_ms()}
        activity.heartbeat(self.details)

    async def _beat(self) -> None:
        while True:
            activity.heartbeat(self.details)
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Heartbeats:
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _now_ms() -> int:
    return int(time.time() * 1000)
