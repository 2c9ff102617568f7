"""Benchmark: what the operator API costs over the Temporal client it wraps, on the real stack.

One run prints, each beside the same call made with the Temporal client directly (ratio; the
target is ≤ 1.3):
1. `POST /api/v1/intents` → workflow started (HTTP 202) vs `start_trade()`: the same intents
   (every field given, so neither side asks the exchange), safe mode on so every trade is
   decided at its first gate and costs the workers little;
2. `GET /api/v1/trades?page_size=100` with ≥ 1,000 trades in visibility vs one
   `list_workflows` page of the same query;
and `GET /api/v1/trades/{id}` of closed trades in requests/s: each trade's first read (describe +
`state` query, which a worker answers by replaying the history, + result) and reads again (the
API keeps a closed run's detail: describe alone), at a few concurrency levels.

    .venv/bin/python benchmarks/api.py [--trades 1000] [--starts 150] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from common.redis_keys import SAFE_MODE_KEY  # noqa: E402
from activities.schemas.policy import MonitorPolicy, TradePolicy  # noqa: E402
from benchmarks._stack import SYMBOLS, InProcessWorkers, Stack, percentile  # noqa: E402
from local_stack.ports import free_port  # noqa: E402
from trading.exits import ExitPolicy  # noqa: E402
from workflows.starter import WORKFLOW_TYPE, start_trade  # noqa: E402

TOKEN = "bench-token"
POLICY = TradePolicy(monitor=MonitorPolicy(session_cap_s=600, kill_score=False), exits=ExitPolicy(max_hold_s=None),
                     cooldown_s=0)


class Http:
    """The benchmark's HTTP client: aiohttp, whose own cost per call (~0.5 ms here) is closer to
    curl's than httpx's (~1.2 ms), so the figures are the API's, not the client library's."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=64))

    async def call(self, method: str, path: str, **kwargs) -> tuple[int, Any]:
        async with self.session.request(method, self.base_url + path, **kwargs) as reply:
            body = await reply.read()
            return reply.status, json.loads(body) if body else None

    async def aclose(self) -> None:
        await self.session.close()


def row(label: str, ours: list[float], direct: list[float]) -> str:
    p50, p99 = percentile(ours, 50) * 1000, percentile(ours, 99) * 1000
    d50, d99 = percentile(direct, 50) * 1000, percentile(direct, 99) * 1000
    return (f"{label:<34} API p50 {p50:7.1f} ms  p99 {p99:7.1f} ms | client p50 {d50:7.1f} ms  p99 {d99:7.1f} ms"
            f" | ratio {p50 / d50:4.2f} / {p99 / d99:4.2f} (+{p50 - d50:.1f} ms at p50)")


async def measure_starts(stack: Stack, http: Http, n: int) -> tuple[list[float], list[float]]:
    ours, direct = [], []

    async def through_api(symbol: str) -> None:
        fields = await stack.intent(symbol)
        body = {k: fields[k] for k in ("symbol", "side", "confidence", "entry_price", "position_size_usd",
                                       "leverage", "timestamp", "intent_id")}
        began = time.perf_counter()
        code, reply = await http.call("POST", "/api/v1/intents", json=body)
        ours.append(time.perf_counter() - began)
        assert code == 202, reply

    async def with_client(symbol: str) -> None:
        fields = await stack.intent(symbol)
        began = time.perf_counter()
        await start_trade(stack.client, fields)
        direct.append(time.perf_counter() - began)

    for i in range(n):  # interleaved, each side first in turn: both see the same server load
        symbol = SYMBOLS[i % len(SYMBOLS)]
        first, second = (through_api, with_client) if i % 2 == 0 else (with_client, through_api)
        await first(symbol)
        await second(symbol)
    return ours, direct


async def fill_visibility(stack: Stack, total: int) -> None:
    """Trades started on a queue no worker polls: visible (PENDING), never decided."""
    queue = f"bench-api-idle-{uuid.uuid4().hex[:6]}"
    sem = asyncio.Semaphore(32)

    async def one() -> None:
        async with sem:
            await start_trade(stack.client, await stack.intent(SYMBOLS[0]), task_queue=queue)
    await asyncio.gather(*(one() for _ in range(total)))
    query = f"WorkflowType = '{WORKFLOW_TYPE}'"
    while (await stack.client.count_workflows(query)).count < total:
        await asyncio.sleep(0.5)


async def measure_lists(stack: Stack, http: Http, n: int) -> tuple[list[float], list[float]]:
    ours, direct = [], []
    query = f"WorkflowType = '{WORKFLOW_TYPE}'"
    for _ in range(n):
        began = time.perf_counter()
        code, reply = await http.call("GET", "/api/v1/trades", params={"page_size": 100})
        ours.append(time.perf_counter() - began)
        assert code == 200 and len(reply["trades"]) == 100, str(reply)[:200]
        began = time.perf_counter()
        pages = stack.client.list_workflows(query, page_size=100)
        await pages.fetch_next_page()
        direct.append(time.perf_counter() - began)
    return ours, direct


async def detail_rate(http: Http, ids: list[str], concurrency: int, seconds: float | None,
                      ) -> tuple[float, int, int]:
    """(requests/s, requests, errors): `ids` read in turn by `concurrency` loops, for `seconds`, or
    (None) each id once."""
    done, errors = 0, 0
    deadline = time.monotonic() + (seconds or 3600)

    async def loop(k: int) -> None:
        nonlocal done, errors
        i = k
        while time.monotonic() < deadline and (seconds is not None or i < len(ids)):
            code, _ = await http.call("GET", f"/api/v1/trades/{ids[i % len(ids)]}")
            done += 1
            errors += code != 200
            i += concurrency
    began = time.monotonic()
    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return done / (time.monotonic() - began), done, errors


def start_api(stack: Stack, port: int) -> subprocess.Popen:
    """`qt api` as its own process (as deployed), pointed at the benchmark's stack."""
    env = {**os.environ, "QT_TEMPORAL_ADDRESS": stack.temporal_address, "QT_REDIS_URL": stack.redis_server.url,
           "QT_PAPER_HOST": "127.0.0.1", "QT_PAPER_PORT": str(stack.paper.port), "QT_API_PORT": str(port),
           "QT_API_TOKEN": TOKEN, "QT_DATA_DIR": str(stack.tmp)}
    log = open(stack.tmp / "api.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "qt.cli", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_api(http: Http, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"qt api exited with {process.returncode}")
        try:
            if (await http.call("GET", "/health"))[0] in (200, 503):
                return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("qt api did not answer in 60 s")


async def main(args: argparse.Namespace) -> None:
    async with Stack() as stack:
        await stack.redis.set(SAFE_MODE_KEY, json.dumps({"reason": "benchmark", "set_by": "bench"}))
        port = free_port()
        api = start_api(stack, port)
        http = Http(f"http://127.0.0.1:{port}")
        try:
            await wait_api(http, api)
            print(f"\nAPI benchmark (2 shared cores; `qt api` in its own process; Temporal dev server, "
                  f"redis-server, paper exchange)")
            # No worker yet: the started trades wait PENDING, so both sides measure the start alone.
            await measure_starts(stack, http, 10)  # warm-up: connections, first requests
            print(row("POST /intents -> workflow started", *await measure_starts(stack, http, args.starts)))
            await fill_visibility(stack, args.trades)
            total = (await stack.client.count_workflows(f"WorkflowType = '{WORKFLOW_TYPE}'")).count
            print(row(f"GET /trades (100 of {total:,})", *await measure_lists(stack, http, 60)))
            async with InProcessWorkers(stack, POLICY):  # the state query needs a workflow worker
                deadline = time.monotonic() + 120
                query = f"WorkflowType = '{WORKFLOW_TYPE}' AND TradeStatus = 'REJECTED'"
                while (await stack.client.count_workflows(query)).count < 2 * args.starts:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                decided = [w.id async for w in stack.client.list_workflows(query, limit=2 * args.starts)]
                # First read of a closed trade: describe + `state` query (a worker replays its whole
                # history) + result; the API keeps it (a closed run never changes), so a second
                # read is the describe alone.
                half = len(decided) // 2
                for label, ids, concurrency in (("first read", decided[:half], 1),
                                                ("first read", decided[half:], 8)):
                    rate, n, errors = await detail_rate(http, ids, concurrency, None)
                    print(f"GET /trades/{{id}} closed, {label} (describe + state query + result), "
                          f"{concurrency:>2} at once: {rate:6.1f} requests/s ({n} reads, {errors} errors)")
                for concurrency in (1, 8, 32):
                    rate, n, errors = await detail_rate(http, decided, concurrency, args.seconds)
                    print(f"GET /trades/{{id}} closed, read again (describe, kept detail), {concurrency:>2} at "
                          f"once: {rate:6.1f} requests/s ({n} reads, {errors} errors)")
        finally:
            await http.aclose()
            api.terminate()
            api.wait(timeout=20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=1000, help="trades in visibility for the list")
    parser.add_argument("--starts", type=int, default=150, help="starts measured per side")
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrency level of the detail rate")
    asyncio.run(main(parser.parse_args()))
