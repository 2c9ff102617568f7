"""Benchmark of the TradeWorkflow lifecycle on the real stack, in one run.

Starts its own Temporal dev server, redis-server and paper exchange (speed 0: prices move only
when pinned; temp dir), runs every queue's worker in this process the way the test rig does
(`build_workers` + `Dependencies`, pinned TradePolicy: kill score off, cooldown 0, no max
holding time; everything else the production default, the PriceHub poll interval included),
and prints:

1. intent → entry-order latency, p50/p99, for TradeWorkflow and for `BenchNoopEntry`, a workflow
   with the shape the TradeWorkflow had before the entry until the gates became a local activity
   (a run_gates activity, then place_order) whose activities return at once.
   Clock: from the `start_trade(...)` call (no-op: `start_workflow`) to the paper exchange's
   wall clock (`wall_ms` in its audit log) for the `…-entry` order (no-op: the moment its
   place_order ran). Trades run one at a time over the 7 paper symbols, each closed (`close`
   update) before the next; the two kinds alternate, after a warm-up that is not counted.
2. History events of one full lifecycle (entry → TP1 → break-even → trailing → trailing exit;
   and a plain SL exit), summed over continue-as-new runs.
3. History events of a quiet (price pinned) open position: measured per monitor session with
   a 5 s session cap, then events/hour = events/session × 3600 / the production session cap.
4. CPU and RSS of a `qt worker --queue trade-monitor` SUBPROCESS holding 1,000 quiet
   `watch_position` sessions (driven through Temporal by `BenchWatchFleet`), against the same
   worker with 1 session.
5. Price-cross → close-order latency: with 7 trades open (6 of them quiet, so the monitor's
   polls load the exchange client's throttle), the price is pinned through TP1; from
   `/_paper/price` answering to the paper exchange handling the reduce-only `…-tp1` order.
   Measured three times in the same run, by exchange wiring: the production one (market-data
   and order clients, each its own throttle, Binance's request weights), the previous one
   (one client for everything with ccxt's own throttle), and the test rig's (throttle off).

6. Stale decisions/s: a 0-activity workflow (the floor), a stale intent the intake proved stale,
   one refused by the gates (`benchmarks/stale_decisions.py`), side by side.

Usage: .venv/bin/python benchmarks/lifecycle.py [--quick] [--trades N] [--crosses N]
       [--sessions N] [--positions N] [--measure-s S] [--stale N] [--only 1,2,3,4,5,6]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from temporalio.api.enums.v1 import EventType, PendingActivityState  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402

from activities.schemas.monitor import WatchRequest  # noqa: E402
from activities.schemas.policy import MonitorPolicy, TradePolicy  # noqa: E402
from benchmarks.stale_decisions import stale_rows  # noqa: E402
from benchmarks._stack import (  # noqa: E402
    BENCH_WORKFLOWS,
    NOOP_ENTRY_AT,
    PRODUCTION,
    RIG,
    SHARED,
    SYMBOLS,
    InProcessWorkers,
    Stack,
    event_name,
    history_events,
    order_id,
    percentile,
    proc_sample,
    stop_process,
    worker_subprocess,
)
from local_stack.exit_states import exit_state  # noqa: E402
from trading.exits import ExitPolicy  # noqa: E402
from trading.models import ExitReason, TradeStatus  # noqa: E402
from common.task_queues import TRADE_MONITOR  # noqa: E402
from workers.registry import WorkerSettings  # noqa: E402

D = Decimal
PRODUCTION_SESSION_CAP_S = MonitorPolicy().session_cap_s
QUIET_SESSION_CAP_S = 5.0

# Production rules except what a benchmark must pin (as tests/fixtures/trading.py does).
POLICY = TradePolicy(
    monitor=MonitorPolicy(kill_score=False),
    exits=ExitPolicy(max_hold_s=None),
    cooldown_s=0,
)
QUIET_POLICY = POLICY.model_copy(update={"monitor": MonitorPolicy(session_cap_s=QUIET_SESSION_CAP_S,
                                                                  kill_score=False)})


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: no target (information)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(figure, value, target, ok))

    def print(self) -> None:
        self.rows.sort(key=lambda r: r.figure.split(".", 1)[0])
        self.notes.sort(key=lambda n: n.split(".", 1)[0])
        width = max(len(r.figure) for r in self.rows)
        vwidth = max(len(r.value) for r in self.rows)
        print(f"{'figure':<{width}}  {'value':>{vwidth}}  {'target':<8}  result")
        print("-" * (width + vwidth + 22))
        for r in self.rows:
            verdict = "" if r.ok is None else ("PASS" if r.ok else "FAIL")
            print(f"{r.figure:<{width}}  {r.value:>{vwidth}}  {r.target:<8}  {verdict}")
        for note in self.notes:
            print(f"- {note}")


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def ceil_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(rounding=ROUND_CEILING) * tick


def floor_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick


# ======================================================================= 1. intent → entry


@dataclass
class EntryBreakdown:
    """Where the time before the entry order went, from the server's event timestamps (ms)."""

    total: float  # workflow started → entry activity started
    tasks: float  # workflow tasks (started → completed) before the entry was scheduled
    task_list: list[float]
    activities: float  # activity run time on the critical path (slowest of each parallel pair)
    other: float  # the rest: queueing/dispatch of tasks and activities, server time


def entry_breakdown(history: list, entry_activity: str) -> EntryBreakdown:
    at = lambda e: e.event_time.ToMicroseconds() / 1000  # noqa: E731
    scheduled: dict[int, tuple[str, float, int]] = {}
    started: dict[int, float] = {}
    completed: dict[int, float] = {}
    task_started: float | None = None
    tasks: list[tuple[float, float]] = []
    for e in history:
        kind = e.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = e.activity_task_scheduled_event_attributes
            scheduled[e.event_id] = (a.activity_type.name, at(e), a.workflow_task_completed_event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[e.activity_task_started_event_attributes.scheduled_event_id] = at(e)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed[e.activity_task_completed_event_attributes.scheduled_event_id] = at(e)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = at(e)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and task_started is not None:
            tasks.append((task_started, at(e)))
    entry_id = min(i for i, (name, _, _) in scheduled.items() if name == entry_activity)
    entry_scheduled = scheduled[entry_id][1]
    stages: dict[int, float] = {}
    for i, (_name, _when, stage) in scheduled.items():
        if i < entry_id and i in started and i in completed:
            stages[stage] = max(stages.get(stage, 0.0), completed[i] - started[i])
    task_list = [done - start for start, done in tasks if done <= entry_scheduled + 5]
    total = started[entry_id] - at(history[0])
    return EntryBreakdown(total, sum(task_list), task_list, sum(stages.values()),
                          total - sum(task_list) - sum(stages.values()))


async def entry_latency(stack: Stack, report: Report, trades: int, warmup: int) -> list[WorkflowHandle]:
    trade_ms: list[float] = []
    noop_ms: list[float] = []
    handles: list[WorkflowHandle] = []
    trade_parts: list[EntryBreakdown] = []
    noop_parts: list[EntryBreakdown] = []
    for i in range(warmup + trades):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        fields = await stack.intent(symbol)

        started = time.time()
        handle = await stack.start(fields)
        await stack.wait_open(handle)
        accepted = await stack.accepted_wall_ms(order_id(handle, "entry"))
        if accepted is None:
            raise RuntimeError(f"{handle.id}: no accepted entry order in the paper audit log")
        trade = accepted - started * 1000
        result = await stack.close(handle)
        await handle.result()
        if result.status is not TradeStatus.CLOSED:
            raise RuntimeError(f"{handle.id} ended {result.status}: {result.reason}")

        workflow_id = f"bench-noop-{uuid.uuid4().hex[:12]}"
        started = time.time()
        noop = await stack.client.start_workflow("BenchNoopEntry", id=workflow_id, task_queue=BENCH_WORKFLOWS)
        await noop.result()
        noop_latency = (NOOP_ENTRY_AT.pop(workflow_id) - started) * 1000

        if i >= warmup:
            trade_ms.append(trade)
            noop_ms.append(noop_latency)
            handles.append(handle)
            trade_parts.append(entry_breakdown((await history_events(stack.client, handle))[2], "open_position"))
            noop_parts.append(entry_breakdown((await history_events(stack.client, noop))[2],
                                              "bench_noop_place_order"))
    t50, t99 = percentile(trade_ms, 50), percentile(trade_ms, 99)
    n50, n99 = percentile(noop_ms, 50), percentile(noop_ms, 99)
    log(f"entry: TradeWorkflow p50 {t50:.1f} p99 {t99:.1f}; no-op p50 {n50:.1f} p99 {n99:.1f} "
        f"(n={len(trade_ms)}, mean {statistics.mean(trade_ms):.1f} / {statistics.mean(noop_ms):.1f})")
    report.add(f"1. intent→entry p50, TradeWorkflow (n={len(trade_ms)})", ms(t50))
    report.add(f"1. intent→entry p99, TradeWorkflow (n={len(trade_ms)})", ms(t99))
    report.add(f"1. intent→entry p50, no-op same shape (n={len(noop_ms)})", ms(n50))
    report.add(f"1. intent→entry p99, no-op same shape (n={len(noop_ms)})", ms(n99))
    def med(parts: list[EntryBreakdown], name: str) -> float:
        return statistics.median(getattr(p, name) for p in parts)

    for name, label in (("total", "workflow start → entry activity start (server clock)"),
                        ("tasks", "workflow-task time (worker)"),
                        ("activities", "activity time on the critical path"),
                        ("other", "dispatch and server time (rest)")):
        report.add(f"1. before the entry, {label}, median", f"{med(trade_parts, name):.0f} / "
                   f"{med(noop_parts, name):.0f} ms")
    per_task = [statistics.median(p.task_list[k] for p in trade_parts if len(p.task_list) > k)
                for k in range(max(len(p.task_list) for p in trade_parts))]
    noop_tasks = [statistics.median(p.task_list[k] for p in noop_parts if len(p.task_list) > k)
                  for k in range(max(len(p.task_list) for p in noop_parts))]
    log(f"entry: workflow tasks before the entry, median ms each: TradeWorkflow "
        f"{[round(t, 1) for t in per_task]}, no-op {[round(t, 1) for t in noop_tasks]}")
    report.notes.append(
        "1. breakdown rows are TradeWorkflow / no-op medians from the history's event times up to the "
        "entry activity's start: workflow tasks (started → completed), the slowest activity of each "
        "parallel pair, and the rest (tasks and activities waiting to be dispatched, server). Median "
        "workflow-task times in order, TradeWorkflow: "
        f"{', '.join(f'{t:.0f}' for t in per_task)} ms; no-op: {', '.join(f'{t:.0f}' for t in noop_tasks)} ms.")
    report.add("1. ratio p50 TradeWorkflow / no-op", f"{t50 / n50:.2f}", "≤ 0.5", t50 / n50 <= 0.5)
    report.add("1. ratio p99 TradeWorkflow / no-op", f"{t99 / n99:.2f}", "≤ 1.0", t99 / n99 <= 1.0)
    return handles


# ====================================================================== 2. history events


async def lifecycle_tp_trailing(stack: Stack, symbol: str) -> tuple[WorkflowHandle, object]:
    """entry → TP1 (partial close, stop to break-even) → trailing stop ratchets → trailing exit."""
    tick = stack.ticks[symbol]
    handle = await stack.start(await stack.intent(symbol))
    state = await stack.wait_open(handle)
    tp1, tp2 = (tp.price for tp in state.exit.levels.take_profits[:2])
    await stack.set_price(symbol, ceil_tick(tp1 + (tp2 - tp1) * D("0.1"), tick))
    await stack.wait_for(handle, lambda s: s.exit.tps_done == 1 and s.stop_seq >= 2)
    await stack.set_price(symbol, floor_tick(tp1 + (tp2 - tp1) * D("0.8"), tick))
    state = await stack.wait_for(handle, lambda s: s.exit.stop_kind.value == "TRAILING"
                                 and s.exit.stop > s.entry_price)
    await stack.set_price(symbol, floor_tick(state.exit.stop - 2 * tick, tick))
    result = await asyncio.wait_for(handle.result(), 60)
    return handle, result


async def lifecycle_stop_loss(stack: Stack, symbol: str) -> tuple[WorkflowHandle, object]:
    tick = stack.ticks[symbol]
    handle = await stack.start(await stack.intent(symbol))
    state = await stack.wait_open(handle)
    await stack.set_price(symbol, floor_tick(state.exit.stop * D("0.998"), tick))
    result = await asyncio.wait_for(handle.result(), 60)
    return handle, result


async def lifecycle_events(stack: Stack, report: Report, manual: list[WorkflowHandle], repeats: int) -> None:
    """Each lifecycle `repeats` times: the count moves by a few events with timing (two activities
    finishing in one workflow task or in two), so the target is checked on the largest."""
    client = stack.client
    cases = [("entry → TP1 → trailing → close", lifecycle_tp_trailing, "ETHUSDT", ExitReason.TRAILING),
             ("entry → plain SL exit", lifecycle_stop_loss, "BTCUSDT", ExitReason.SL)]
    for label, run, symbol, expected in cases:
        counts, reasons, steps, activities, tasks = [], set(), [], 0, 0
        for _ in range(repeats):
            handle, result = await run(stack, symbol)
            await stack.pin_all()
            events, runs, history = await history_events(client, handle)
            counts.append(events)
            reasons.add(result.exit_reason.value if result.exit_reason else str(result.status.value))
            steps = [o.split("-", 2)[-1] for o in result.details.get("orders", [])]
            if events == max(counts):
                activities = sum(1 for e in history if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
                tasks = sum(1 for e in history if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
            if result.exit_reason is not expected:
                report.notes.append(f"2. {label}: exit {result.status.value}/{result.exit_reason} "
                                    f"(expected {expected.value}): {result.reason}")
            if runs > 1:
                report.notes.append(f"2. {label}: {runs} runs (continue-as-new), events summed")
        log(f"{label}: exits {sorted(reasons)}, events {counts}; orders {', '.join(steps)}")
        report.add(f"2. history events, {label} (max of {len(counts)}: {'/'.join(map(str, counts))})",
                   str(max(counts)), "≤ 60", max(counts) <= 60)
        report.notes.append(f"2. {label} ({'/'.join(sorted(reasons))}; orders {', '.join(steps)}): "
                            f"{max(counts)} events = {activities} activities × 3 + {tasks} workflow tasks × 3 "
                            f"+ search-attribute upserts + start/completion")
    if manual:
        counts = [(await history_events(client, h))[0] for h in manual]
        report.add(f"2. history events, entry → manual close (phase-1 trades, max of {len(counts)}; "
                   f"min {min(counts)})", f"{max(counts)}", "≤ 60", max(counts) <= 60)


# ================================================================== 3. quiet open position


async def quiet_events(stack: Stack, report: Report, sessions: int) -> None:
    client = stack.client
    symbol = "XLMUSDT"
    handle = await stack.start(await stack.intent(symbol))
    await stack.wait_open(handle)

    def watch_starts(history: list) -> list[int]:
        return [i for i, e in enumerate(history)
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and e.activity_task_scheduled_event_attributes.activity_type.name == "watch_position"]

    # Session 1 also carries the entry's background writes; count from the start of session 2.
    deadline = time.monotonic() + (sessions + 2) * QUIET_SESSION_CAP_S + 60
    while True:
        total, runs, history = await history_events(client, handle)
        starts = watch_starts(history)
        if len(starts) >= sessions + 2:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(starts)} monitor sessions in time")
        await asyncio.sleep(1)
    first, last = starts[1], starts[sessions + 1]
    per_session = (last - first) / sessions
    one_session = [event_name(e) for e in history[starts[1]:starts[2]]]
    await stack.close(handle)
    await handle.result()
    per_hour = per_session * 3600 / PRODUCTION_SESSION_CAP_S
    log(f"quiet: {per_session:.2f} events/session over {sessions} sessions of {QUIET_SESSION_CAP_S:g} s; "
        f"one session: {', '.join(one_session)}")
    report.add(f"3. events per monitor session, quiet position (measured, {sessions} sessions "
               f"× {QUIET_SESSION_CAP_S:g} s cap)", f"{per_session:.2f}")
    report.add(f"3. events per hour, quiet position (derived, session cap "
               f"{PRODUCTION_SESSION_CAP_S:g} s)", f"{per_hour:.1f}", "≤ 6", per_hour <= 6)
    report.notes.append(
        f"3. events/hour = events/session × 3600 / session_cap_s = {per_session:.2f} × 3600 / "
        f"{PRODUCTION_SESSION_CAP_S:g} (MonitorPolicy.session_cap_s default). A quiet session ends "
        f"by SESSION_CAP only; its events: {', '.join(one_session)}. Heartbeats add no events. "
        f"Kill score off (speed-0 market: no candle closes); with it on, the monitor returns on a "
        f"candle close only when the score reaches the threshold, so a quiet position adds none.")


# ====================================================================== 6. stale decisions


async def stale_decisions(stack: Stack, report: Report, intents: int) -> None:
    rows = await stale_rows(stack, intents)
    floor = rows[0][1]
    for label, rate, events in rows:
        report.add(f"6. {label}, decisions/s ({events} history events each)",
                   f"{rate:.1f} ({rate / floor:.2f}× the floor)")
    report.notes.append(
        f"6. {intents} workflows per row, 32 starts at once (benchmarks/stale_decisions.py): the floor "
        f"is a workflow that completes in its first task with no activity; a stale intent proven by the "
        f"intake ends REJECTED the same way, one refused by the gates needs its run_gates activity.")


# ============================================================ 4. monitor worker CPU / memory


async def open_real_positions(stack: Stack, symbols: list[str]) -> dict[str, Decimal]:
    """Small real positions, so the monitor's shared position poll sees the size it expects."""
    sizes: dict[str, Decimal] = {}
    for symbol in symbols:
        market = stack.exchange.markets_by_id[symbol][0]
        step = D(str(market["precision"]["amount"]))
        min_cost = D(str(market["limits"]["cost"]["min"] or 5))
        amount = max(ceil_tick(min_cost * D("1.5") / stack.pins[symbol], step),
                     D(str(market["limits"]["amount"]["min"] or step)))
        await stack.exchange.create_order(market["symbol"], "market", "buy", float(amount))
        positions = await stack.exchange.fetch_positions([market["symbol"]])
        sizes[symbol] = sum((abs(D(str(p.get("contracts") or 0))) for p in positions), D(0))
    return sizes


async def fleet_started(stack: Stack, handles: list[WorkflowHandle]) -> tuple[int, int]:
    """(watch_position activities running on a worker, still pending in total)."""
    running = pending = 0
    for handle in handles:
        description = await handle.describe()
        for activity in description.raw_description.pending_activities:
            pending += 1
            running += activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    return running, pending


async def monitor_case(stack: Stack, positions: int, measure_s: float, logs: Path) -> dict:
    symbols = list(SYMBOLS) if positions > 1 else ["BTCUSDT"]
    await stack.reset()
    sizes = await open_real_positions(stack, symbols)
    market_ms = await stack.market_ms()
    process = worker_subprocess(stack, TRADE_MONITOR, logs / f"monitor-{positions}.log")
    handles: list[WorkflowHandle] = []
    try:
        deadline = time.monotonic() + 60
        while b"polling" not in (logs / f"monitor-{positions}.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (logs / f"monitor-{positions}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the monitor worker did not start:\n{tail}")
            await asyncio.sleep(0.2)
        idle = proc_sample(process.pid)

        requests = []
        for i in range(positions):
            symbol = symbols[i % len(symbols)]
            pin, tick = stack.pins[symbol], stack.ticks[symbol]
            requests.append(WatchRequest(
                workflow_id=f"bench-fleet-{i}", symbol=symbol, session_cap_s=measure_s + 600,
                exit=exit_state(side="BUY", stop=floor_tick(pin * D("0.5"), tick),
                                take_profits=[ceil_tick(pin * D("1.5"), tick)], entry=pin, tick=str(tick),
                                opened_at_ms=market_ms),
                position_qty=sizes[symbol], heartbeat_interval_s=MonitorPolicy().heartbeat_interval_s))
        run_id = uuid.uuid4().hex[:8]
        for n, start in enumerate(range(0, positions, 100)):
            handles.append(await stack.client.start_workflow(
                "BenchWatchFleet", requests[start:start + 100], id=f"bench-fleet-{run_id}-{n}",
                task_queue=BENCH_WORKFLOWS))
        dispatch_started = time.monotonic()
        deadline = dispatch_started + 180
        while True:
            running, pending = await fleet_started(stack, handles)
            if running >= positions:
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"only {running}/{positions} watch_position sessions started")
            await asyncio.sleep(0.5)
        dispatch_s = time.monotonic() - dispatch_started
        await asyncio.sleep(2)  # every session subscribed and has seen a few polls
        before = proc_sample(process.pid)
        await asyncio.sleep(measure_s)
        after = proc_sample(process.pid)
        running, pending = await fleet_started(stack, handles)
        if running != positions:
            raise RuntimeError(f"{positions - running} sessions ended during the quiet period")
    finally:
        stop_process(process)
        for handle in handles:
            try:
                await handle.terminate("benchmark done")
            except Exception:  # noqa: BLE001 (already ended)
                pass
    wall = after.wall_s - before.wall_s
    return {"positions": positions, "symbols": len(symbols), "cpu_pct": 100 * (after.cpu_s - before.cpu_s) / wall,
            "rss_mb": after.rss_mb, "hwm_mb": after.hwm_mb, "idle_rss_mb": idle.rss_mb,
            "dispatch_s": dispatch_s, "measured_s": wall}


async def monitor_footprint(stack: Stack, report: Report, positions: int, measure_s: float, logs: Path) -> None:
    base = await monitor_case(stack, 1, measure_s, logs)
    many = await monitor_case(stack, positions, measure_s, logs)
    await stack.reset()
    for r in (base, many):
        log(f"monitor worker, {r['positions']} positions on {r['symbols']} symbol(s): CPU {r['cpu_pct']:.2f} % "
            f"over {r['measured_s']:.1f} s, RSS {r['rss_mb']:.1f} MB (idle {r['idle_rss_mb']:.1f}, peak "
            f"{r['hwm_mb']:.1f}), dispatch {r['dispatch_s']:.1f} s")
    report.add("4. monitor worker CPU, 1 quiet position (baseline)", f"{base['cpu_pct']:.2f} %")
    report.add(f"4. monitor worker CPU, {positions} quiet positions", f"{many['cpu_pct']:.2f} %")
    report.add("4. monitor worker CPU ratio vs baseline",
               f"{many['cpu_pct'] / base['cpu_pct']:.2f}" if base["cpu_pct"] > 0 else "n/a")
    report.add("4. monitor worker RSS, 1 quiet position (baseline)", f"{base['rss_mb']:.1f} MB")
    report.add(f"4. monitor worker RSS, {positions} quiet positions", f"{many['rss_mb']:.1f} MB")
    report.add("4. monitor worker RSS per extra position",
               f"{(many['rss_mb'] - base['rss_mb']) * 1024 / max(1, positions - 1):.1f} KB")
    report.notes.append(
        f"4. `qt worker --queue trade-monitor` subprocess (production wiring: market-data client, throttle on, "
        f"poll {WorkerSettings().monitor_poll_s:g} s); CPU = Δ(utime+stime)/Δwall from /proc/<pid>/stat over "
        f"{many['measured_s']:.0f} s once every session was running; RSS = VmRSS at the end. Sessions "
        f"come from BenchWatchFleet workflows ({math.ceil(positions / 100)} × ≤100 activities), levels ±50 % "
        f"from the pinned price, a real position per symbol so the shared position poll matches; "
        f"{positions} positions spread over {many['symbols']} symbols, the baseline's 1 on 1 symbol. "
        f"Real TradeWorkflows cannot hold {positions} positions here: one open trade per symbol is a "
        f"gate and the paper exchange lists 7 symbols. All sessions were still running (quiet) at the "
        f"end of the window. Dispatching {positions} sessions to the worker took "
        f"{many['dispatch_s']:.1f} s; their heartbeats (SDK-throttled to 0.8 × the 20 s heartbeat "
        f"timeout) load the dev server, which may log slow RecordActivityTaskHeartbeat calls.")


# ====================================================================== 5. price-cross → order


WIRING_LABELS = {
    PRODUCTION: "production wiring (order client + market-data client, Binance weights, throttles on)",
    SHARED: "previous wiring (one shared client, ccxt's throttle on)",
    RIG: "test rig (one client, throttle off)",
}


async def reaction_latency(stack: Stack, report: Report, crosses: int, workers: InProcessWorkers) -> None:
    poll_s = WorkerSettings().monitor_poll_s
    wiring = workers.wiring
    latencies: list[float] = []
    kinds: dict[str, int] = {}
    rng = random.Random(7)
    while len(latencies) < crosses:
        handles = {s: await stack.start(await stack.intent(s)) for s in SYMBOLS}
        states = {s: await stack.wait_open(h, timeout=60) for s, h in handles.items()}
        await asyncio.sleep(2)  # every monitor session subscribed: the polls load the throttle
        order = list(SYMBOLS)
        rng.shuffle(order)
        for symbol in order[: crosses - len(latencies)]:
            handle, state, tick = handles[symbol], states[symbol], stack.ticks[symbol]
            tp1, tp2 = (tp.price for tp in state.exit.levels.take_profits[:2])
            await asyncio.sleep(rng.uniform(0, poll_s))  # a random phase of the hub's poll
            await stack.set_price(symbol, ceil_tick(tp1 + (tp2 - tp1) * D("0.25"), tick))
            crossed = time.time() * 1000
            await stack.wait_for(handle, lambda s: s.status.is_final or s.stop_seq >= 2
                                 or any(o.step in ("tp1", "close") for o in s.orders), timeout=60)
            first = None
            for step in ("tp1", "close", "sl-2"):
                at = await stack.accepted_wall_ms(order_id(handle, step))
                if at is not None and (first is None or at < first[1]):
                    first = (step, at)
            if first is None:
                raise RuntimeError(f"{handle.id}: no order after the TP1 cross")
            kinds[first[0]] = kinds.get(first[0], 0) + 1
            latencies.append(first[1] - crossed)
            await asyncio.sleep(1)  # the harvest's follow-up orders (stop to break-even) settle
        await asyncio.gather(*(stack.close(h) for h in handles.values()))
        await asyncio.gather(*(h.result() for h in handles.values()))
        await stack.pin_all()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    log(f"reaction, {wiring}: p50 {p50:.1f} p99 {p99:.1f} max {max(latencies):.1f} ms over "
        f"{len(latencies)} crosses (first order: {kinds})")
    target = ("≤ 300 ms", p50 <= 300) if wiring == PRODUCTION else ("", None)
    report.add(f"5. price-cross → close-order p50, {WIRING_LABELS[wiring]} (n={len(latencies)})",
               ms(p50), *target)
    report.add(f"5. price-cross → close-order p99, {WIRING_LABELS[wiring]} (n={len(latencies)})", ms(p99))
    throttle = ""
    if wiring == PRODUCTION:
        market, orders = workers.clients["market"].budget, workers.clients["orders"].budget
        throttle = (
            f" Throttles over the whole case: market-data client {market.requests} requests, "
            f"{market.weight:.0f} weight, {market.delayed} waited (mean "
            f"{1000 * market.wait_s / max(1, market.delayed):.0f} ms, max {1000 * market.max_wait_s:.0f} ms); "
            f"order client {orders.requests} requests, {orders.weight:.0f} weight; of its orders, "
            f"cancels and lookups {orders.delayed - orders.bulk_delayed} waited (max "
            f"{1000 * orders.max_wait_s:.0f} ms), of its fills/funding reads (bulk lane) "
            f"{orders.bulk_delayed} (max {orders.bulk_max_wait_s:.1f} s: 7 trades closed at once).")
    report.notes.append(
        f"5. {WIRING_LABELS[wiring]}: 7 trades open (one per symbol); per cross the price is pinned 25 % "
        f"of the way from TP1 to TP2 at a random phase of the {poll_s * 1000:g} ms hub poll; latency = "
        f"`/_paper/price` answered → the paper exchange handling the reduce-only order (first of "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))}).{throttle}")


# ========================================================================================= main


async def main(args: argparse.Namespace) -> None:
    began = time.monotonic()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="qt-bench-logs-") as tmp:
        logs = Path(tmp)
        log("starting Temporal dev server, redis-server, paper exchange")
        async with Stack() as stack:
            if {1, 2} & args.only:
                async with InProcessWorkers(stack, POLICY):
                    manual = []
                    if 1 in args.only:
                        log(f"1. intent → entry: {args.trades} trades + {args.warmup} warm-up, "
                            "alternating with no-ops")
                        manual = await entry_latency(stack, report, args.trades, args.warmup)
                    if 2 in args.only:
                        log("2. history events of full lifecycles")
                        await lifecycle_events(stack, report, manual, args.repeats)
            if 5 in args.only:
                for wiring in (PRODUCTION, SHARED, RIG):
                    async with InProcessWorkers(stack, POLICY, wiring=wiring) as workers:
                        log(f"5. price-cross → close order, {wiring} wiring: {args.crosses} crosses")
                        await reaction_latency(stack, report, args.crosses, workers)
            if 3 in args.only:
                async with InProcessWorkers(stack, QUIET_POLICY):
                    log(f"3. quiet position: {args.sessions} sessions of {QUIET_SESSION_CAP_S:g} s")
                    await quiet_events(stack, report, args.sessions)
            if 6 in args.only:
                log(f"6. stale decisions: {args.stale} per row")
                await stale_decisions(stack, report, args.stale)
            if 4 in args.only:
                async with InProcessWorkers(stack, POLICY, production=False):
                    log(f"4. monitor worker subprocess: 1 then {args.positions} quiet sessions, "
                        f"{args.measure_s:g} s each")
                    await monitor_footprint(stack, report, args.positions, args.measure_s, logs)
    print(f"TradeWorkflow lifecycle benchmark ({'quick' if args.quick else 'full'} run, "
          f"{time.monotonic() - began:.0f} s, python {sys.version.split()[0]}, "
          f"paper exchange speed 0, {len(SYMBOLS)} symbols)")
    if 1 in args.only:
        report.notes.insert(0, (
            "1. latency = start_trade() called → paper exchange handles the `…-entry` MARKET order "
            "(audit `wall_ms`); no-op = start_workflow() called → its place_order activity runs. "
            f"Trades alternate with no-ops, one at a time, {args.warmup} warm-up pairs not counted; "
            "p99 of a few dozen samples is close to the maximum. Workers for 1/2/3 run in this "
            "process as in the test rig (ccxt client-side throttle off, no execution rate limit, "
            "PriceHub poll at the production 0.1 s), those for 5 once per exchange wiring (see 5.); "
            "the machine may be shared, so absolute figures move from run to run more than the "
            "ratios measured side by side."))
    report.print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run (< 2 min)")
    parser.add_argument("--trades", type=int, help="intent→entry samples (default 40; quick 8)")
    parser.add_argument("--warmup", type=int, help="warm-up trades not counted (default 7; quick 2)")
    parser.add_argument("--crosses", type=int, help="price crosses (default 21; quick 7)")
    parser.add_argument("--repeats", type=int, help="runs of each full lifecycle (default 3; quick 1)")
    parser.add_argument("--sessions", type=int, help="quiet monitor sessions (default 6; quick 2)")
    parser.add_argument("--positions", type=int, default=1000, help="watch_position sessions (default 1000)")
    parser.add_argument("--measure-s", type=float, help="CPU/RSS window per case (default 30; quick 8)")
    parser.add_argument("--stale", type=int, help="stale decisions per row (default 400; quick 60)")
    parser.add_argument("--only", default="1,2,3,4,5,6", help="sections to run, e.g. 5 or 1,2 (default all)")
    ns = parser.parse_args()
    ns.only = {int(part) for part in ns.only.split(",") if part.strip()}
    defaults = (8, 2, 7, 1, 2, 8.0, 60) if ns.quick else (40, 7, 21, 3, 6, 30.0, 400)
    for name, value in zip(("trades", "warmup", "crosses", "repeats", "sessions", "measure_s", "stale"), defaults,
                           strict=True):
        if getattr(ns, name) is None:
            setattr(ns, name, value)
    asyncio.run(main(ns))
