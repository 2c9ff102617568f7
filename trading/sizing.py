"""Risk-based position sizing: how many contracts a trade may open.

The size is the smallest of several caps, each expressed as a quantity:

- risk:         loss at the stop (price distance + taker fees on both legs) must not exceed
                equity × risk_per_trade × confidence scale;
- intent_size:  the producer's `position_size_usd`. The old producers meant *margin* there
                ("$200 margin ($2000 notional)" at 10×), so by default the notional cap is
                position_size_usd × leverage; `intent_size_is_margin=False` reads it as notional;
- max_notional: the policy's ceiling per trade;
- free_margin:  margin (notional / leverage) within a share of the free margin;
- max_qty:      the market's largest order.

Leverage is min(intent, policy, market). The quantity is floored to the step size, so no cap
is ever exceeded by rounding. Below the market's min quantity or min notional the result
carries `rejected_reason` (the gate refuses the trade; SPEC stage 1, Binance -4164).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Context, Decimal, localcontext

from pydantic import BaseModel, ConfigDict

from trading.models import Side

_CTX = Context(prec=50, rounding=ROUND_FLOOR)  # every quotient errs low: a cap is never exceeded
CAP_ORDER = ("risk", "intent_size", "max_notional", "free_margin", "max_qty")  # tie-break order


class SizingPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    risk_per_trade: Decimal = Decimal("0.01")  # share of equity lost at the stop, at confidence 1
    confidence_floor: Decimal = Decimal("0.25")  # risk scale at confidence 0, rising linearly to 1
    max_notional_usd: Decimal | None = Decimal("5000")
    max_leverage: int = 20
    margin_usage: Decimal = Decimal("0.95")  # keep some free margin for fees and mark moves
    fee_rate: Decimal = Decimal("0.0005")  # taker fee per leg
    intent_size_is_margin: bool = True


DEFAULT_SIZING_POLICY = SizingPolicy()


class MarketRules(BaseModel):
    """What the exchange allows for one symbol (from `exchangeInfo` / ccxt market limits)."""

    model_config = ConfigDict(frozen=True)

    step_size: Decimal
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal | None = None
    min_notional: Decimal = Decimal(0)
    max_leverage: int | None = None


class SizingResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    quantity: Decimal  # contracts, a multiple of the step size (0 when nothing fits)
    notional: Decimal  # quantity × entry price
    margin: Decimal  # notional / leverage
    leverage: int
    risk_budget: Decimal  # the most the trade may lose at the stop
    loss_at_stop: Decimal  # what this quantity loses at the stop, fees included
    binding_cap: str  # which of CAP_ORDER set the size
    cap_quantities: dict[str, Decimal]  # every cap as a quantity, floored to the step
    rejected_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.rejected_reason is None


def size_position(
    *,
    side: Side,
    entry_price: Decimal,
    stop_price: Decimal,
    confidence: float | Decimal,
    equity: Decimal,
    free_margin: Decimal,
    intent_size_usd: Decimal,
    intent_leverage: int,
    market: MarketRules,
    policy: SizingPolicy = DEFAULT_SIZING_POLICY,
) -> SizingResult:
    """The quantity to open; see the module docstring for the caps. Pure and exact (Decimal).

    Raises ValueError for inputs no caller should send (non-positive prices or step, a stop on
    the wrong side); an account that cannot afford the trade gives a rejected result instead.
    """
    if entry_price <= 0 or stop_price <= 0 or market.step_size <= 0:
        raise ValueError("entry_price, stop_price and step_size must be > 0")
    if (stop_price >= entry_price) if side is Side.BUY else (stop_price <= entry_price):
        raise ValueError(f"stop {stop_price} is on the wrong side of entry {entry_price} for a {side}")
    if intent_leverage < 1:
        raise ValueError(f"leverage must be >= 1, got {intent_leverage}")

    leverage = min(intent_leverage, policy.max_leverage, market.max_leverage or intent_leverage)
    with localcontext(_CTX):
        conf = Decimal(repr(confidence)) if isinstance(confidence, float) else Decimal(confidence)
        conf = max(Decimal(0), min(Decimal(1), conf))
        scale = policy.confidence_floor + (1 - policy.confidence_floor) * conf
        risk_budget = max(Decimal(0), equity) * policy.risk_per_trade * scale
        loss_per_unit = loss_per_contract(entry_price, stop_price, policy.fee_rate)
        intent_notional = intent_size_usd * leverage if policy.intent_size_is_margin else intent_size_usd
        caps: dict[str, Decimal] = {
            "risk": risk_budget / loss_per_unit,
            "intent_size": max(Decimal(0), intent_notional) / entry_price,
            "free_margin": max(Decimal(0), free_margin) * policy.margin_usage * leverage / entry_price,
        }
        if policy.max_notional_usd is not None:
            caps["max_notional"] = policy.max_notional_usd / entry_price
        if market.max_qty is not None:
            caps["max_qty"] = market.max_qty
        caps = {name: floor_to_step(qty, market.step_size) for name, qty in caps.items()}
        binding = min(caps, key=lambda name: (caps[name], CAP_ORDER.index(name)))
        quantity = caps[binding]
        notional = quantity * entry_price
        margin = notional / leverage
        loss_at_stop = quantity * loss_per_unit

    return SizingResult(
        quantity=quantity,
        notional=notional,
        margin=margin,
        leverage=leverage,
        risk_budget=risk_budget,
        loss_at_stop=loss_at_stop,
        binding_cap=binding,
        cap_quantities=caps,
        rejected_reason=_rejection(quantity, notional, binding, market),
    )


def loss_per_contract(entry_price: Decimal, stop_price: Decimal, fee_rate: Decimal) -> Decimal:
    """What one contract loses if the stop fills: the price distance plus the fee on each leg."""
    with localcontext(Context(prec=50)):
        return abs(entry_price - stop_price) + fee_rate * (entry_price + stop_price)


def floor_to_step(quantity: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of `step` not above `quantity` (0 for a non-positive quantity)."""
    if quantity <= 0:
        return Decimal(0) * step
    with localcontext(_CTX):
        return (quantity / step).to_integral_value(rounding=ROUND_FLOOR) * step


def _rejection(quantity: Decimal, notional: Decimal, binding: str, market: MarketRules) -> str | None:
    if quantity <= 0:
        return f"quantity rounds to 0 at step {market.step_size} (binding cap: {binding})"
    if quantity < market.min_qty:
        return (
            f"quantity {quantity} is below the market's minimum {market.min_qty} "
            f"(binding cap: {binding})"
        )
    if notional < market.min_notional:
        return (
            f"notional {notional.quantize(Decimal('0.01'))} USDT is below the market's minimum "
            f"{market.min_notional} USDT (binding cap: {binding})"
        )
    return None
