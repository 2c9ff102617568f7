"""Realized PnL of a trade from its fills and funding payments, exact in Decimal.

The old system never recorded realized PnL (its ledger keys stayed empty); here every close
computes it from what the exchange reported: fill prices and quantities, the fee of each fill
(positive = paid, negative = rebate) and funding payments (positive = received). Rounding to
cents happens only in `TradePnl.display()`; stored values keep every digit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from pydantic import BaseModel, ConfigDict, field_validator

from trading.models import Side

_CTX = Context(prec=50)
CENT = Decimal("0.01")
# What results and events carry of the derived figures: the sums (gross, fees, funding, net) stay
# exact; an average price keeps 10 decimals (below any tick), an R multiple 4.
PRICE_PLACES = Decimal("1e-10")
R_PLACES = Decimal("0.0001")


class Fill(BaseModel):
    """One execution reported by the exchange."""

    model_config = ConfigDict(frozen=True)

    side: Side  # the order's side: the position's side for entries, the opposite for exits
    price: Decimal
    qty: Decimal
    fee: Decimal = Decimal(0)  # in USDT; negative for a maker rebate
    at: datetime | None = None

    @field_validator("price", "qty")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if not value.is_finite() or value <= 0:
            raise ValueError(f"must be a finite number > 0, got {value}")
        return value

    @field_validator("fee")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError(f"must be finite, got {value}")
        return value


class FundingPayment(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Decimal  # USDT; positive = received, negative = paid
    at: datetime | None = None


class TradePnl(BaseModel):
    model_config = ConfigDict(frozen=True)

    side: Side
    entry_qty: Decimal
    closed_qty: Decimal
    avg_entry_price: Decimal
    avg_exit_price: Decimal | None
    gross_pnl: Decimal  # price moves only
    fees: Decimal  # all fees paid (entry and exit fills)
    funding: Decimal  # net funding received
    net_pnl: Decimal  # gross − fees + funding
    initial_risk: Decimal | None  # loss at the initial stop for the entry quantity
    r_multiple: Decimal | None  # net_pnl / initial_risk
    holding_s: float | None

    @property
    def is_flat(self) -> bool:
        return self.closed_qty == self.entry_qty

    def display(self) -> dict[str, str]:
        """Money in cents, R to two decimals: for summaries, logs and the UI; never for maths."""
        out = {
            "gross_pnl": str(to_cents(self.gross_pnl)),
            "fees": str(to_cents(self.fees)),
            "funding": str(to_cents(self.funding)),
            "net_pnl": str(to_cents(self.net_pnl)),
        }
        if self.r_multiple is not None:
            out["r_multiple"] = str(self.r_multiple.quantize(CENT, rounding=ROUND_HALF_EVEN))
        if self.holding_s is not None:
            out["holding_time"] = format_duration(self.holding_s)
        return out


def realized_pnl(
    side: Side,
    entries: Iterable[Fill],
    exits: Iterable[Fill],
    funding: Iterable[FundingPayment] = (),
    *,
    initial_stop: Decimal | None = None,
    opened_at: datetime | None = None,
    closed_at: datetime | None = None,
) -> TradePnl:
    """PnL of the closed part of a `side` position, net of every fee and funding payment so far.

    Gross PnL = side.sign × (Σ exit qty × price − closed qty × average entry price), so a partial
    close is valued against the average entry. All fees are charged as they are paid (the entry
    fee is not pro-rated over partial closes). Holding time runs from `opened_at` (default: the
    first entry fill) to `closed_at` (default: the last exit fill).
    """
    entries, exits = list(entries), list(exits)
    if not entries:
        raise ValueError("a trade needs at least one entry fill")
    for fill in entries:
        if fill.side is not side:
            raise ValueError(f"entry fill is a {fill.side}, the position is a {side}")
    for fill in exits:
        if fill.side is not side.opposite:
            raise ValueError(f"exit fill is a {fill.side}, closing a {side} needs {side.opposite}")

    with localcontext(_CTX):
        entry_qty = sum((f.qty for f in entries), Decimal(0))
        closed_qty = sum((f.qty for f in exits), Decimal(0))
        if closed_qty > entry_qty:
            raise ValueError(f"exits ({closed_qty}) exceed the position ({entry_qty})")
        avg_entry = sum((f.qty * f.price for f in entries), Decimal(0)) / entry_qty
        exit_value = sum((f.qty * f.price for f in exits), Decimal(0))
        avg_exit = exit_value / closed_qty if closed_qty else None
        gross = side.sign * (exit_value - closed_qty * avg_entry)
        fees = sum((f.fee for f in (*entries, *exits)), Decimal(0))
        funded = sum((p.amount for p in funding), Decimal(0))
        net = gross - fees + funded
        risk = initial_risk(side, avg_entry, initial_stop, entry_qty) if initial_stop is not None else None
        r = r_multiple(net, risk) if risk is not None else None

    start = opened_at or min((f.at for f in entries if f.at is not None), default=None)
    end = closed_at or max((f.at for f in exits if f.at is not None), default=None)
    return TradePnl(
        side=side,
        entry_qty=entry_qty,
        closed_qty=closed_qty,
        avg_entry_price=at_most(avg_entry, PRICE_PLACES),
        avg_exit_price=at_most(avg_exit, PRICE_PLACES) if avg_exit is not None else None,
        gross_pnl=gross,
        fees=fees,
        funding=funded,
        net_pnl=net,
        initial_risk=risk,
        r_multiple=r,
        holding_s=holding_seconds(start, end) if start and end else None,
    )


def initial_risk(side: Side, entry_price: Decimal, stop_price: Decimal, qty: Decimal) -> Decimal:
    """What `qty` loses between entry and the initial stop (price move only): the "1 R"."""
    with localcontext(_CTX):
        return qty * max(Decimal(0), side.sign * (entry_price - stop_price))


def r_multiple(net_pnl: Decimal, risk: Decimal) -> Decimal | None:
    """PnL in units of the initial risk (4 decimals); None when there was no risk to measure against."""
    if risk <= 0:
        return None
    with localcontext(_CTX):
        return at_most(net_pnl / risk, R_PLACES)


def at_most(value: Decimal, places: Decimal) -> Decimal:
    """`value` with no more decimals than `places` has (rounded half-even), never padded: 63000.1
    stays 63000.1, 101.333… becomes 101.3333333333."""
    if value.as_tuple().exponent >= places.as_tuple().exponent:
        return value
    with localcontext(_CTX):
        return value.quantize(places, rounding=ROUND_HALF_EVEN)


def holding_seconds(opened_at: datetime, closed_at: datetime) -> float:
    """Seconds held (naive datetimes are taken as UTC)."""
    return (_as_utc(closed_at) - _as_utc(opened_at)).total_seconds()


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def format_duration(seconds: float) -> str:
    """`3d 4h 05m`, `2h 00m`, `45s`: how long a trade was held, for people."""
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
