"""The demo's view of the replayed market: paper-exchange controls, warm-up, and intents.

- `PaperControls`: the paper exchange's `/_paper/` test controls the demo uses (the clock's
  speed, the account's `walletBalance`, open positions). Nothing here pins a price: the demo
  trades on the real replay.
- `closed_candle_count` / warm-up: the paper exchange has no candles before its replay start,
  and the kill score needs at least 20 closed 5-minute candles (`get_market_features` returns
  None before), so the demo waits for a few more than that first.
- `build_intent`: one trade intent with the old producers' field names (SPEC "Input"), from the
  symbol's recent closed klines. The side comes from a simple trend rule (last hour up → BUY):
  a placeholder until the signal engine lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from activities.market import closed_candles
from trading.features import MIN_CANDLES, compute_features

TREND_CANDLES = 12  # the trend rule looks at the last hour of 5-minute candles
FEATURE_WINDOW = 48  # as the workflow's entry features (get_market_features)


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


async def build_intent(exchange: Any, symbol: str, intent_id: str, *, position_size_usd: Decimal,
                       leverage: int) -> IntentPlan | None:
    """An intent for `symbol` at its current price and the exchange's market clock; None while
    the exchange has too few closed candles for features (warm-up not over)."""
    unified = exchange.markets_by_id[symbol][0]["symbol"]
    now_ms = int(await exchange.fetch_time())
    rows = await exchange.fetch_ohlcv(unified, "5m", limit=FEATURE_WINDOW + 1)
    candles = closed_candles(rows, now_ms)[-FEATURE_WINDOW:]
    features = compute_features(candles)
    if features is None or len(candles) < max(MIN_CANDLES, TREND_CANDLES + 1):
        return None
    ticker = await exchange.fetch_ticker(unified)
    price = Decimal(str((ticker.get("info") or {}).get("lastPrice") or ticker["last"]))
    market_ms = int(ticker.get("timestamp") or now_ms)

    # The trend rule: follow the last hour's direction (placeholder for the signal engine).
    then, last = candles[-TREND_CANDLES - 1].close, candles[-1].close
    move_pct = (last - then) / then * 100
    side = "BUY" if last >= then else "SELL"
    # Confidence grows with how clean the move was (efficiency ratio, 0..1): 0.60..0.95.
    confidence = round(0.60 + 0.35 * features.trend_strength, 3)
    why = f"trend rule: last hour {move_pct:+.2f} %, regime {features.regime}"
    fields = {
        "intent_id": intent_id,
        "symbol": symbol,
        "side": side,
        "confidence": str(confidence),
        "entry_price": format(price, "f"),
        "position_size_usd": format(position_size_usd, "f"),
        "leverage": str(leverage),
        "timestamp": datetime.fromtimestamp(market_ms / 1000, UTC).isoformat(),
        "model": "demo-trend-rule",
        "reason": why,
        # As the old producers write them: ATR as a fraction of price, volatility relative to
        # its longer-run level, the regime label.
        "atr_value": f"{features.atr_pct:.6f}",
        "volatility_factor": f"{features.volatility_factor:.4f}",
        "regime": features.regime,
        "source": "demo",
    }
    return IntentPlan(fields=fields, symbol=symbol, side=side, price=price, why=why)


def market_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
