"""Crash-test rig: `qt worker --queue all` as a real subprocess on the test stack, SIGKILLed
and restarted by the test, plus the checks every crash test makes.

- `WorkerProcess`: start / SIGKILL / restart the worker process; its output goes to one log file
  per start under the test's tmp dir (printed at teardown, so a failure shows it).
- `CrashRig`: intents at the paper exchange's price and clock, trade start, `state` polling,
  "the faulted request is in flight now" (the fault rule was taken), `crash()` = SIGKILL + a
  fresh worker.
- `trade_audit` / `Protection` (from `tests/fixtures/protection.py`, shared with the lifecycle
  tests): the paper exchange's audit log of one trade, replayed event by event: placements per
  client id, the position, and the stops resting at each moment.

No in-process workers run in these tests: the subprocess is the only worker, so killing it
really stops every queue (workflow, execution, monitor, market) at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.api.enums.v1 import EventType, WorkflowExecutionStatus
from temporalio.client import Client, WorkflowHandle

from local_stack.paper_server import REPO_ROOT, PaperServer
from local_stack.intents import intent_fields
from tests.fixtures.protection import Protection, placements, trade_audit  # noqa: F401 (re-exported)
from workflows.starter import start_trade
from workflows.trade_state import TradeResult, TradeState

D = Decimal


# ================================================================================ the worker


def worker_command() -> list[str]:
    """`qt worker --queue all` from this venv (the installed console script when present)."""
    script = Path(sys.executable).with_name("qt")
    if script.exists():
        return [str(script), "worker", "--queue", "all"]
    return [sys.executable, "-c", "from qt.cli import app; app()", "worker", "--queue", "all"]


# The packages a worker imports (pyproject's package list).
CODE_PACKAGES = ("common", "exchange", "qt", "trading", "workflows", "activities", "workers", "signals_ingest",
                 "api", "notifications", "paper_exchange")


def snapshot_code(dest: Path) -> Path:
    """A copy of the worker's code, taken once per test.

    Every worker process of a test imports this copy (it comes first on PYTHONPATH, before
    the editable install), so the worker restarted after a crash runs exactly the code the
    killed one ran, as a redeployed worker would, even while the working tree changes under
    the test. Otherwise a workflow started by one version and replayed by another fails with a
    nondeterminism error that says nothing about crash safety.
    """
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "ohlcv")
    for name in CODE_PACKAGES:
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=ignore)
    return dest


def worker_env(temporal_address: str, redis_url: str, paper: PaperServer, data_dir: Path,
               code_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    if code_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code_dir), *filter(None, [env.get("PYTHONPATH")])])
    env.update({
        "PYTHONUNBUFFERED": "1",
        "QT_DATA_DIR": str(data_dir),
        "QT_TEMPORAL_ADDRESS": temporal_address,
        "QT_TEMPORAL_NAMESPACE": "default",
        "QT_REDIS_URL": redis_url,
        "QT_EXCHANGE_MODE": "paper",
        "QT_PAPER_HOST": "127.0.0.1",
        "QT_PAPER_PORT": str(paper.port),
        "QT_PAPER_API_KEY": paper.settings.api_key,
        "QT_PAPER_API_SECRET": paper.settings.api_secret,
        # Rules: no kill score (needs candle history), no time limit (market time only moves
        # when a test advances it anyway), a dead monitor noticed after 5 s, no cooldown.
        "QT_TRADE_KILL_SCORE": "false",
        "QT_TRADE_MAX_HOLD_S": str(10 * 365 * 86400),
        "QT_TRADE_HEARTBEAT_TIMEOUT_S": "5",
        "QT_RISK_COOLDOWN_S": "0",
        "QT_WORKER_MONITOR_POLL_S": "0.05",
        "QT_WORKER_EXECUTION_RATE_PER_S": "0",
        # These workers share the session's Temporal server with every other test: a reconcile
        # Schedule they kept would act on the other tests' trades (tests/workflows/test_reconcile.py
        # and the chaos suite test it on stacks of their own or run it by hand).
        "QT_RECONCILE_SCHEDULE": "false",
    })
    return env


class WorkerProcess:
    """One `qt worker --queue all` at a time; every start logs to its own file."""

    def __init__(self, env: dict[str, str], log_dir: Path, cwd: Path = REPO_ROOT) -> None:
        self.env, self.log_dir, self.cwd = env, log_dir, cwd
        self.process: subprocess.Popen | None = None
        self.logs: list[Path] = []

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self, timeout: float = 90) -> None:
        assert not self.alive, "a worker is already running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"worker-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(worker_command(), cwd=self.cwd, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited with {self.process.returncode}:\n{self.output()}")
            if "polling" in log_path.read_text(errors="replace"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the worker did not start polling in {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no activity gets to finish or report."""
        assert self.alive, f"the worker died before the test killed it:\n{self.output()}"
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def output(self) -> str:
        parts = []
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {path.name} -----\n{text}")
        return "\n".join(parts)


# =================================================================================== the rig


# Every crash test's entry-to-stop gap (test id -> ms), printed at the end of the session
# (conftest.py) so one run of `pytest tests/crash -s` gives all the figures the README states.
GAPS: dict[str, int | None] = {}
RESTARTS: dict[str, list[float]] = {}


@dataclass
class CrashRig:
    client: Client
    paper: PaperServer
    worker: WorkerProcess
    handles: list[WorkflowHandle] = field(default_factory=list)
    crashes: int = 0
    restart_s: list[float] = field(default_factory=list)  # SIGKILL -> the fresh worker polls

    def intent(self, symbol: str, side: str, price: Any, **fields: Any) -> dict:
        """A fresh intent at the paper exchange's market clock (as `TradeRig.intent`)."""
        return intent_fields(symbol, side, price, self.paper.clock()["market_ms"], id_prefix="c",
                             model="crash-test", **fields)

    async def start(self, fields: dict) -> WorkflowHandle:
        handle, started = await start_trade(self.client, fields)
        assert started
        self.handles.append(handle)
        return handle

    async def state(self, handle: WorkflowHandle) -> TradeState:
        return await handle.query("state", result_type=TradeState)

    async def wait_for(self, handle: WorkflowHandle, check: Callable[[TradeState], bool],
                       timeout: float = 90, what: str = "condition") -> TradeState:
        """Poll the `state` query (it needs a live worker; errors while one starts are retried)."""
        deadline = time.monotonic() + timeout
        last, error = None, None
        while time.monotonic() < deadline:
            try:
                last = await asyncio.wait_for(self.state(handle), 15)
                if check(last):
                    return last
            except Exception as exc:  # noqa: BLE001 (query timeouts while the worker restarts)
                error = exc
            await asyncio.sleep(0.1)
        raise AssertionError(f"{what} not reached in {timeout} s; last state: "
                             f"{last.status if last else None} {last.notes if last else None}; "
                             f"last error: {error!r}")

    async def wait_status(self, handle: WorkflowHandle, *statuses: str, timeout: float = 90) -> TradeState:
        return await self.wait_for(handle, lambda s: s.status.value in statuses, timeout,
                                   what=f"status {'/'.join(statuses)}")

    def add_fault(self, **rule: Any) -> None:
        self.paper.add_fault(**rule)

    async def wait_fault_taken(self, timeout: float = 90) -> None:
        """Every fault rule was taken: the faulted request reached the exchange and, for a
        latency rule, is being held there right now (the order is in flight)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.paper.http.get("/_paper/faults").json() == []:
                return
            if not self.worker.alive:
                raise AssertionError(f"the worker died:\n{self.worker.output()}")
            await asyncio.sleep(0.02)
        raise AssertionError(f"the faulted request never came in {timeout} s")

    async def crash(self, *, down_s: float = 0.0) -> None:
        """SIGKILL the worker, stay down `down_s` seconds, start a fresh one."""
        killed = time.monotonic()
        self.worker.kill()
        self.crashes += 1
        if down_s:
            await asyncio.sleep(down_s)
        await self.worker.start()
        self.restart_s.append(round(time.monotonic() - killed, 2))

    async def result(self, handle: WorkflowHandle, timeout: float = 150) -> TradeResult:
        return await asyncio.wait_for(handle.result(), timeout)

    async def attempts(self, handle: WorkflowHandle, activity: str) -> list[int]:
        """The attempt number of each completed `activity` call (history: ActivityTaskStarted)."""
        scheduled: dict[int, str] = {}
        attempts = []
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = event.activity_task_started_event_attributes
                if scheduled.get(attrs.scheduled_event_id) == activity:
                    attempts.append(attrs.attempt)
        return attempts

    async def last_attempt_started_ms(self, handle: WorkflowHandle, activity: str) -> list[int]:
        """Wall ms at which the last attempt of each completed `activity` call started."""
        scheduled: dict[int, str] = {}
        started = []
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                if scheduled.get(event.activity_task_started_event_attributes.scheduled_event_id) == activity:
                    started.append(int(event.event_time.ToMilliseconds()))
        return started

    async def cleanup(self) -> None:
        for handle in self.handles:
            try:
                description = await handle.describe()
                if description.raw_description.workflow_execution_info.status == \
                        WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
                    await handle.terminate("crash test teardown")
            except Exception:  # noqa: BLE001
                pass


@pytest_asyncio.fixture
async def crash_rig(request, temporal_env, redis_server, redis_client, paper,
                    tmp_path) -> AsyncIterator[CrashRig]:
    """A worker subprocess on the test stack (started, polling) and the rig around it."""
    address = temporal_env.client.service_client.config.target_host
    code = snapshot_code(tmp_path / "code")
    env = worker_env(address, redis_server.url, paper, tmp_path / "data", code_dir=code)
    worker = WorkerProcess(env, tmp_path / "logs", cwd=code)
    rig = CrashRig(temporal_env.client, paper, worker)
    try:
        await worker.start()
        yield rig
    finally:
        if rig.restart_s:
            RESTARTS[request.node.name] = rig.restart_s
        await rig.cleanup()
        worker.stop()
        paper.clear_faults()
        print(worker.output())  # shown by pytest only when the test failed
