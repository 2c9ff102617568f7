"""Arguments and results of the market activities (`activities/market.py`): no ccxt here."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from trading.sizing import MarketRules


class SymbolRules(BaseModel):
    """Filters of one market, plus the `MarketRules` subset sizing needs (`sizing_rules()`)."""

    model_config = ConfigDict(frozen=True)

    symbol: str  # exchange id, BTCUSDT
    ccxt_symbol: str  # BTC/USDT:USDT
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal | None = None
    min_notional: Decimal = Decimal(0)
    max_leverage: int | None = None

    def sizing_rules(self) -> MarketRules:
        return MarketRules(step_size=self.step_size, min_qty=self.min_qty, max_qty=self.max_qty,
                           min_notional=self.min_notional, max_leverage=self.max_leverage)


class PriceResult(BaseModel):
    symbol: str
    price: Decimal  # last trade price
    time_ms: int  # the exchange's market clock at that price
