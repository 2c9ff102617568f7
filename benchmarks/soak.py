"""Soak: trades on every symbol at replay speed for minutes, with random SIGKILLs of every part.

The whole stack under `qt up` in a temp dir (`local_stack/chaos_stack.py`): Temporal dev server
on SQLite, redis-server with AOF, the paper exchange replaying real candles at
`--speed` × market time, `qt worker --queue all`, `qt ingest`, `qt api`. Intents go on the
intent stream at `--rate` per minute, each on a random symbol and side at the symbol's last
price and the market clock. A calm phase first (the baseline: no kill), then the chaos phase: every
`--kill-every` seconds (±50 %) one part (worker, ingest, paper exchange, redis-server, Temporal)
is SIGKILLed and `qt up` brings it back. Then the trades still open are closed and the account
is checked as the chaos tests check it:

- every intent has exactly one workflow, every workflow ended;
- each client order id accepted by the exchange at most once;
- from each trade's first stop until flat, a stop of it rested on the exchange;
- the exchange flat with no open orders; the wallet moved by the trades' net PnL (1e-8);
- the reconcile runs (one at every worker start, one at the end) and what they found.

Printed: trades, kills per part, recovery after each kill (kill → every open trade's `state`
answers and the intake has nothing pending: p50 / max), intent → OPEN p50 in the calm and the
chaos phase, invariant violations (must be 0), reconcile findings per run.

    .venv/bin/python benchmarks/soak.py            # 1 calm + 4 chaos minutes, 6 intents/min
    .venv/bin/python benchmarks/soak.py --quick    # 0.5 + 1.5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exchange.parse import balance_of  # noqa: E402
from common.redis_keys import RECONCILE_EVENTS_STREAM, TRADE_INTENT_STREAM  # noqa: E402
from local_stack.chaos_stack import PARTS, ChaosStack  # noqa: E402
from local_stack.intents import intent_fields  # noqa: E402
from signals_ingest.intake_status import read_intake_status  # noqa: E402
from workflows.trade_state import TradeResult  # noqa: E402

D = Decimal
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "NEARUSDT", "XLMUSDT")
ORDER_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Soak:
    def __init__(self, stack: ChaosStack, rng: random.Random) -> None:
        self.stack, self.rng = stack, rng
        self.intents: dict[str, tuple[str, float, str]] = {}  # workflow id -> (symbol, published, phase)
        self.opened_after: dict[str, list[float]] = {"calm": [], "chaos": []}
        self.kills: Counter = Counter()
        self.recoveries: list[float] = []
        self._order: list[str] = []

    async def publish(self, redis, exchange, phase: str) -> None:
        symbol = self.rng.choice(SYMBOLS)
        price = (await exchange.fetch_ticker(exchange.markets_by_id[symbol][0]["symbol"]))["last"]
        fields = intent_fields(symbol, self.rng.choice(("BUY", "SELL")), price, self.stack.paper.clock()["market_ms"],
                               id_prefix="soak", source="soak")
        await redis.xadd(TRADE_INTENT_STREAM, fields)
        self.intents[f"trade-{fields['intent_id']}"] = (symbol, time.monotonic(), phase)

    async def watch_opens(self) -> None:
        """intent → OPEN latency (status polled through visibility, 0.5 s resolution)."""
        seen: set[str] = set()
        while True:
            try:
                async for wf in self.stack.client.list_workflows(
                        "WorkflowType = 'TradeWorkflow' AND TradeStatus IN ('OPEN', 'CLOSING', 'CLOSED')"):
                    if wf.id in self.intents and wf.id not in seen:
                        seen.add(wf.id)
                        _, at, phase = self.intents[wf.id]
                        self.opened_after[phase].append(time.monotonic() - at)
            except Exception:  # noqa: BLE001 - Temporal on its way back
                pass
            await asyncio.sleep(0.5)

    async def recovered(self, redis) -> None:
        """Every open trade answers its `state` query and the intake has nothing pending."""
        while True:
            try:
                client = await self.stack.temporal()
                running = [w async for w in client.list_workflows(
                    "WorkflowType = 'TradeWorkflow' AND ExecutionStatus = 'Running'")]
                await asyncio.gather(*(asyncio.wait_for(client.get_workflow_handle(w.id).query("state"), 5)
                                       for w in running))
                status = await read_intake_status(redis)
                if not status.pending and not status.lag:
                    return
            except Exception:  # noqa: BLE001
                pass
            await asyncio.sleep(0.3)

    async def chaos(self, redis) -> None:
        if not self._order:  # every part in turn, each round in a random order
            self._order = self.rng.sample(PARTS, len(PARTS))
        part = self._order.pop()
        self.kills[part] += 1
        killed = time.monotonic()
        log(f"SIGKILL {part}")
        self.stack.kill(part)
        await asyncio.to_thread(self.stack.up)
        await asyncio.wait_for(self.recovered(redis), 300)
        self.recoveries.append(time.monotonic() - killed)
        log(f"  {part} back, everything answers after {self.recoveries[-1]:.1f} s")


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="qt-soak-") as tmp:
        stack = ChaosStack(Path(tmp), QT_PAPER_SPEED=str(args.speed))
        log("qt up (temp dir, free ports)")
        stack.up()
        try:
            return await soak(stack, rng, args)
        finally:
            await asyncio.to_thread(stack.down)


async def soak(stack: ChaosStack, rng: random.Random, args: argparse.Namespace) -> int:
    exchange = stack.exchange()
    try:
        return await _soak(stack, rng, args, exchange)
    finally:
        await exchange.close()


async def _soak(stack: ChaosStack, rng: random.Random, args: argparse.Namespace, exchange) -> int:
    began = time.monotonic()
    client = await stack.temporal()
    redis = stack.redis()
    await exchange.load_markets()
    wallet_before = balance_of(await exchange.fetch_balance()).wallet_balance
    s = Soak(stack, rng)
    watcher = asyncio.create_task(s.watch_opens())
    interval = 60 / args.rate
    for phase, minutes in (("calm", args.calm_min), ("chaos", args.chaos_min)):
        log(f"{phase}: {minutes:g} min, {args.rate:g} intents/min")
        end, next_kill = time.monotonic() + minutes * 60, time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
        while time.monotonic() < end:
            try:
                await s.publish(redis, exchange, phase)
            except Exception as exc:  # noqa: BLE001 - the exchange or Redis just killed: next one
                log(f"  intent not published: {type(exc).__name__}")
            if phase == "chaos" and time.monotonic() >= next_kill:
                await s.chaos(redis)
                next_kill = time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
            await asyncio.sleep(interval)
    log("closing what is still open")
    await asyncio.wait_for(s.recovered(redis), 300)
    client = await stack.temporal()
    running = [w.id async for w in client.list_workflows("WorkflowType = 'TradeWorkflow' AND ExecutionStatus = 'Running'")]
    for workflow_id in running:
        await asyncio.to_thread(stack.qt, "close", workflow_id, "--reason", "soak over")
    results = {}
    for workflow_id in s.intents:
        try:
            results[workflow_id] = await asyncio.wait_for(
                client.get_workflow_handle(workflow_id, result_type=TradeResult).result(), 120)
        except Exception as exc:  # noqa: BLE001 - counted as a violation below
            results[workflow_id] = exc
    watcher.cancel()
    reconciled = await asyncio.to_thread(stack.qt, "reconcile")

    violations: list[str] = []
    listed = Counter([w.id async for w in client.list_workflows("WorkflowType = 'TradeWorkflow'")])
    for workflow_id in s.intents:
        if listed[workflow_id] != 1:
            violations.append(f"{workflow_id}: {listed[workflow_id]} workflows")
        if isinstance(results[workflow_id], Exception):
            violations.append(f"{workflow_id}: no result ({results[workflow_id]!r})")
    audit = stack.paper.audit()
    accepted = Counter(r["client_id"] for r in audit if r["method"] == "POST" and r["path"] in ORDER_PATHS
                       and r["result"] in ("accepted", "filled"))
    violations += [f"{cid} accepted {n} times" for cid, n in accepted.items() if n > 1]
    positions = [p for p in await exchange.fetch_positions() if p["contracts"]]
    orders = await exchange.fetch_open_orders(None) + await exchange.fetch_open_orders(None, params={"trigger": True})
    violations += [f"position left: {p['symbol']} {p['contracts']}" for p in positions]
    violations += [f"order left: {o['clientOrderId']}" for o in orders]
    wallet_after = balance_of(await exchange.fetch_balance()).wallet_balance
    pnl = sum((r.realized_pnl or D(0) for r in results.values() if isinstance(r, TradeResult)), D(0))
    if abs(wallet_after - wallet_before - pnl) > D("1e-8"):
        violations.append(f"wallet moved {wallet_after - wallet_before}, trades' net PnL {pnl}")
    if reconciled.returncode != 0 or "nothing to fix" not in reconciled.stdout:
        violations.append("the last reconcile run found something: " + reconciled.stdout[-800:])
    runs = [e[1] for e in await redis.xrange(RECONCILE_EVENTS_STREAM) if e[1].get("type") == "run"]
    statuses = Counter(r.status.value for r in results.values() if isinstance(r, TradeResult))

    print(f"\nSoak ({time.monotonic() - began:.0f} s; paper speed {args.speed:g}×; {args.rate:g} intents/min; "
          f"calm {args.calm_min:g} min, chaos {args.chaos_min:g} min, a kill every ~{args.kill_every:g} s)")
    rows = [
        ("trades (intents published)", f"{len(s.intents)}"),
        ("trades by end status", ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))),
        ("kills", ", ".join(f"{k} {v}" for k, v in sorted(s.kills.items())) or "0"),
        ("recovery after a kill p50 / max", f"{pct(s.recoveries, 50):.1f} / {max(s.recoveries, default=float('nan')):.1f} s"),
        ("intent → OPEN p50, calm (baseline)", f"{pct(s.opened_after['calm'], 50):.2f} s (n={len(s.opened_after['calm'])})"),
        ("intent → OPEN p50, chaos", f"{pct(s.opened_after['chaos'], 50):.2f} s (n={len(s.opened_after['chaos'])})"),
        ("invariant violations", f"{len(violations)}"),
        ("reconcile runs / findings per run",
         f"{len(runs)} / " + (", ".join(r.get("findings", "?") for r in runs) or "-")),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for violation in violations[:50]:
        print(f"  VIOLATION {violation}")
    if s.recoveries:
        print(f"recoveries (s): {', '.join(f'{r:.1f}' for r in s.recoveries)}; mean {statistics.mean(s.recoveries):.1f}")
    await redis.aclose()
    return 1 if violations else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="0.5 calm + 1.5 chaos minutes")
    parser.add_argument("--rate", type=float, default=6.0, help="intents per minute (default 6)")
    parser.add_argument("--calm-min", type=float, help="minutes without kills first (default 1)")
    parser.add_argument("--chaos-min", type=float, help="minutes with kills (default 4)")
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between kills, ±50 %% (default 30)")
    parser.add_argument("--speed", type=float, default=30.0, help="paper market clock × wall clock (default 30)")
    parser.add_argument("--seed", type=int, default=7)
    ns = parser.parse_args()
    ns.calm_min = ns.calm_min if ns.calm_min is not None else (0.5 if ns.quick else 1.0)
    ns.chaos_min = ns.chaos_min if ns.chaos_min is not None else (1.5 if ns.quick else 4.0)
    sys.exit(asyncio.run(run(ns)))
