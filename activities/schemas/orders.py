"""Arguments and results of the order activities (`activities/orders.py`).

Kept apart from the activities so the TradeWorkflow can import them without pulling ccxt into
the workflow sandbox. One pydantic model per argument/result: fields can be added without
breaking running workflows.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel

from exchange.models import ExchangeOrder, Fill, FundingPayment  # noqa: F401 (part of these schemas)

from trading.entry_checks import EntryGuard
from trading.levels import Levels
from trading.models import Side

WOULD_TRIGGER_IMMEDIATELY = "WouldTriggerImmediately"
LATE_ENTRY_REFUSED = "LateEntryRefused"  # the entry went out late and the market moved away


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"

    @property
    def conditional(self) -> bool:
        """Conditional types live on Binance's algo endpoints: looked up with `trigger`."""
        return self not in (OrderType.MARKET, OrderType.LIMIT)


class ProtectiveStop(BaseModel):
    client_order_id: str
    planned_levels: Levels  # the stop is `rebase_levels(planned_levels, fill).stop_loss`


class PlaceOrderRequest(BaseModel):
    symbol: str
    side: Side  # the order's side (BUY/SELL), not the position's
    type: OrderType
    quantity: Decimal
    client_order_id: str
    price: Decimal | None = None  # LIMIT
    trigger_price: Decimal | None = None  # STOP_MARKET / TAKE_PROFIT_MARKET
    callback_rate_pct: Decimal | None = None  # TRAILING_STOP_MARKET, percent (0.8 = 0.8 %)
    activation_price: Decimal | None = None  # TRAILING_STOP_MARKET, optional
    reduce_only: bool = False
    time_in_force: str | None = None  # LIMIT: GTC (default) / IOC / FOK / GTX
    # Set the symbol's leverage (isolated margin) first, once, when the order is not placed
    # yet: the entry's "set leverage, market order" as one step.
    leverage: int | None = None
    # Entry only: re-check the price when the order goes out late (retry, backlog); refused
    # with the error type LATE_ENTRY_REFUSED, nothing sent.
    entry_guard: EntryGuard | None = None
    # Entry only: as soon as the entry has filled, the same activity places the reduce-only
    # stop at the planned stop distance re-based on the fill (`rebase_levels`), so a crash
    # between the fill and the stop costs one short activity retry, not a start-to-close timeout.
    protective_stop: ProtectiveStop | None = None


class OrderRef(BaseModel):
    symbol: str
    client_order_id: str
    conditional: bool = False  # STOP_MARKET / TAKE_PROFIT_MARKET / TRAILING_STOP_MARKET


class OrderResult(ExchangeOrder):
    """An order as the exchange reports it (`exchange.models.ExchangeOrder`), and what this call did."""

    already_existed: bool = False  # found by client id: this call placed nothing
    # Entry with `protective_stop`: the stop resting on the exchange, or why it is not.
    protective_stop: OrderResult | None = None
    protective_stop_error: str | None = None
    protective_stop_crossed: bool = False  # the stop was refused because the price is beyond it
    # Entry (`open_position`): the position's liquidation price once open (None: unknown).
    liquidation_price: Decimal | None = None


class AmendRequest(BaseModel):
    """Change an open position in one activity (`amend_position`), each step by its client id:
    1. `reduce`: a reduce-only MARKET (a take-profit harvest, an operator's partial close);
    2. `new_stop`: the stop to rest from now on, for what remains after `reduce` filled
       (`new_stop.quantity` is the size before it);
    3. `replaced_stop_client_order_id`: the stop `new_stop` replaces, cancelled once it rests."""

    symbol: str
    reduce: PlaceOrderRequest | None = None
    new_stop: PlaceOrderRequest | None = None
    replaced_stop_client_order_id: str | None = None


class AmendResult(BaseModel):
    reduce: OrderResult | None = None
    new_stop: OrderResult | None = None
    # The exchange refused `new_stop` on its merits (the previous stop still rests); `crossed`:
    # the price is already beyond it.
    stop_error: str | None = None
    stop_crossed: bool = False
    replaced_stop_cancelled: bool = False  # False with a new stop: the old one is cancelled at the close


class CancelResult(BaseModel):
    found: bool  # the exchange knows this client id
    canceled_now: bool  # this call cancelled it (False: it had already finished)
    order: OrderResult | None = None  # its final state


class PositionRequest(BaseModel):
    symbol: str


class PositionResult(BaseModel):
    symbol: str
    quantity: Decimal  # signed: > 0 long, < 0 short, 0 flat
    entry_price: Decimal | None = None
    liquidation_price: Decimal | None = None
    leverage: int | None = None
    margin_mode: str | None = None
    unrealized_pnl: Decimal = Decimal(0)
    mark_price: Decimal | None = None
    exchange_time_ms: int


class FillsRequest(BaseModel):
    symbol: str
    client_order_ids: list[str] = []  # fills of these orders (a triggered stop carries its id)
    since_ms: int | None = None  # or: every fill of the symbol since then
    funding_since_ms: int | None = None  # funding income since then (None: no funding query)


class FillsResult(BaseModel):
    symbol: str
    fills: list[Fill]
    funding: list[FundingPayment] = []
    realized_pnl: Decimal  # exchange's own, sum over fills (fees excluded)
    fees: Decimal  # sum, positive = paid
    funding_total: Decimal  # positive = received

    @property
    def net_pnl(self) -> Decimal:
        return self.realized_pnl - self.fees + self.funding_total


class ClosePositionRequest(BaseModel):
    symbol: str
    client_order_id: str
    # Once flat (in the same activity, so a close costs the history one activity): cancel these
    # stops (unknown or finished ones are a no-op) and read the trade's fills.
    cancel_stop_client_order_ids: list[str] = []
    fills: FillsRequest | None = None


class ClosePositionResult(BaseModel):
    was_flat: bool  # nothing to close: no order sent
    order: OrderResult | None = None
    remaining_quantity: Decimal  # signed position after the close (0 = flat)
    # Set once flat: the stops still open that the exchange refused to cancel (cancelled again
    # by the workflow), and the fills (None with `fills_error`: the exchange refused to list them).
    stops_not_cancelled: list[str] = []
    fills: FillsResult | None = None
    fills_error: str | None = None
