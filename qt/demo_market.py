"""The demo's view of the replayed market: paper-exchange controls, warm-up, and intents.

- `PaperControls`: the paper exchange's `/_paper/` test controls the demo uses (the clock's
  speed, the account's `walletBalance`, open positions). Nothing here pins a price: the demo
  trades on the real replay.
- `closed_candle_count` / warm-up: the paper exchange has no candles before its replay start,
  and the kill score needs at least 20 closed 5-minute candles (`MarketActivities.features` returns
  None before), so the demo waits for a few more than that first.
- `IntentPlan`: what the demo shows about an intent it follows (the intents themselves come
  from the signal engine through `quantum:stream:trade.intent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from activities.market import closed_candles


class PaperControls:
    """The `/_paper/` controls (local, unsigned) of the paper exchange at `base_url`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url, timeout=10)

    async def close(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str) -> Any:
        response = await self._http.get(path)
        response.raise_for_status()
        return response.json()

    async def clock(self) -> dict:
        return await self._get("/_paper/clock")

    async def set_speed(self, speed: float) -> dict:
        response = await self._http.post("/_paper/clock", json={"speed": speed})
        response.raise_for_status()
        return response.json()

    async def state(self) -> dict:
        return await self._get("/_paper/state")

    async def wallet_balance(self) -> Decimal:
        """The account's `walletBalance` (USDT, 8 decimals): realized PnL, fees and funding."""
        return Decimal(str((await self.state())["balance"]["walletBalance"]))


async def closed_candle_count(exchange: Any, symbol: str, now_ms: int, limit: int) -> int:
    """Closed 5-minute candles the exchange serves for `symbol` (at most `limit`)."""
    rows = await exchange.fetch_ohlcv(symbol, "5m", limit=limit + 1)
    return len(closed_candles(rows, now_ms))


@dataclass(frozen=True)
class IntentPlan:
    """An intent (flat SPEC fields, as XADD writes them) and what the demo shows about it."""

    fields: dict[str, str]
    symbol: str
    side: str
    price: Decimal
    why: str


def market_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
