"""Market activities: a symbol's trading rules, its price on the market clock, and its features.

Rules and price read ccxt's loaded market (no extra call for the rules, except the leverage
bracket, cached per symbol) so gates, sizing and levels use the very filters the exchange
enforces. Prices and sizes travel as `Decimal`, parsed from the exchange's own strings where
possible. Features (`trading.features`) are computed from closed 5-minute klines only.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.schemas.market import PriceResult, SymbolRules
from trading.features import Candle
from activities.temporal_errors import to_application_error
from exchange.client import ExchangeHolder, ExchangeSource, shared_market_exchange
from exchange.errors import FailureKind
from exchange.parse import last_price, symbol_filters, to_decimal  # noqa: F401 (to_decimal: used by callers)
from trading.features import CANDLE_MS, MarketFeatures, compute_features

FEATURE_CANDLES = 48  # 4 hours of 5m candles per feature computation


def resolve_symbol(exchange: Any, symbol: str) -> str:
    """ccxt's unified symbol for `BTCUSDT` or `BTC/USDT:USDT`; non-retryable error if unlisted."""
    if symbol in exchange.markets:
        return symbol
    by_id = exchange.markets_by_id.get(symbol.upper()) if exchange.markets_by_id else None
    if by_id:
        return by_id[0]["symbol"]
    raise ApplicationError(
        f"unknown symbol {symbol!r}: the exchange does not list it",
        {"kind": FailureKind.BAD_SYMBOL.value, "symbol": symbol},
        type=FailureKind.BAD_SYMBOL.value,
        non_retryable=True,
    )


def candle_from_row(row: list) -> Candle:
    """A ccxt OHLCV row `[open_ms, open, high, low, close, volume]` as a Candle (exact Decimals
    of ccxt's floats: `str` gives their shortest form, the exchange's own digits)."""
    names = ("open", "high", "low", "close", "volume")
    return Candle(open_ms=int(row[0]), **{n: Decimal(str(x)) for n, x in zip(names, row[1:6])})


def closed_candles(rows: list[list], now_ms: int) -> list[Candle]:
    """The rows whose 5 minutes had passed at `now_ms` (the exchange serves the open candle
    last; its values would still change)."""
    return [candle_from_row(r) for r in rows if int(r[0]) + CANDLE_MS <= now_ms]


def rules_from_market(market: dict, max_leverage: int | None) -> SymbolRules:
    """Binance's raw filters first (exact strings), ccxt's parsed precision/limits as fallback."""
    filters = symbol_filters(market)
    price_filter, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
    limits = market.get("limits") or {}
    amount_limits, cost_limits = limits.get("amount") or {}, limits.get("cost") or {}
    tick = to_decimal(price_filter.get("tickSize")) or to_decimal(market["precision"]["price"])
    step = to_decimal(lot.get("stepSize")) or to_decimal(market["precision"]["amount"])
    min_notional = to_decimal(filters.get("MIN_NOTIONAL", {}).get("notional"))
    if min_notional is None:
        min_notional = to_decimal(cost_limits.get("min")) or Decimal(0)
    leverage_limit = (limits.get("leverage") or {}).get("max")
    return SymbolRules(
        symbol=market["id"],
        ccxt_symbol=market["symbol"],
        tick_size=tick,
        step_size=step,
        min_qty=to_decimal(lot.get("minQty")) or to_decimal(amount_limits.get("min")) or Decimal(0),
        max_qty=to_decimal(lot.get("maxQty")) or to_decimal(amount_limits.get("max")),
        min_notional=min_notional,
        max_leverage=max_leverage or (int(leverage_limit) if leverage_limit else None),
    )


class MarketActivities:
    def __init__(self, exchange: ExchangeSource = shared_market_exchange) -> None:
        self._holder = ExchangeHolder(exchange)
        self._max_leverage: dict[str, int | None] = {}  # brackets do not change during a run

    async def _max_leverage_of(self, exchange: Any, symbol: str) -> int | None:
        if symbol not in self._max_leverage:
            try:
                tiers = await exchange.fetch_market_leverage_tiers(symbol)
                self._max_leverage[symbol] = max(int(t["maxLeverage"]) for t in tiers) if tiers else None
            except Exception as exc:  # noqa: BLE001 (classified below)
                error = to_application_error(exc)
                if not error.non_retryable:
                    raise error from exc
                self._max_leverage[symbol] = None  # endpoint missing: ccxt limits are the fallback
        return self._max_leverage[symbol]

    async def rules(self, symbol: str) -> SymbolRules:
        exchange = await self._holder.exchange()
        unified = resolve_symbol(exchange, symbol)
        return rules_from_market(exchange.market(unified),
                                 await self._max_leverage_of(exchange, unified))

    async def price(self, symbol: str) -> PriceResult:
        exchange = await self._holder.exchange()
        unified = resolve_symbol(exchange, symbol)
        try:
            ticker = await exchange.fetch_ticker(unified)
            time_ms = ticker.get("timestamp") or await exchange.fetch_time()
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        return PriceResult(symbol=exchange.market(unified)["id"], price=last_price(ticker), time_ms=int(time_ms))

    async def features(self, symbol: str, window: int = FEATURE_CANDLES) -> MarketFeatures | None:
        exchange = await self._holder.exchange()
        unified = resolve_symbol(exchange, symbol)
        try:
            # The clock first: every candle closed by then is served closed by the klines call;
            # one that closes in between is dropped rather than risk keeping a partial one.
            now_ms = await exchange.fetch_time()
            rows = await exchange.fetch_ohlcv(unified, "5m", limit=window + 1)
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        return compute_features(closed_candles(rows, int(now_ms))[-window:])
