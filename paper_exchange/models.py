"""The exchange's records: markets, orders, conditional (algo) orders, positions, fills, income.

Prices are integers in ticks and quantities integers in steps of their market, so a price or a
quantity can never leave its grid; money (balances, fees, PnL) is `Decimal`. Every record
serialises to a JSON-safe dict (`to_dict`) and back (`from_dict`) for the store.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from paper_exchange.config import SymbolSpec

MONEY = Decimal("0.00000001")  # balances, fees and PnL are kept to 8 decimals, like Binance's
ZERO = Decimal(0)


def money(value: Decimal) -> Decimal:
    return value.quantize(MONEY, rounding=ROUND_HALF_UP)


def plain(value: Decimal) -> str:
    """A Decimal without exponent: Decimal('1E+2') → '100'."""
    return format(value.normalize(), "f")


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    tick: Decimal
    step: Decimal
    min_notional: Decimal
    max_qty_steps: int
    max_leverage: int
    mmr: Decimal
    price_precision: int
    quantity_precision: int

    @classmethod
    def from_spec(cls, symbol: str, spec: SymbolSpec) -> Market:
        assert spec.price_precision is not None and spec.quantity_precision is not None
        return cls(
            symbol=symbol,
            base=symbol[:-4] if symbol.endswith("USDT") else symbol,
            tick=spec.tick_size,
            step=spec.step_size,
            min_notional=spec.min_notional,
            max_qty_steps=int(spec.max_qty / spec.step_size),
            max_leverage=spec.max_leverage,
            mmr=spec.maint_margin_rate,
            price_precision=spec.price_precision,
            quantity_precision=spec.quantity_precision,
        )

    def price(self, ticks: int) -> Decimal:
        return self.tick * ticks

    def qty(self, steps: int) -> Decimal:
        return self.step * steps

    def fmt_price(self, value: Decimal | int) -> str:
        dec = self.price(value) if isinstance(value, int) else value
        return f"{dec:.{self.price_precision}f}"

    def fmt_qty(self, steps: int) -> str:
        return f"{self.qty(steps):.{self.quantity_precision}f}"

    @property
    def default_leverage(self) -> int:
        return min(20, self.max_leverage)


class Record:
    """JSON round trip for the dataclass records below (Decimal ↔ str)."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Decimal) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            if value is not None and "Decimal" in hints[f.name]:
                value = Decimal(value)
            kwargs[f.name] = value
        return cls(**kwargs)


_HINTS: dict[type, dict[str, str]] = {}


def _hints(cls: type) -> dict[str, str]:
    if cls not in _HINTS:
        _HINTS[cls] = {name: str(hint) for name, hint in typing.get_type_hints(cls).items()}
    return _HINTS[cls]


OPEN_ORDER_STATUSES = ("NEW", "PARTIALLY_FILLED")


@dataclass(slots=True)
class Order(Record):
    """A regular order (MARKET or LIMIT), also the market order a triggered algo order sends."""

    order_id: int
    symbol: str
    client_id: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT
    orig_type: str  # LIMIT, MARKET, or the algo type that produced this order
    time_in_force: str  # GTC / IOC / FOK / GTX
    price: int  # ticks; 0 for MARKET
    qty: int  # steps
    reduce_only: bool
    status: str
    time: int
    update_time: int
    close_position: bool = False
    stop_price: int = 0  # trigger price of the algo order that sent it
    executed: int = 0
    cum_quote: Decimal = ZERO
    avg_price: Decimal = ZERO
    reserved_margin: Decimal = ZERO  # initial margin held for a resting LIMIT

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ORDER_STATUSES


CONDITIONAL_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")


@dataclass(slots=True)
class AlgoOrder(Record):
    """A conditional order living in Binance's algo id space until it triggers."""

    algo_id: int
    symbol: str
    client_id: str
    side: str
    order_type: str  # one of CONDITIONAL_TYPES
    qty: int  # steps; 0 with close_position
    trigger: int  # ticks; 0 for trailing stops
    reduce_only: bool
    close_position: bool
    status: str  # NEW → FINISHED / CANCELED / EXPIRED / REJECTED
    create_time: int
    update_time: int
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    activate: int | None = None  # ticks; trailing only
    callback_rate: Decimal | None = None  # percent; trailing only
    trigger_time: int = 0
    actual_order_id: int | None = None
    actual_price: Decimal | None = None
    # Trailing state: armed once activated; the best price seen since (float, in ticks).
    active: bool = False
    extreme: float | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "NEW"


@dataclass(slots=True)
class Position(Record):
    """One-way (BOTH) isolated position; qty is signed steps (long > 0)."""

    symbol: str
    qty: int = 0
    entry: Decimal = ZERO  # average entry price
    isolated_wallet: Decimal = ZERO  # margin assigned to the position (funding adjusts it)
    update_time: int = 0


@dataclass(slots=True)
class Trade(Record):
    trade_id: int
    symbol: str
    order_id: int
    side: str
    price: int  # ticks
    qty: int  # steps
    quote_qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time: int


@dataclass(slots=True)
class Income(Record):
    tran_id: int
    symbol: str
    income_type: str  # REALIZED_PNL / COMMISSION / FUNDING_FEE / INSURANCE_CLEAR
    income: Decimal
    time: int
    trade_id: str = ""
    info: str = ""


@dataclass
class Counters(Record):
    next_order_id: int = 1_000_001
    next_algo_id: int = 2_000_001
    next_trade_id: int = 3_000_001
    next_tran_id: int = 4_000_001
    next_client_id: int = 1


@dataclass
class AuditEvent:
    """One line of the order audit log (`GET /_paper/orders`)."""

    market_ms: int
    wall_ms: int
    result: str  # accepted / filled / rejected / canceled / triggered / expired / liquidated / fault
    method: str = ""
    path: str = ""
    symbol: str = ""
    side: str = ""
    type: str = ""
    client_id: str = ""
    order_id: int | None = None
    algo_id: int | None = None
    code: int | None = None
    msg: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
