"""Benchmark: how fast a stale backlog is decided, in one run on the real stack (Temporal dev
server, redis-server, paper exchange; every worker in this process):

1. a workflow that decides in its first task with no activity (the floor: what the server
   can start and complete);
2. stale intents the intake proved stale (`start_trade(..., stale=StaleAtIntake)`: the
   TradeWorkflow ends REJECTED in its first task, no activity);
3. the same stale intents without the proof (the gates' `run_gates` activity refuses them).

Each: N starts (32 at once), then every result; prints decisions/s from the first start to the
last result and the history length of one decision.

    .venv/bin/python benchmarks/stale_decisions.py [--intents 400]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.worker import Worker  # noqa: E402

from benchmarks._stack import SYMBOLS, InProcessWorkers, Stack  # noqa: E402
from benchmarks._zero_workflow import ZeroActivityWorkflow  # noqa: E402
from activities.schemas.policy import MonitorPolicy, TradePolicy  # noqa: E402
from trading.exits import ExitPolicy  # noqa: E402
from workflows.starter import start_trade  # noqa: E402
from workflows.trade_state import StaleAtIntake  # noqa: E402

POLICY = TradePolicy(monitor=MonitorPolicy(session_cap_s=600, kill_score=False), exits=ExitPolicy(max_hold_s=None),
                     cooldown_s=0)
ZERO_QUEUE = "bench-zero-activity"
STALE_S = 600  # ten minutes old on the market clock: stale for the gates (120 s)


async def decide(starts, n: int) -> tuple[float, int]:
    """(decisions/s, history events of the first) for n workflows started by `starts(i)`."""
    sem = asyncio.Semaphore(32)

    async def one(i: int):
        async with sem:
            return await starts(i)
    began = time.perf_counter()
    handles = await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.gather(*(h.result() for h in handles))
    took = time.perf_counter() - began
    events = len((await handles[0].fetch_history()).events)
    return n / took, events


async def stale_rows(stack: Stack, intents: int) -> list[tuple[str, float, int]]:
    """(label, decisions/s, history events of one) for the floor and the two stale paths, each
    with `intents` workflows, on `stack` (its workers are started here)."""
    market_ms = await stack.market_ms()
    stamp = datetime.fromtimestamp((market_ms - STALE_S * 1000) / 1000, UTC).isoformat()
    run = uuid.uuid4().hex[:6]

    async def stale_fields(i: int) -> dict:
        return await stack.intent(SYMBOLS[i % len(SYMBOLS)], timestamp=stamp)

    async def zero(i: int):
        return await stack.client.start_workflow(ZeroActivityWorkflow.run, {"i": i}, id=f"zero-{run}-{i}",
                                                 task_queue=ZERO_QUEUE)

    async def proven(i: int):
        fields = await stale_fields(i)
        proof = StaleAtIntake(market_ms=market_ms, age_s=STALE_S, max_age_s=120)
        handle, _ = await start_trade(stack.client, {**fields, "intent_id": f"p{run}-{i}"}, stale=proof)
        return handle

    async def gated(i: int):
        fields = await stale_fields(i)
        handle, _ = await start_trade(stack.client, {**fields, "intent_id": f"g{run}-{i}"})
        return handle

    async with InProcessWorkers(stack, POLICY):
        async with Worker(stack.client, task_queue=ZERO_QUEUE, workflows=[ZeroActivityWorkflow]):
            await decide(zero, 20)  # warm-up of both paths
            await decide(proven, 20)
            return [("0-activity workflow (floor)", *await decide(zero, intents)),
                    ("stale intent, proven by the intake", *await decide(proven, intents)),
                    ("stale intent, refused by the gates", *await decide(gated, intents))]


async def main(args: argparse.Namespace) -> None:
    async with Stack() as stack:
        rows = await stale_rows(stack, args.intents)
    print(f"\nStale decisions, {args.intents} per row, 32 starts at once, one process of workers "
          f"(2 shared cores; Temporal dev server, redis-server, paper exchange)")
    floor = rows[0][1]
    for label, rate, events in rows:
        print(f"{label:<38} {rate:7.1f} decisions/s  ({rate / floor:4.2f}× the floor)  "
              f"{events:3d} history events each")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=400, help="decisions measured per row")
    asyncio.run(main(parser.parse_args()))
