"""Small helpers the trade's steps share (workflows/trade*.py): an activity failure in words, the
exchange's refusal of a stop, abandoning a monitor session."""

from __future__ import annotations

import asyncio
from temporalio.exceptions import ActivityError, ApplicationError


class StopRefused(Exception):
    """The exchange would not take the new stop; `crossed` = it would trigger at once (-2021)."""

    def __init__(self, message: str, crossed: bool) -> None:
        super().__init__(message)
        self.crossed = crossed


def abandon(handle: asyncio.Future) -> None:
    """Cancel a monitor session nobody awaits any more; its ending (an ActivityError) is read here,
    so asyncio does not log "exception was never retrieved" for it. No command: history unchanged."""
    handle.add_done_callback(lambda done: done.cancelled() or done.exception())
    handle.cancel()


def failure_of(err: BaseException) -> tuple[str | None, str]:
    """(ApplicationError type, readable message) of an activity failure."""
    cause = err.cause if isinstance(err, ActivityError) else err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.type, cause.message
    return None, str(cause or err)
