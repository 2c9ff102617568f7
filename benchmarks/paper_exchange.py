"""Benchmark of the paper exchange: order round-trips through ccxt, and replay speed.

Starts its own `python -m paper_exchange` (speed 0, temp data dir) and stops it. Prints:
1. order round-trips per second through ccxt's binanceusdm (client-side throttle off):
   a) create + cancel of a resting LIMIT order (2 HTTP requests per round-trip);
   b) MARKET open + MARKET reduce-only close (2 requests, 2 fills per round-trip).
2. replay speed in 5-minute candles per second of wall time, timing one `/_paper/clock` jump
   of N candles (every symbol replays N candles; matching and funding run across the jump):
   a) with 0 resting orders (baseline);
   b) with 100 resting reduce-only STOP_MARKET orders far from the price, across symbols;
   c) with 100 armed trailing stops, 10% callback, over N/50 candles (worst case: every new
      extreme is walked in detail; a stop that fires expires, having nothing to reduce).

Usage: .venv/bin/python benchmarks/paper_exchange.py [--orders 300] [--candles 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from exchange.client import create_exchange  # noqa: E402
from paper_exchange.config import PaperSettings  # noqa: E402
from paper_exchange.replay import CANDLE_MS  # noqa: E402

BTC = "BTC/USDT:USDT"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_PAPER_")}
    env.update(QT_PAPER_PORT=str(port), QT_PAPER_DATA_DIR=str(data_dir), QT_PAPER_SPEED="0",
               QT_PAPER_START_MS="1735689600000")
    process = subprocess.Popen([sys.executable, "-m", "paper_exchange"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fapi/v1/ping", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the paper exchange did not start")


async def round_trips(settings: PaperSettings, control: httpx.Client, count: int) -> None:
    control.post("/_paper/price", json={"symbol": "BTCUSDT", "price": "63000"})
    client = create_exchange(settings.client_settings(), enableRateLimit=False)
    try:
        await client.load_markets()
        for _ in range(10):  # warm-up: connection pool, code paths
            order = await client.create_order(BTC, "limit", "buy", 0.01, 60000)
            await client.cancel_order(order["id"], BTC)
        started = time.perf_counter()
        for _ in range(count):
            order = await client.create_order(BTC, "limit", "buy", 0.01, 60000)
            await client.cancel_order(order["id"], BTC)
        elapsed = time.perf_counter() - started
        print(f"LIMIT create + cancel:        {count / elapsed:8.1f} round-trips/s "
              f"({elapsed / count * 1000:.2f} ms each, {2 * count / elapsed:.0f} requests/s)")
        started = time.perf_counter()
        for _ in range(count):
            await client.create_order(BTC, "market", "buy", 0.01)
            await client.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
        elapsed = time.perf_counter() - started
        print(f"MARKET open + close:          {count / elapsed:8.1f} round-trips/s "
              f"({elapsed / count * 1000:.2f} ms each)")
    finally:
        await client.close()


async def place_resting(settings: PaperSettings, trailing: bool) -> int:
    client = create_exchange(settings.client_settings(), enableRateLimit=False)
    placed = 0
    try:
        markets = await client.load_markets()
        symbols = [m["symbol"] for m in markets.values()]
        for n in range(100):
            symbol = symbols[n % len(symbols)]
            market = markets[symbol]
            amount = max(market["limits"]["amount"]["min"], market["precision"]["amount"])
            if trailing:
                params = {"trailingPercent": 10, "reduceOnly": True}
            else:  # reduce-only stops at one tick: far below any price the replay reaches
                params = {"triggerPrice": market["precision"]["price"],
                          "reduceOnly": True}
            await client.create_order(symbol, "market", "sell", amount, params=params)
            placed += 1
    finally:
        await client.close()
    return placed


def jump(control: httpx.Client, candles: int) -> float:
    started = time.perf_counter()
    response = control.post("/_paper/clock", json={"advance_ms": candles * CANDLE_MS},
                            timeout=600)
    response.raise_for_status()
    return time.perf_counter() - started


async def main(orders: int, candles: int) -> None:
    with tempfile.TemporaryDirectory(prefix="paper-bench-") as tmp:
        port = free_port()
        process = start_server(Path(tmp), port)
        settings = PaperSettings(port=port, data_dir=Path(tmp))
        control = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        try:
            symbols = len(settings.symbols)
            print(f"paper exchange benchmark ({symbols} symbols, python {sys.version.split()[0]})")
            await round_trips(settings, control, orders)
            control.post("/_paper/reset")

            baseline = elapsed = jump(control, candles)
            print(f"replay, 0 resting orders:     {candles / elapsed:12,.0f} candles/s "
                  f"({candles * symbols / elapsed:,.0f} symbol-candles/s; {candles:,} candles "
                  f"in {elapsed:.2f} s)")
            placed = await place_resting(settings, trailing=False)
            elapsed = jump(control, candles)
            state = control.get("/_paper/state").json()
            print(f"replay, {placed} resting stops:   {candles / elapsed:12,.0f} candles/s "
                  f"({candles * symbols / elapsed:,.0f} symbol-candles/s; "
                  f"{len(state['open_algo_orders'])} still resting; "
                  f"{baseline / elapsed:.2f}x the 0-order baseline)")
            control.post("/_paper/reset")
            placed = await place_resting(settings, trailing=True)
            trailing_candles = max(1, candles // 50)
            elapsed = jump(control, trailing_candles)
            state = control.get("/_paper/state").json()
            print(f"replay, {placed} armed trailing: {trailing_candles / elapsed:12,.0f} "
                  f"candles/s ({len(state['open_algo_orders'])} still resting after "
                  f"{trailing_candles:,} candles; "
                  f"{(baseline / candles) / (elapsed / trailing_candles):.3f}x the baseline)")
        finally:
            control.close()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="round-trips per measurement")
    parser.add_argument("--candles", type=int, default=100_000, help="candles per clock jump")
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.candles))
