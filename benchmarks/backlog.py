"""Benchmark: a 10,014-entry backlog of seed-format intents, drained by our intake and by a naive
consumer-group executor in the style of the old system, both SIGKILLed mid-drain, in one run.

The backlog (the seeds' stranded lag: 10,014 intents) is written to `quantum:stream:trade.intent`
before any consumer runs: half flat string fields like the NEARUSDT sample (AI engine, with its
metadata), half one JSON field like the FHEUSDT sample (`fallback-trend-following`), no
`intent_id` (the old producers sent none: the workflow id is the intent's fingerprint), spread
over the paper exchange's 7 symbols. Half are fresh (0-59 s old on the market clock), half stale
(2-3 h old): what a blind replay of a stranded backlog would open.

Each side runs as real subprocesses on its own Redis consumer group:
- naive: `benchmarks/naive_executor.py` (see its docstring). Killed with SIGKILL when 40 % is
  executed, restarted (a new consumer, as the old deployment), run until the group has no lag.
- ours: `qt ingest --only intake` (production defaults), SIGKILLed when 40 % is acknowledged,
  restarted, run until nothing lags or is pending. Then `qt worker --queue all` runs every started
  TradeWorkflow until each has decided (gates: stale → REJECTED; fresh → trades while the
  symbol lock and the risk limits allow), and the paper exchange's audit log says which intents
  placed an entry order.

Printed per side: time to drain (from the first process start until every entry is handed on,
crash and recovery included), entries lost after the SIGKILL, duplicate starts/executions, stale
intents executed. For ours also: duplicates detected (restarted after a crash: "already
started", acknowledged, not run again), the time until every workflow decided, and how the
decisions split; and, while the backlog is being decided, how long a fresh intent that arrives
then waits for its decision: started as the intake starts it (the backlog it found stale runs at
Temporal's lowest task-queue priority) against the same intent at the backlog's priority (what
first-in-first-out would do), measured side by side in the same run.

Usage: .venv/bin/python benchmarks/backlog.py [--entries N] [--kill-at 0.4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from temporalio.common import Priority  # noqa: E402

from benchmarks._stack import SYMBOLS, Stack, stop_process, worker_subprocess  # noqa: E402
from benchmarks.naive_executor import EXECUTIONS_KEY  # noqa: E402
from signals_ingest.intake_settings import IntakeSettings  # noqa: E402
from signals_ingest.intake_status import read_intake_status  # noqa: E402
from signals_ingest.start_priority import BACKLOG_PRIORITY  # noqa: E402
from common.redis_keys import INTAKE_STATS_KEY, TRADE_INTENT_STREAM  # noqa: E402
from trading.intent import parse_stream_fields, workflow_id_for  # noqa: E402
from common import search_attributes as sa  # noqa: E402
from workflows.starter import start_trade  # noqa: E402

SEED_BACKLOG = 10_014
NAIVE_GROUP = "quantum:group:execution:trade.intent"  # the old system's group name


# ============================================================================== the backlog


def make_backlog(n: int, pins: dict[str, Decimal], market_ms: int) -> list[tuple[dict[str, str], bool]]:
    """(fields, stale) × n in the seeds' two shapes; timestamps as the old bot wrote them."""
    out = []
    for i in range(n):
        symbol, stale = SYMBOLS[i % len(SYMBOLS)], i % 2 == 1
        side = "BUY" if (i // 2) % 2 == 0 else "SELL"
        price = pins[symbol]
        sign = 1 if side == "BUY" else -1
        age_ms = (7_200_000 + (i % 3_600) * 1_000) if stale else (i % 60) * 1_000
        moment = datetime.fromtimestamp((market_ms - age_ms) / 1000, UTC).replace(tzinfo=None)
        timestamp = moment.replace(microsecond=i % 1_000_000).isoformat()  # unique per intent
        fields = {
            "symbol": symbol, "side": side, "confidence": f"{0.55 + (i % 40) / 100:.2f}",
            "entry_price": str(price), "stop_loss": str(price * (1 - sign * Decimal("0.02"))),
            "take_profit": str(price * (1 + sign * Decimal("0.03"))), "position_size_usd": "200.0",
            "timestamp": timestamp,
        }
        if i % 4 < 2:  # the NEARUSDT sample's shape: flat strings with the AI metadata
            fields.update(leverage="1", model="ensemble", reason="AI signal", atr_value="0.02",
                          volatility_factor="0.5513439007580968", exchange_divergence="0.0",
                          funding_rate="0.0", regime="unknown")
            out.append((fields, stale))
        else:  # the FHEUSDT sample's shape: one JSON object, numbers as JSON numbers
            obj = {**{k: (v if k in ("symbol", "side", "timestamp") else float(v)) for k, v in fields.items()},
                   "leverage": 10.0, "model": "fallback-trend-following"}
            out.append(({"payload": json.dumps(obj)}, stale))
    return out


async def write_backlog(stack: Stack, backlog: list[tuple[dict[str, str], bool]]) -> None:
    await stack.redis.delete(TRADE_INTENT_STREAM)
    for start in range(0, len(backlog), 1_000):
        async with stack.redis.pipeline(transaction=False) as pipe:
            for fields, _ in backlog[start:start + 1_000]:
                pipe.xadd(TRADE_INTENT_STREAM, fields)
            await pipe.execute()


def naive_key(fields: dict[str, str]) -> str:
    data = json.loads(fields["payload"]) if "payload" in fields else fields
    return f"{data['symbol']}|{data['side']}|{data['timestamp']}"


# ============================================================================== processes


def stack_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    paper = stack.paper.settings
    env.update(QT_TEMPORAL_ADDRESS=stack.temporal_address, QT_EXCHANGE_MODE="paper",
               QT_PAPER_HOST=paper.host, QT_PAPER_PORT=str(paper.port),
               QT_PAPER_API_KEY=paper.api_key, QT_PAPER_API_SECRET=paper.api_secret,
               QT_REDIS_URL=stack.redis_server.url, QT_DATA_DIR=str(stack.tmp / "data"), **extra)
    return env


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def naive_process(stack: Stack, consumer: str) -> subprocess.Popen:
    return spawn([sys.executable, str(REPO_ROOT / "benchmarks" / "naive_executor.py"), stack.redis_server.url,
                  TRADE_INTENT_STREAM, NAIVE_GROUP, consumer], stack_env(stack), stack.tmp / f"{consumer}.log")


def ingest_process(stack: Stack, consumer: str) -> subprocess.Popen:
    # No market feed runs here and the paper market clock stands still (pinned prices), so the
    # intake judges ages by the wall clock: with 1 h the stale half (>= 2 h old) is always
    # recognised and the fresh half never mistaken, however long the run takes.
    env = stack_env(stack, QT_INGEST_CONSUMER=consumer, QT_INGEST_METRICS_PORT="0",
                    QT_INGEST_DEPRIORITIZE_AGE_S="3600")
    return spawn([str(Path(sys.executable).parent / "qt"), "ingest", "--only", "intake"], env,
                 stack.tmp / f"{consumer}.log")


def sigkill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=10)


async def wait_for(read, done, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached in {timeout} s (last: {value})")
        await asyncio.sleep(every)


# ============================================================================== the two sides


async def run_naive(stack: Stack, backlog, kill_at: float) -> dict:
    n = len(backlog)
    await write_backlog(stack, backlog)
    await stack.redis.delete(EXECUTIONS_KEY)
    began = time.monotonic()
    first = naive_process(stack, "naive-1")
    await wait_for(lambda: stack.redis.hlen(EXECUTIONS_KEY), lambda done: done >= kill_at * n, 600,
                   "the naive executor did not get going")
    sigkill(first)
    second = naive_process(stack, "naive-2")

    async def group():
        return next(g for g in await stack.redis.xinfo_groups(TRADE_INTENT_STREAM) if g["name"] == NAIVE_GROUP)

    async def naive2_idle():
        consumers = {c["name"]: c for c in await stack.redis.xinfo_consumers(TRADE_INTENT_STREAM, NAIVE_GROUP)}
        return consumers.get("naive-2", {}).get("pending", 1)

    await wait_for(group, lambda g: g["lag"] == 0, 900, "the naive executor did not read everything")
    await wait_for(naive2_idle, lambda pending: pending == 0, 60, "naive-2 did not finish")
    drain_s = time.monotonic() - began
    stop_process(second)
    executions = {k: int(v) for k, v in (await stack.redis.hgetall(EXECUTIONS_KEY)).items()}
    stale_keys = {naive_key(fields) for fields, stale in backlog if stale}
    stranded = (await group())["pending"]
    return {
        "drain_s": drain_s, "lost": n - len(executions), "stranded_pending": stranded,
        "duplicates": sum(c - 1 for c in executions.values()),
        "stale_executed": sum(1 for k in executions if k in stale_keys),
    }


async def run_ours(stack: Stack, backlog, kill_at: float) -> dict:
    n = len(backlog)
    settings = IntakeSettings()
    await write_backlog(stack, backlog)
    began = time.monotonic()
    first = ingest_process(stack, "ingest-1")

    def handed_on(status) -> int:
        return status.stream_length - (status.lag or 0) - status.pending if status.group_exists else 0

    read = lambda: read_intake_status(stack.redis, settings)  # noqa: E731
    await wait_for(read, lambda s: handed_on(s) >= kill_at * n, 600, "our intake did not get going")
    sigkill(first)
    killed = await read()
    stranded = next(c.pending for c in killed.consumers if c.name == "ingest-1")
    second = ingest_process(stack, "ingest-2")
    await wait_for(read, lambda s: s.lag == 0 and s.pending == 0, 900, "our intake did not drain")
    drain_s = time.monotonic() - began
    await asyncio.sleep(settings.stats_interval_s * 1.5)
    stats = await stack.redis.hgetall(INTAKE_STATS_KEY.format(consumer="ingest-2"))
    final = await read()
    stop_process(second)

    ids = {workflow_id_for(parse_stream_fields(fields)): stale for fields, stale in backlog}
    started = await wait_for(lambda: stack.client.count_workflows("WorkflowType = 'TradeWorkflow'"),
                             lambda c: c.count >= len(ids), 60, "visibility did not show every start")
    return {
        "drain_s": drain_s, "lost": n - started.count - final.dlq_length, "stranded_pending": stranded,
        "duplicates": started.count - len(ids), "dead_lettered": final.dlq_length,
        "duplicates_detected": int(stats.get("duplicates", 0)) if stats else None,
        "reclaimed": int(stats.get("reclaimed", 0)) if stats else None, "ids": ids,
    }


async def decide_ours(stack: Stack, ours: dict) -> dict:
    """Run every started TradeWorkflow to its decision; which intents placed an entry order?"""
    ids = ours["ids"]
    print("  ours: running every workflow to its decision (qt worker --queue all)...", flush=True)
    decided_began = time.monotonic()
    worker = worker_subprocess(stack, "all", stack.tmp / "worker.log")
    probes = asyncio.create_task(probe_fresh_intents(stack))
    try:
        last = [time.monotonic(), None]

        async def undecided():
            count = (await stack.client.count_workflows("TradeStatus = 'PENDING'")).count
            if time.monotonic() - last[0] > 15 and count != last[1]:
                print(f"    {count} workflows still deciding", flush=True)
                last[:] = [time.monotonic(), count]
            return count

        await wait_for(undecided, lambda c: c == 0, 3_600, "workflows did not decide", every=1.0)
        decided_s = time.monotonic() - decided_began
        statuses = Counter()
        for status in ("REJECTED", "OPEN", "CLOSED", "FAILED", "ENTERING", "EXITING"):
            statuses[status] = (await stack.client.count_workflows(f"TradeStatus = '{status}'")).count
        probed = await probes
    finally:
        probes.cancel()
        stop_process(worker)
    # Trades that passed the gates (client order ids are run-tagged, so the audit log's ids no
    # longer spell the workflow id: ask Temporal which workflows got past the gates).
    passed = " OR ".join(f"TradeStatus = '{s}'" for s in ("OPENING", "OPEN", "CLOSING", "CLOSED", "FAILED", "KILLED"))
    entered = {w.id async for w in stack.client.list_workflows(passed)}
    return {
        "stale_executed": sum(1 for wid in entered if ids.get(wid)),
        "fresh_executed": sum(1 for wid in entered if ids.get(wid) is False),
        "decided_s": decided_s, "statuses": {k: v for k, v in statuses.items() if v}, "probes": probed,
    }


async def probe_fresh_intents(stack: Stack, after_s: float = 3.0) -> dict[str, float]:
    """`after_s` into the decision phase two fresh intents arrive: one started as the intake
    starts a fresh intent, one at the backlog's priority. Seconds until each leaves PENDING."""
    await asyncio.sleep(after_s)
    ways = {"as the intake starts it": Priority.default, "at the backlog's priority (FIFO)": BACKLOG_PRIORITY}
    handles = {}
    for i, (label, priority) in enumerate(ways.items()):
        fields = await stack.intent(SYMBOLS[i % len(SYMBOLS)], intent_id=f"probe{i}-{time.time_ns()}")
        handles[label], _ = await start_trade(stack.client, fields, priority=priority)
    began = time.monotonic()
    waited: dict[str, float] = {}
    while len(waited) < len(handles):
        for label, handle in handles.items():
            if label not in waited:
                status = (await handle.describe()).typed_search_attributes.get(sa.TRADE_STATUS)
                if status != "PENDING":
                    waited[label] = time.monotonic() - began
        await asyncio.sleep(0.2)
    return waited


# ============================================================================== report


def report_drain(n: int, stale: int, naive: dict, ours: dict) -> None:
    print()
    print(f"Backlog: {n:,} seed-format intents ({stale:,} stale, {n - stale:,} fresh); "
          "each side SIGKILLed once mid-drain and restarted")
    rows = [
        ("time to drain (crash + recovery included)", f"{naive['drain_s']:.1f} s", f"{ours['drain_s']:.1f} s"),
        ("entries/s", f"{n / naive['drain_s']:.0f}", f"{n / ours['drain_s']:.0f}"),
        ("entries held by the killed process", str(naive["stranded_pending"]) + " (never reclaimed)",
         f"{ours['stranded_pending']} (reclaimed: {ours['reclaimed']})"),
        ("entries lost after the SIGKILL", str(naive["lost"]), str(ours["lost"])),
        ("duplicate starts / executions", str(naive["duplicates"]), str(ours["duplicates"])),
        ("stale intents executed", f"{naive['stale_executed']:,}", "(next: workflows decide)"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':{width}}{'naive consumer group':>28}{'ours (qt ingest)':>28}")
    for label, a, b in rows:
        print(f"{label:{width}}{a:>28}{b:>28}")
    print(f"ours: duplicates detected and acknowledged without a second run: {ours['duplicates_detected']}; "
          f"dead-lettered: {ours['dead_lettered']}", flush=True)


def report_decided(decided: dict) -> None:
    print()
    print(f"ours, stale intents executed: {decided['stale_executed']} (every workflow decided "
          f"{decided['decided_s']:.0f} s after the drain; statuses {decided['statuses']}); fresh intents that "
          f"traded: {decided['fresh_executed']} (one open trade per symbol: the symbol lock refuses the rest)")
    print("a fresh intent arriving while the backlog is decided, seconds until its gates decided: " + "; ".join(
        f"{label} {seconds:.1f} s" for label, seconds in decided["probes"].items()) + " (2 probes, counted in the statuses)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=SEED_BACKLOG)
    parser.add_argument("--kill-at", type=float, default=0.4, help="share handed on before the SIGKILL")
    args = parser.parse_args()
    async with Stack() as stack:
        backlog = make_backlog(args.entries, stack.pins, await stack.market_ms())
        stale = sum(1 for _, s in backlog if s)
        print(f"naive consumer-group executor: {args.entries:,} entries...", flush=True)
        naive = await run_naive(stack, backlog, args.kill_at)
        print(f"  naive: drained in {naive['drain_s']:.1f} s", flush=True)
        print(f"our intake: {args.entries:,} entries...", flush=True)
        ours = await run_ours(stack, backlog, args.kill_at)
        report_drain(args.entries, stale, naive, ours)
        report_decided(await decide_ours(stack, ours))


if __name__ == "__main__":
    asyncio.run(main())
