"""How the TradeWorkflow calls each activity: queue, timeouts, retries, result type.

Activities are called by NAME, not by function reference, so the workflow never imports the
modules that implement them (ccxt, redis): the workflow sandbox stays light. One table, so every
retry policy is visible at once:

- gates: a local activity in the trade's first workflow task, a few attempts; the data is worth
  nothing minutes later (stale intent).
- market: short, a few attempts.
- orders: retried with backoff; safe because every placement looks its client id up first.
  Non-retryable exchange refusals (insufficient margin, -2021, bad symbol) come back at once.
- closing and cancelling: retried without limit: a position must end flat, and the stop rests
  on the exchange meanwhile.
- monitor: heartbeats; a dead monitor worker is noticed after `heartbeat_timeout` and the
  session restarts on another one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

from common.task_queues import TRADE_EXECUTION, TRADE_MARKET, TRADE_MONITOR, TRADE_WORKFLOWS

with workflow.unsafe.imports_passed_through():
    from activities.schemas.feedback import FeedbackResult
    from activities.schemas.gates import GateReport, ReleaseLockResult
    from activities.schemas.monitor import WatchEvent
    from activities.schemas.reconcile import ActionOutcome
    from trading.reconcile import AccountSnapshot
    from activities.schemas.orders import (
        AmendResult,
        CancelResult,
        ClosePositionResult,
        FillsResult,
        OrderResult,
        PositionResult,
    )


@dataclass(frozen=True)
class Call:
    name: str
    task_queue: str
    result_type: type | Any
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat_timeout: timedelta | None = None
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL
    extra: dict = field(default_factory=dict)
    # A local activity: run by the workflow's own worker inside the workflow task (no task
    # queue, no dispatch; one marker event in history). `task_queue` is then the workflow's.
    local: bool = False

    def local_options(self) -> dict[str, Any]:
        return dict(result_type=self.result_type, start_to_close_timeout=self.start_to_close,
                    retry_policy=self.retry, cancellation_type=self.cancellation_type)

    def options(self, **overrides: Any) -> dict[str, Any]:
        opts = dict(
            task_queue=self.task_queue,
            result_type=self.result_type,
            start_to_close_timeout=self.start_to_close,
            retry_policy=self.retry,
            heartbeat_timeout=self.heartbeat_timeout,
            cancellation_type=self.cancellation_type,
        )
        opts.update(overrides)
        return opts


_QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=500), backoff_coefficient=2,
                     maximum_interval=timedelta(seconds=5), maximum_attempts=5)
_ORDER = RetryPolicy(initial_interval=timedelta(milliseconds=300), backoff_coefficient=2,
                     maximum_interval=timedelta(seconds=5), maximum_attempts=8)
_UNTIL_DONE = RetryPolicy(initial_interval=timedelta(milliseconds=300), backoff_coefficient=2,
                          maximum_interval=timedelta(seconds=30), maximum_attempts=0)
_FEEDBACK = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2,
                        maximum_interval=timedelta(seconds=30), maximum_attempts=10)

_S = timedelta(seconds=1)

# A local activity (see `Call.local`): the gates read Redis and the market (and take the symbol
# lock, idempotent for this workflow id) within the trade's first workflow task. A worker that
# dies meanwhile loses the task; the next worker runs the gates again.
RUN_GATES = Call("run_gates", TRADE_WORKFLOWS, GateReport, 10 * _S, _QUICK, local=True)
RELEASE_SYMBOL_LOCK = Call("release_symbol_lock", TRADE_MARKET, ReleaseLockResult, 10 * _S, _UNTIL_DONE)
# After the gates themselves could not run (Redis down, say), the release is tried within the
# same short budget: the trade ends REJECTED instead of waiting for Redis forever (the lock can
# only be held if a lost attempt took it; its owner is this workflow id, shown by the gate).
RELEASE_SYMBOL_LOCK_QUICK = Call("release_symbol_lock", TRADE_MARKET, ReleaseLockResult, 10 * _S, _QUICK)
# The trade's last step: the symbol lock's release and the feedback records, retried until done
# (the learning record must not be lost, and the symbol must be freed).
RECORD_CLOSE = Call("record_close", TRADE_MARKET, FeedbackResult, 10 * _S, _UNTIL_DONE)

# Order calls time out soon after ccxt's own 10 s request timeout: when a worker dies mid-call
# the retry (which looks the client id up first) starts after this, and until then a fresh
# position may have no stop yet (crash tests measured ~18-24 s with 20 s here).
_ORDER_TIMEOUT = 13 * _S
PLACE_ORDER = Call("place_order", TRADE_EXECUTION, OrderResult, _ORDER_TIMEOUT, _ORDER)
# The entry and its protective stop in one attempt (activities/entry.py). A short heartbeat
# timeout: a worker that dies after the fill is replaced within seconds and the retry places the
# stop at once. It must stay above the entry request's window (entry.ENTRY_RECV_WINDOW_MS, 2 s)
# plus clock slack: a retry then never meets a request of a dead attempt still in flight.
OPEN_POSITION = Call("open_position", TRADE_EXECUTION, OrderResult, 30 * _S, _ORDER,
                     heartbeat_timeout=3 * _S)
# A TP harvest, a stop move, a partial close: each step looked up by client id first, so the
# retry (until done) resumes where a failed attempt stopped; the old stop rests meanwhile.
AMEND_POSITION = Call("amend_position", TRADE_EXECUTION, AmendResult, 30 * _S, _UNTIL_DONE)
GET_ORDER = Call("get_order", TRADE_EXECUTION, OrderResult | None, _ORDER_TIMEOUT, _ORDER)
CANCEL_ORDER = Call("cancel_order", TRADE_EXECUTION, CancelResult, _ORDER_TIMEOUT, _UNTIL_DONE)
# Heartbeating: the close, the stops' cancels and the fills share the order throttle (long on
# mass closes), and a dead worker is noticed after 5 s.
CLOSE_POSITION = Call("close_position", TRADE_EXECUTION, ClosePositionResult, 120 * _S, _UNTIL_DONE,
                      heartbeat_timeout=5 * _S)
GET_POSITION = Call("get_position", TRADE_EXECUTION, PositionResult, _ORDER_TIMEOUT, _ORDER)
GET_FILLS = Call("get_fills", TRADE_EXECUTION, FillsResult, 30 * _S, _UNTIL_DONE)

# The monitor is read-only: when the workflow interrupts it (operator update, pause) it sends
# the cancellation without waiting for it (TRY_CANCEL); the worker learns of it at its next
# heartbeat (the SDK throttles heartbeats to 0.8 x heartbeat_timeout) and the session ends.
WATCH_POSITION = Call(
    "watch_position", TRADE_MONITOR, WatchEvent, timedelta(hours=2),
    RetryPolicy(initial_interval=_S, backoff_coefficient=2, maximum_interval=timedelta(seconds=10),
                maximum_attempts=0),
    heartbeat_timeout=timedelta(seconds=20),
    cancellation_type=ActivityCancellationType.TRY_CANCEL,
)

# Reconciliation (workflows/reconcile.py), on the execution queue with the order client. The
# snapshot reports what it could not read instead of failing (the run then changes nothing): its
# retries are for a worker lost mid-read. Each action is safe to repeat.
RECONCILE_SNAPSHOT = Call("reconcile_snapshot", TRADE_EXECUTION, AccountSnapshot, 60 * _S, _QUICK)
RECONCILE_ACT = Call("reconcile_act", TRADE_EXECUTION, list[ActionOutcome], 300 * _S, _QUICK,
                     heartbeat_timeout=30 * _S)
PUBLISH_RECONCILE_REPORT = Call("publish_reconcile_report", TRADE_EXECUTION, int, 10 * _S, _FEEDBACK)
