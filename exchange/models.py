"""What the exchange reports, typed: orders, fills, funding, positions, balances, prices. Built by
`exchange/parse.py` from ccxt's results; pydantic only (the workflow's schemas reuse them)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel


class ExchangeOrder(BaseModel):
    """One order as the exchange reports it (a plain order or a conditional "algo" order)."""

    symbol: str  # exchange id, BTCUSDT
    order_id: str
    client_order_id: str
    side: str  # BUY / SELL
    type: str  # exchange order type (MARKET, STOP_MARKET, ...)
    conditional: bool
    status: str  # ccxt's unified status: open / closed / canceled / expired / rejected
    exchange_status: str  # Binance's own: NEW, FILLED, ... or algoStatus NEW, TRIGGERED, ...
    quantity: Decimal
    filled: Decimal = Decimal(0)
    average_price: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    reduce_only: bool = False
    triggered_order_id: str | None = None  # a triggered conditional's market order
    time_ms: int | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "open"


class Fill(BaseModel):
    trade_id: str
    order_id: str
    client_order_id: str | None = None
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal  # positive = paid
    fee_asset: str
    realized_pnl: Decimal
    time_ms: int


class FundingPayment(BaseModel):
    amount: Decimal  # positive = received
    time_ms: int


class Position(BaseModel):
    """An open position (one-way mode: one per symbol)."""

    symbol: str  # exchange id
    quantity: Decimal  # signed: > 0 long, < 0 short
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    liquidation_price: Decimal | None = None
    leverage: int | None = None
    margin_mode: str | None = None
    unrealized_pnl: Decimal = Decimal(0)
    notional: Decimal  # |quantity × mark|, USDT

    @property
    def side(self) -> str:
        return "LONG" if self.quantity > 0 else "SHORT"


class Balance(BaseModel):
    """The USD-M account's totals (USDT)."""

    wallet_balance: Decimal | None = None  # totalWalletBalance
    available_balance: Decimal | None = None  # availableBalance: free margin
    margin_balance: Decimal | None = None  # totalMarginBalance: wallet + unrealized = equity
    unrealized_pnl: Decimal | None = None  # totalUnrealizedProfit


class Tick(BaseModel):
    """A last-price poll of one symbol, with the best bid/ask when the book was read too."""

    symbol: str
    price: Decimal
    time_ms: int | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None


class FundingRate(BaseModel):
    symbol: str
    rate: Decimal
    next_funding_ms: int | None = None
