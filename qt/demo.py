"""`qt demo`: the main job, end to end on the local stack.

Until the TradeWorkflow lands, the demo drives the exchange directly, the way the workflow will:
for each symbol it reads the replayed market, opens a position with a deterministic client id,
rests a reduce-only stop and take-profit on the exchange, lets the replay run until one of them
fires (cancelling the other), closes what is left at the time limit, and prints a summary whose
PnL comes from the exchange's own fills.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from activities.exchange import create_exchange, paper_base_url
from paper_exchange.config import PaperSettings
from qt.launcher import Stack
from qt.settings import ExchangeSettings, StackSettings
from trading.client_ids import client_order_id

console = Console()

LEVERAGE = 5
NOTIONAL_USDT = 250.0
STOP_PCT = 0.006  # 0.6 %: tight, so the demo sees exits within a few replayed hours
TAKE_PCT = 0.006


@dataclass
class DemoTrade:
    symbol: str
    side: str  # buy | sell
    trade_id: str
    amount: float = 0.0
    entry: float = 0.0
    stop: float = 0.0
    take: float = 0.0
    exit_price: float | None = None
    reason: str = "OPEN"
    realized_pnl: float = 0.0
    fees: float = 0.0

    def cid(self, step: str) -> str:
        return client_order_id(self.trade_id, step)


def _trend_side(candles: list[list[float]]) -> str:
    """Follow the last hour's direction; a placeholder for the signal engine."""
    closes = [c[4] for c in candles]
    return "buy" if closes[-1] >= closes[0] else "sell"


async def _open_trade(exchange, trade: DemoTrade) -> None:
    market = exchange.market(trade.symbol)
    await exchange.set_leverage(LEVERAGE, trade.symbol)
    ticker = await exchange.fetch_ticker(trade.symbol)
    price = float(ticker["last"])
    min_cost = float((market["limits"]["cost"] or {}).get("min") or 0)
    notional = max(NOTIONAL_USDT, min_cost * 1.5)
    trade.amount = float(exchange.amount_to_precision(trade.symbol, notional / price))
    order = await exchange.create_order(
        trade.symbol, "market", trade.side, trade.amount, None, {"clientOrderId": trade.cid("entry")}
    )
    trade.entry = float(order.get("average") or order.get("price") or price)
    sign = 1 if trade.side == "buy" else -1
    trade.stop = float(exchange.price_to_precision(trade.symbol, trade.entry * (1 - sign * STOP_PCT)))
    trade.take = float(exchange.price_to_precision(trade.symbol, trade.entry * (1 + sign * TAKE_PCT)))
    exit_side = "sell" if trade.side == "buy" else "buy"
    # Protection rests on the exchange, so the position is safe even if this process dies.
    await exchange.create_order(
        trade.symbol, "STOP_MARKET", exit_side, trade.amount, None,
        {"triggerPrice": trade.stop, "reduceOnly": True, "clientOrderId": trade.cid("sl-1")},
    )
    await exchange.create_order(
        trade.symbol, "TAKE_PROFIT_MARKET", exit_side, trade.amount, None,
        {"triggerPrice": trade.take, "reduceOnly": True, "clientOrderId": trade.cid("tp1")},
    )


async def _position_size(exchange, symbol: str) -> float:
    positions = await exchange.fetch_positions([symbol])
    return sum(abs(float(p.get("contracts") or 0)) for p in positions if p["symbol"] == symbol)


async def _settle_exit(exchange, trade: DemoTrade) -> None:
    """The position is flat: find which protective order fired and cancel the other."""
    for step, reason in (("sl-1", "SL"), ("tp1", "TP")):
        order = await exchange.fetch_order(None, trade.symbol, {"clientOrderId": trade.cid(step), "trigger": True})
        if order["status"] in ("closed", "filled") or (order.get("info", {}).get("algoStatus") in ("TRIGGERED", "FINISHED")):
            trade.reason = reason
        elif order["status"] == "open":
            await exchange.cancel_order(order["id"], trade.symbol, {"trigger": True})


async def _close_at_market(exchange, trade: DemoTrade) -> None:
    for step in ("sl-1", "tp1"):
        order = await exchange.fetch_order(None, trade.symbol, {"clientOrderId": trade.cid(step), "trigger": True})
        if order["status"] == "open":
            await exchange.cancel_order(order["id"], trade.symbol, {"trigger": True})
    remaining = await _position_size(exchange, trade.symbol)
    if remaining > 0:
        exit_side = "sell" if trade.side == "buy" else "buy"
        await exchange.create_order(
            trade.symbol, "market", exit_side, remaining, None,
            {"reduceOnly": True, "clientOrderId": trade.cid("close")},
        )
    trade.reason = "TIME_LIMIT"


async def _account_fills(exchange, trade: DemoTrade, since_ms: int) -> None:
    fills = await exchange.fetch_my_trades(trade.symbol, since=since_ms)
    trade.realized_pnl = sum(float(f["info"].get("realizedPnl", 0)) for f in fills)
    trade.fees = sum(float((f.get("fee") or {}).get("cost") or 0) for f in fills)
    exits = [f for f in fills if f["side"] != trade.side]
    if exits:
        qty = sum(float(f["amount"]) for f in exits)
        trade.exit_price = sum(float(f["price"]) * float(f["amount"]) for f in exits) / qty


async def _set_speed(base_url: str, speed: float) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        before = (await client.get(f"{base_url}/_paper/clock")).json()
        await client.post(f"{base_url}/_paper/clock", json={"speed": speed})
        return float(before.get("speed", 1.0))


async def run_demo(speed: float, symbols: list[str], timeout_s: float) -> int:
    stack = Stack(StackSettings(), PaperSettings())
    console.print("[bold]Starting the local stack[/] (reusing what already runs)")
    statuses = await stack.up()
    for s in statuses:
        console.print(f"  {s.name:15} {s.state:8} {s.url}")

    paper = PaperSettings()
    base_url = paper_base_url(paper)
    previous_speed = await _set_speed(base_url, speed)
    console.print(f"Market replay at {speed:g}x (real candles; one 5-minute candle every {300 / speed:.1f}s)")
    exchange = create_exchange(ExchangeSettings(mode="paper"), paper=paper)
    run_id = uuid.uuid4().hex[:8]
    trades: list[DemoTrade] = []
    try:
        await exchange.load_markets()
        start_balance = float((await exchange.fetch_balance())["total"].get("USDT", 0))
        since_ms = int(await exchange.fetch_time())
        for symbol in symbols:
            if symbol not in exchange.markets_by_id and symbol not in exchange.markets:
                console.print(f"[yellow]skip {symbol}: the exchange does not list it[/]")
                continue
            market_symbol = exchange.markets_by_id[symbol][0]["symbol"] if symbol in exchange.markets_by_id else symbol
            candles = await exchange.fetch_ohlcv(market_symbol, "5m", limit=12)
            trade = DemoTrade(market_symbol, _trend_side(candles), f"demo-{run_id}-{symbol.lower()}")
            await _open_trade(exchange, trade)
            trades.append(trade)
            console.print(
                f"  opened {trade.side.upper():4} {trade.amount:g} {symbol} @ {trade.entry:g}  "
                f"stop {trade.stop:g}  take {trade.take:g}"
            )

        deadline = time.monotonic() + timeout_s
        open_trades = list(trades)
        with console.status("Replaying the market until the stops and take-profits fire...") as spinner:
            while open_trades and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                for trade in list(open_trades):
                    if await _position_size(exchange, trade.symbol) == 0:
                        await _settle_exit(exchange, trade)
                        open_trades.remove(trade)
                        console.print(f"  {trade.symbol}: exit by {trade.reason}")
                spinner.update(f"Replaying... {len(open_trades)} open, {deadline - time.monotonic():.0f}s left")
        for trade in open_trades:
            await _close_at_market(exchange, trade)
            console.print(f"  {trade.symbol}: closed at the time limit")

        for trade in trades:
            await _account_fills(exchange, trade, since_ms)
        end_balance = float((await exchange.fetch_balance())["total"].get("USDT", 0))
    finally:
        await exchange.close()
        await _set_speed(base_url, previous_speed)

    _print_summary(trades, start_balance, end_balance, stack.settings.temporal_ui_url)
    return 0


def _print_summary(trades: list[DemoTrade], start_balance: float, end_balance: float, ui_url: str) -> None:
    table = Table(title="Demo trades (PnL from the exchange's own fills)")
    for col in ("symbol", "side", "qty", "entry", "exit", "reason", "realized PnL", "fees", "net"):
        table.add_column(col, justify="right" if col not in ("symbol", "side", "reason") else "left")
    for t in trades:
        net = t.realized_pnl - t.fees
        color = "green" if net >= 0 else "red"
        table.add_row(
            t.symbol, t.side.upper(), f"{t.amount:g}", f"{t.entry:g}",
            f"{t.exit_price:g}" if t.exit_price else "-", t.reason,
            f"{t.realized_pnl:.4f}", f"{t.fees:.4f}", f"[{color}]{net:.4f}[/]",
        )
    console.print(table)
    total_net = sum(t.realized_pnl - t.fees for t in trades)
    console.print(
        f"Account: {start_balance:.4f} -> {end_balance:.4f} USDT "
        f"(change {end_balance - start_balance:+.4f}; trades net {total_net:+.4f})"
    )
    console.print(f"Temporal Web UI: {ui_url}   stop the stack with: qt down")
