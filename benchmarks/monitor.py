"""Benchmark of the monitor: N `watch_position` activities in one process on one `PriceHub`.

Starts its own paper exchange (speed 0, temp data dir) and, for 1 watcher (baseline) and for
N watchers (default 1,000 over 3 symbols), prints:
- CPU time (user+sys, `resource.getrusage`) and RSS over a quiet period (no level crossed), and
  the exchange requests made in it (shared pollers: grows with symbols, not watchers);
- price-cross → activity-return latency p50/p99/max over several crosses: the clock starts when
  `/_paper/price` has answered (the new price is in force) and stops when the activity returns.
  Each cross is sent at a random phase of the poll interval, so the figures include the wait for
  the next poll (on average half an interval).
- with `--candles K` (default 3), every watcher also carries a kill score (`KillWatch`, 48-candle
  window, an entry whose regime is unknown so it never fires) and the market clock is moved K
  candles forward one at a time: per close, the klines fetches and feature computations (one
  each per symbol, whatever N) and the CPU time until every watcher has evaluated it.

Usage: .venv/bin/python benchmarks/monitor.py [--watchers 1000] [--quiet-s 20] [--crosses 8]
       [--poll-ms 250] [--candles 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.monitor import KillWatch, MonitorActivities, WatchKind, WatchRequest  # noqa: E402
from activities.price_hub import PriceHub  # noqa: E402
from trading.features import CANDLE_MS, MarketFeatures  # noqa: E402
from local_stack.exit_states import exit_state  # noqa: E402
from local_stack.paper_server import PaperServer, paper_exchange_client  # noqa: E402
from trading.exits import ExitPolicy  # noqa: E402
from trading.models import ExitReason  # noqa: E402

PINS = {"BTCUSDT": Decimal(63000), "ETHUSDT": Decimal(3400), "XRPUSDT": Decimal(2)}
KILL_WINDOW = 48
# An entry without a known regime: a regime flip never counts, so the score stays below 0.7
# and the watchers stay silent through every close (what a quiet position costs).
QUIET_ENTRY = MarketFeatures(candle_open_ms=0, candles=KILL_WINDOW, close=Decimal(1), returns_1=0.0, atr_pct=0.01,
                             sigma=0.01, volatility_factor=1.0, rsi=50.0, trend_strength=0.5, regime="unknown")


def rss_mb() -> float:
    """Current resident set size (ru_maxrss is only the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Fleet:
    """N watchers; records when each returns."""

    def __init__(self, hub: PriceHub, paper: PaperServer, n: int, kill: bool) -> None:
        self.hub, self.paper, self.n = hub, paper, n
        self.kill = KillWatch(entry=QUIET_ENTRY, window=KILL_WINDOW) if kill else None
        self.activities = MonitorActivities(hub)
        self.env = ActivityEnvironment()
        self.symbols = list(PINS)[: min(3, n)]
        self.tasks: list[tuple[str, asyncio.Task]] = []
        self.returned: dict[int, float] = {}

    async def start(self) -> None:
        market_ms = self.paper.clock()["market_ms"]
        self.tasks, self.returned = [], {}
        for i in range(self.n):
            symbol = self.symbols[i % len(self.symbols)]
            pin = PINS[symbol]
            req = WatchRequest(
                workflow_id=f"bench-{i}", symbol=symbol, session_cap_s=600, kill=self.kill,
                exit=exit_state(side="BUY", stop=pin * Decimal("0.95"), take_profits=[pin * Decimal("1.2")],
                                entry=pin, tick="0.0001", opened_at_ms=market_ms),
                exit_policy=ExitPolicy(max_hold_s=86_400))
            task = asyncio.create_task(self.env.run(self.activities.watch_position, req))
            task.add_done_callback(lambda _t, i=i: self.returned.__setitem__(i, time.perf_counter()))
            self.tasks.append((symbol, task))
        while self.hub.subscriber_count() < self.n:
            await asyncio.sleep(0.01)
        polls = {s: self.hub.stats[s].polls for s in self.symbols}
        while any(self.hub.stats[s].polls < polls[s] + 2 for s in self.symbols):
            await asyncio.sleep(0.01)  # every watcher has seen the pinned price

    async def cross(self) -> list[float]:
        """Drop every symbol through the stops; latencies (ms) of every watcher."""
        await asyncio.sleep(random.uniform(0, self.hub.poll_interval_s))
        crossed_at: dict[str, float] = {}
        for symbol in self.symbols:
            self.paper.set_price(symbol, PINS[symbol] * Decimal("0.9"))
            crossed_at[symbol] = time.perf_counter()
        events = await asyncio.wait_for(asyncio.gather(*(t for _, t in self.tasks)), 30)
        assert all(e.kind is WatchKind.DECIDED and e.decision.reason is ExitReason.SL for e in events), events[0]
        for symbol, pin in PINS.items():
            self.paper.set_price(symbol, pin)
        return [(self.returned[i] - crossed_at[s]) * 1000 for i, (s, _) in enumerate(self.tasks)]


    async def close_candles(self, k: int) -> dict:
        """Move the clock K candles, one at a time; wait until every kill watcher evaluated each."""
        stats = [self.hub.stats[s] for s in self.symbols]
        fetches0, computed0 = sum(s.candle_fetches for s in stats), sum(s.features_computed for s in stats)
        cpu0, seconds = cpu_s(), 0.0
        for _ in range(k):
            computed = sum(s.features_computed for s in stats)
            started = time.perf_counter()
            self.paper.advance(CANDLE_MS)
            while sum(s.features_computed for s in stats) < computed + len(stats):
                await asyncio.sleep(0.005)
            polls = [s.polls for s in stats]
            while any(s.polls < p + 2 for s, p in zip(stats, polls)):
                await asyncio.sleep(0.005)  # every woken watcher has run its evaluation
            seconds += time.perf_counter() - started
        assert not any(t.done() for _, t in self.tasks), "a quiet kill watcher returned"
        return {
            "fetches": (sum(s.candle_fetches for s in stats) - fetches0) / k,
            "computed": (sum(s.features_computed for s in stats) - computed0) / k,
            "cpu_ms": (cpu_s() - cpu0) / k * 1000,
            "wall_ms": seconds / k * 1000,
        }


async def run_case(paper: PaperServer, n: int, quiet_s: float, crosses: int, poll_s: float, candles: int) -> dict:
    exchange = paper_exchange_client(paper.settings)
    await exchange.load_markets()
    hub = PriceHub(exchange, poll_interval_s=poll_s)
    fleet = Fleet(hub, paper, n, kill=candles > 0)
    try:
        await fleet.start()
        if candles:  # the history is loaded once per symbol when the first kill watcher arrives
            while any(hub.stats[s].candle_fetches < 1 for s in fleet.symbols):
                await asyncio.sleep(0.01)
        # Per-symbol polls, plus the hub's account-wide position polls (one for every symbol).
        requests0 = sum(s.requests for s in hub.stats.values()) + hub.position_polls
        cpu0, wall0 = cpu_s(), time.perf_counter()
        await asyncio.sleep(quiet_s)
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
        requests = sum(s.requests for s in hub.stats.values()) + hub.position_polls - requests0
        rss = rss_mb()
        closes = await fleet.close_candles(candles) if candles else None
        latencies: list[float] = []
        for _ in range(crosses):
            latencies += await fleet.cross()
            await fleet.start()
        for _, task in fleet.tasks:
            task.cancel()
        await asyncio.gather(*(t for _, t in fleet.tasks), return_exceptions=True)
    finally:
        await hub.close()
        await exchange.close()
    latencies.sort()
    return {
        "watchers": n,
        "symbols": len(fleet.symbols),
        "quiet_s": wall,
        "cpu_pct": 100 * cpu / wall,
        "rss_mb": rss,
        "req_per_s": requests / wall,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max": latencies[-1],
        "samples": len(latencies),
        "closes": closes,
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paper = PaperServer(Path(tmp))
        paper.start()
        try:
            for symbol, pin in PINS.items():
                paper.set_price(symbol, pin)
            paper.advance((KILL_WINDOW + 2) * CANDLE_MS + CANDLE_MS // 2)  # history for the kill score
            poll_s = args.poll_ms / 1000
            rows = [
                await run_case(paper, 1, args.quiet_s, args.crosses * 3, poll_s, args.candles),
                await run_case(paper, args.watchers, args.quiet_s, args.crosses, poll_s, args.candles),
            ]
        finally:
            paper.close()
    print(f"poll interval {args.poll_ms} ms; quiet period {args.quiet_s:.0f} s; "
          f"latency = /_paper/price answered → watch_position returned")
    print(f"{'watchers':>8} {'symbols':>7} {'CPU %':>6} {'RSS MB':>7} {'req/s':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'samples':>7}")
    for r in rows:
        print(f"{r['watchers']:>8} {r['symbols']:>7} {r['cpu_pct']:>6.2f} {r['rss_mb']:>7.1f} "
              f"{r['req_per_s']:>6.1f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['max']:>7.1f} {r['samples']:>7}")
    if args.candles:
        print(f"\nkill score on candle closes ({args.candles} closes, {KILL_WINDOW}-candle window, silent watchers);"
              f" per close:")
        print(f"{'watchers':>8} {'klines fetches':>14} {'features computed':>17} {'CPU ms':>7} {'wall ms':>8}")
        for r in rows:
            c = r["closes"]
            print(f"{r['watchers']:>8} {c['fetches']:>14.1f} {c['computed']:>17.1f} {c['cpu_ms']:>7.1f} "
                  f"{c['wall_ms']:>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--quiet-s", type=float, default=20.0)
    parser.add_argument("--crosses", type=int, default=8)
    parser.add_argument("--poll-ms", type=float, default=250.0)
    parser.add_argument("--candles", type=int, default=3, help="candle closes with kill watchers (0: none)")
    asyncio.run(main(parser.parse_args()))
