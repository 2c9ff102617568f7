"""Position and margin arithmetic for one-way isolated positions (pure functions).

Account model (Binance's, for isolated margin):
- wallet balance: deposits + realized PnL − fees + funding; it includes the isolated margins.
- a position's isolated wallet: the initial margin put in when it was opened or increased
  (notional / leverage at the fill price), adjusted by funding, released pro rata on reduction.
- available balance: wallet − Σ isolated wallets − initial margin held by resting LIMIT orders
  (isolated unrealized PnL is not available).
- liquidation when the price reaches the level where isolated wallet + unrealized PnL equals the
  maintenance margin (mmr × notional):
  long (q·E − M) / (q·(1 − mmr)), short (M + q·E) / (q·(1 + mmr)).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from paper_exchange.models import ZERO, Market, Position, money

ENTRY = Decimal("0.0000000001")


@dataclass(frozen=True)
class FillResult:
    qty: int  # steps actually filled
    closing: int  # steps that reduced the position
    realized_pnl: Decimal
    notional: Decimal


def split(position_qty: int, sign: int, qty: int) -> tuple[int, int]:
    """(closing, opening) steps of a fill of `qty` steps in direction `sign` (+1 buy)."""
    closing = min(qty, abs(position_qty)) if position_qty * sign < 0 else 0
    return closing, qty - closing


def reducible(position_qty: int, sign: int, qty: int | None) -> int:
    """How much of a reduce-only order can fill (None = close the whole position)."""
    if position_qty * sign >= 0:
        return 0
    return abs(position_qty) if qty is None else min(qty, abs(position_qty))


def initial_margin(market: Market, steps: int, price_ticks: int, leverage: int) -> Decimal:
    return money(market.price(price_ticks) * market.qty(steps) / leverage)


def apply_fill(position: Position, market: Market, sign: int, qty: int, price_ticks: int,
               leverage: int) -> FillResult:
    """Move `position` by a fill; returns realized PnL (margin moves happen on the position)."""
    price = market.price(price_ticks)
    closing, opening = split(position.qty, sign, qty)
    realized = ZERO
    if closing:
        held = abs(position.qty)
        direction = 1 if position.qty > 0 else -1
        realized = money((price - position.entry) * market.qty(closing) * direction)
        if closing == held:
            position.isolated_wallet = ZERO
            position.entry = ZERO
        else:
            position.isolated_wallet -= money(position.isolated_wallet * closing / held)
        position.qty += sign * closing
    if opening:
        held = abs(position.qty)
        total = market.qty(held + opening)
        position.entry = ((position.entry * market.qty(held) + price * market.qty(opening))
                          / total).quantize(ENTRY)
        position.qty += sign * opening
        position.isolated_wallet += initial_margin(market, opening, price_ticks, leverage)
    return FillResult(qty, closing, realized, price * market.qty(qty))


def unrealized_pnl(position: Position, market: Market, price_ticks: int) -> Decimal:
    if not position.qty:
        return ZERO
    return money((market.price(price_ticks) - position.entry) * market.qty(position.qty))


def liquidation_price(position: Position, market: Market) -> Decimal:
    """0 when the position cannot be liquidated (flat, or margin covers a fall to zero)."""
    if not position.qty:
        return ZERO
    q = market.qty(abs(position.qty))
    e, m, mmr = position.entry, position.isolated_wallet, market.mmr
    if position.qty > 0:
        price = (q * e - m) / (q * (1 - mmr))
    else:
        price = (m + q * e) / (q * (1 + mmr))
    return max(ZERO, price)


def notional(position: Position, market: Market, price_ticks: int) -> Decimal:
    return market.price(price_ticks) * market.qty(position.qty)
