"""Adaptive stop-loss / take-profit levels, on the exchange's tick, always on the right side.

The old ExitBrain's idea, written as one pure function (`compute_adaptive_levels`):
higher leverage → tighter stop, higher volatility / ATR → wider stop, higher confidence →
larger take-profit targets, and fail-safe clamps (SL 0.1 %–2.0 % of price, TP ≥ 0.3 %).

Formulas (all distances are fractions of the entry price, computed in `Decimal`):

    base_sl   = atr_fraction × atr_sl_multiple            (default_sl_pct when no ATR)
    vol_scale = 1 + vol_weight × (min(volatility_factor, vol_cap) − vol_neutral)
    lev_scale = 1 / (1 + leverage_damping × ln(leverage))
    sl_pct    = clamp(min(base_sl × vol_scale × lev_scale, max_margin_loss / leverage),
                      min_sl_pct, max_sl_pct)
    tp_scale  = tp_scale_min + (tp_scale_max − tp_scale_min) × confidence
    tp_unit   = max(sl_pct × tp_scale, min_tp_pct / r₁)
    tpₖ_pct   = min(tp_unit × rₖ, max_tp_pct)                 (r = 1, 2, 3 R by default)

`max_margin_loss / leverage` keeps the stop well inside the liquidation distance (≈ 1/leverage):
by default a stop may cost at most half the margin.

Rounding to the tick: the stop is rounded *toward* the entry (the loss at the stop is never
larger than planned); take-profits are rounded *away* from the entry (a target never shrinks
below the fee-covering minimum). Then: the stop is strictly on the losing side of the entry,
each TP strictly beyond the entry and the previous TP, every price a tick multiple and > 0. When
the tick is so coarse that this is impossible (an entry a few ticks above zero) `LevelsError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

from trading.models import Side

if TYPE_CHECKING:
    from trading.intent import TradeIntent

_CTX = Context(prec=50)  # wide enough that price/tick and pct products are exact in practice
_PCT_GRID = Decimal("1e-10")  # planned distances are kept to 1e-10 (a millionth of a percent)


class LevelsError(ValueError):
    """No valid set of levels exists (bad input, or a tick too coarse for the price)."""


class LevelPolicy(BaseModel):
    """The knobs of `compute_adaptive_levels`. Defaults follow the old ExitBrain config."""

    model_config = ConfigDict(frozen=True)

    default_sl_pct: Decimal = Decimal("0.01")  # stop distance when the intent carries no ATR
    atr_sl_multiple: Decimal = Decimal("1")  # stop = 1 ATR (the seeds: ATR 0.02 with a 2 % stop)
    vol_neutral: Decimal = Decimal("0.5")  # volatility_factor that leaves the stop unchanged
    vol_weight: Decimal = Decimal("0.5")
    vol_cap: Decimal = Decimal("4")
    leverage_damping: Decimal = Decimal("0.25")
    max_margin_loss: Decimal = Decimal("0.5")  # a stop may cost at most this share of margin
    min_sl_pct: Decimal = Decimal("0.001")
    max_sl_pct: Decimal = Decimal("0.02")
    tp_r_multiples: tuple[Decimal, ...] = (Decimal("1"), Decimal("2"), Decimal("3"))
    tp_scale_min: Decimal = Decimal("0.75")  # at confidence 0
    tp_scale_max: Decimal = Decimal("1.5")  # at confidence 1
    min_tp_pct: Decimal = Decimal("0.003")
    max_tp_pct: Decimal = Decimal("0.5")
    harvest_fractions: tuple[Decimal, ...] = (Decimal("0.3"), Decimal("0.3"), Decimal("0.4"))
    trailing_callback_pct: Decimal = Decimal("0.008")

    @model_validator(mode="after")
    def _consistent(self) -> LevelPolicy:
        r, f = self.tp_r_multiples, self.harvest_fractions
        if not r or len(r) != len(f):
            raise ValueError("tp_r_multiples and harvest_fractions need the same, non-zero length")
        if any(x <= 0 for x in r) or any(b <= a for a, b in zip(r, r[1:], strict=False)):
            raise ValueError("tp_r_multiples must be positive and strictly increasing")
        if any(x <= 0 for x in f) or sum(f) != 1:
            raise ValueError("harvest_fractions must be positive and sum to 1")
        sl_ok = 0 < self.min_sl_pct <= self.max_sl_pct < 1
        if not sl_ok or not 0 < self.min_tp_pct <= self.max_tp_pct < 1:
            raise ValueError("clamps must satisfy 0 < min <= max < 1")
        if self.vol_weight * self.vol_neutral >= 1 or self.default_sl_pct <= 0:
            raise ValueError("volatility scale must stay positive and default_sl_pct > 0")
        if not 0 < self.trailing_callback_pct < 1:
            raise ValueError("trailing_callback_pct must be in (0, 1)")
        if not 0 < self.tp_scale_min <= self.tp_scale_max:
            raise ValueError("need 0 < tp_scale_min <= tp_scale_max")
        return self


DEFAULT_POLICY = LevelPolicy()


class LevelFactors(BaseModel):
    """How the distances came about, for the UI and the learning record."""

    model_config = ConfigDict(frozen=True)

    base_sl_pct: Decimal
    volatility_scale: Decimal
    leverage_scale: Decimal
    margin_cap_pct: Decimal
    unclamped_sl_pct: Decimal
    tp_scale: Decimal


class TakeProfit(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int  # 1-based: TP1, TP2, TP3
    price: Decimal
    fraction: Decimal  # share of the initial position to close here
    distance_pct: Decimal  # planned distance from the entry, before tick rounding


class Levels(BaseModel):
    """Stop, take-profits and trailing callback of one trade, anchored at `entry_price`."""

    model_config = ConfigDict(frozen=True)

    side: Side
    entry_price: Decimal
    tick_size: Decimal
    stop_loss: Decimal
    sl_distance_pct: Decimal  # planned, before tick rounding (what `rebase_levels` keeps)
    take_profits: tuple[TakeProfit, ...]
    trailing_callback_pct: Decimal
    factors: LevelFactors | None = None

    def take_profit(self, index: int) -> TakeProfit:
        return self.take_profits[index - 1]

    @property
    def actual_sl_distance_pct(self) -> Decimal:
        with localcontext(_CTX):
            return abs(self.entry_price - self.stop_loss) / self.entry_price


class MarketCrossing(BaseModel):
    """Which levels the market has already reached: an order there would trigger at once (-2021)."""

    model_config = ConfigDict(frozen=True)

    stop_crossed: bool
    take_profits_crossed: tuple[int, ...]  # 1-based indices

    @property
    def any(self) -> bool:
        return self.stop_crossed or bool(self.take_profits_crossed)


# --- the pure functions ----------------------------------------------------------------------


def compute_adaptive_levels(
    *,
    entry_price: Decimal,
    side: Side,
    leverage: int | Decimal,
    tick_size: Decimal,
    volatility_factor: float | Decimal | None = None,
    atr_value: float | Decimal | None = None,
    confidence: float | Decimal = 0.5,
    policy: LevelPolicy = DEFAULT_POLICY,
) -> Levels:
    """SL, TP1..TPn with harvest fractions and the trailing callback for a trade at `entry_price`.

    `atr_value` is read as the old producers write it (see `atr_fraction`). `volatility_factor`
    None means neutral; `confidence` is clamped into [0, 1]. See the module docstring for the
    formulas and the rounding rules.
    """
    entry, tick = _positive_price(entry_price, "entry_price"), _positive_price(tick_size, "tick_size")
    with localcontext(_CTX):
        lev = _finite(leverage, "leverage")
        if lev < 1:
            raise LevelsError(f"leverage must be >= 1, got {leverage}")
        atr = atr_fraction(atr_value, entry)
        base = atr * policy.atr_sl_multiple if atr is not None else policy.default_sl_pct
        vf = (
            policy.vol_neutral
            if volatility_factor is None
            else _clamp(_finite(volatility_factor, "volatility_factor"), 0, policy.vol_cap)
        )
        vol_scale = 1 + policy.vol_weight * (vf - policy.vol_neutral)
        lev_scale = 1 / (1 + policy.leverage_damping * lev.ln())
        margin_cap = policy.max_margin_loss / lev
        unclamped = min(base * vol_scale * lev_scale, margin_cap)
        sl_pct = _clamp(unclamped, policy.min_sl_pct, policy.max_sl_pct).quantize(_PCT_GRID)

        conf = _clamp(_finite(confidence, "confidence"), 0, 1)
        tp_scale = policy.tp_scale_min + (policy.tp_scale_max - policy.tp_scale_min) * conf
        r1 = policy.tp_r_multiples[0]
        unit = max(sl_pct * tp_scale, policy.min_tp_pct / r1).quantize(_PCT_GRID, rounding=ROUND_CEILING)
        tp_pcts = [min(unit * r, policy.max_tp_pct) for r in policy.tp_r_multiples]

        factors = LevelFactors(
            base_sl_pct=base.quantize(_PCT_GRID),
            volatility_scale=vol_scale.quantize(_PCT_GRID),
            leverage_scale=lev_scale.quantize(_PCT_GRID),
            margin_cap_pct=margin_cap.quantize(_PCT_GRID),
            unclamped_sl_pct=unclamped.quantize(_PCT_GRID),
            tp_scale=tp_scale.quantize(_PCT_GRID),
        )
    return _place(
        side=side,
        entry=entry,
        tick=tick,
        sl_pct=sl_pct,
        tp_pcts=tp_pcts,
        fractions=policy.harvest_fractions,
        callback=policy.trailing_callback_pct,
        factors=factors,
    )


def levels_for_intent(
    intent: TradeIntent,
    *,
    tick_size: Decimal,
    entry_price: Decimal | None = None,
    policy: LevelPolicy = DEFAULT_POLICY,
) -> Levels:
    """`compute_adaptive_levels` fed from a `TradeIntent`; `entry_price` overrides its price."""
    return compute_adaptive_levels(
        entry_price=entry_price if entry_price is not None else intent.entry_price,
        side=intent.side,
        leverage=intent.leverage,
        tick_size=tick_size,
        volatility_factor=intent.volatility_factor,
        atr_value=intent.atr_value,
        confidence=intent.confidence,
        policy=policy,
    )


def rebase_levels(levels: Levels, fill_price: Decimal, tick_size: Decimal | None = None) -> Levels:
    """The same planned distances, moved onto the real fill (never copy prices from an old quote)."""
    return _place(
        side=levels.side,
        entry=_positive_price(fill_price, "fill_price"),
        tick=_positive_price(tick_size if tick_size is not None else levels.tick_size, "tick_size"),
        sl_pct=levels.sl_distance_pct,
        tp_pcts=[tp.distance_pct for tp in levels.take_profits],
        fractions=[tp.fraction for tp in levels.take_profits],
        callback=levels.trailing_callback_pct,
        factors=levels.factors,
    )


def classify_against_market(levels: Levels, side: Side, current_price: Decimal) -> MarketCrossing:
    """Which levels `current_price` has reached: act on those at market instead of placing them."""
    if side is not levels.side:
        raise LevelsError(f"levels are for a {levels.side}, not a {side}")
    return MarketCrossing(
        stop_crossed=stop_would_trigger(side, levels.stop_loss, current_price),
        take_profits_crossed=tuple(
            tp.index for tp in levels.take_profits if take_would_trigger(side, tp.price, current_price)
        ),
    )


def stop_would_trigger(side: Side, stop_price: Decimal, price: Decimal) -> bool:
    """A stop that closes a `side` position triggers at or beyond it (equality included: -2021)."""
    return price <= stop_price if side is Side.BUY else price >= stop_price


def take_would_trigger(side: Side, take_price: Decimal, price: Decimal) -> bool:
    return price >= take_price if side is Side.BUY else price <= take_price


def validate_manual_levels(
    side: Side,
    reference_price: Decimal,
    stop_loss: Decimal | None = None,
    take_profits: Sequence[Decimal] = (),
    liquidation_price: Decimal | None = None,
) -> list[str]:
    """Problems with levels an operator asked for (empty list: acceptable).

    `reference_price` is the current price of an open trade (or the entry before one opens).
    Refused: non-positive or non-finite prices, a stop or take-profit on the wrong side, take-
    profits out of order, and a stop at or beyond the liquidation price (it would never fire).
    """
    problems: list[str] = []
    below, above = ("below", "above") if side is Side.BUY else ("above", "below")

    def beyond(price: Decimal, where: str, than: Decimal) -> bool:
        return price < than if where == "below" else price > than

    if not _finite_positive(reference_price):
        return [f"reference price must be a finite number > 0, got {reference_price}"]
    if stop_loss is not None:
        if not _finite_positive(stop_loss):
            problems.append(f"stop_loss must be a finite number > 0, got {stop_loss}")
        elif not beyond(stop_loss, below, reference_price):
            problems.append(
                f"stop_loss {stop_loss} must be {below} the current price {reference_price} for a {side}"
            )
        elif liquidation_price is not None and _finite_positive(liquidation_price) and not beyond(
            liquidation_price, below, stop_loss
        ):
            problems.append(
                f"stop_loss {stop_loss} is at or beyond the liquidation price {liquidation_price}: "
                "liquidation would come first"
            )
    previous: Decimal | None = None
    for number, price in enumerate(take_profits, start=1):
        if not _finite_positive(price):
            problems.append(f"take_profit {number} must be a finite number > 0, got {price}")
            continue
        if not beyond(price, above, reference_price):
            problems.append(
                f"take_profit {number} ({price}) must be {above} the current price {reference_price} for a {side}"
            )
        elif previous is not None and not beyond(price, above, previous):
            problems.append(
                f"take_profit {number} ({price}) must be further {above} than take_profit {number - 1} ({previous})"
            )
        previous = price
    return problems


def atr_fraction(atr_value: float | Decimal | None, entry_price: Decimal) -> Decimal | None:
    """ATR as a fraction of price. The old producers write it so (NEAR: `atr_value` 0.02 with a
    2 % stop); a value >= 1 cannot be a fraction of price and is read as price units instead."""
    if atr_value is None:
        return None
    with localcontext(_CTX):
        atr = _dec(atr_value)
        if not atr.is_finite() or atr <= 0:
            return None
        return atr if atr < 1 else atr / entry_price


# --- tick arithmetic -----------------------------------------------------------------------


def round_to_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    """`price` on the tick grid, rounded with ROUND_FLOOR or ROUND_CEILING (never "nearest")."""
    with localcontext(_CTX) as ctx:
        ctx.rounding = rounding  # the division errs the same way, so floor stays <= and ceil >=
        return (price / tick).to_integral_value(rounding=rounding) * tick


def tick_below(price: Decimal, tick: Decimal) -> Decimal:
    """The largest tick multiple strictly below `price` (may be <= 0: the caller checks)."""
    with localcontext(_CTX) as ctx:
        ctx.rounding = ROUND_CEILING
        return ((price / tick).to_integral_value(rounding=ROUND_CEILING) - 1) * tick


def tick_above(price: Decimal, tick: Decimal) -> Decimal:
    """The smallest tick multiple strictly above `price`."""
    with localcontext(_CTX) as ctx:
        ctx.rounding = ROUND_FLOOR
        return ((price / tick).to_integral_value(rounding=ROUND_FLOOR) + 1) * tick


def is_tick_multiple(price: Decimal, tick: Decimal) -> bool:
    with localcontext(_CTX):
        steps = price / tick
        return steps == steps.to_integral_value()


# --- internals -----------------------------------------------------------------------------


def _place(
    *,
    side: Side,
    entry: Decimal,
    tick: Decimal,
    sl_pct: Decimal,
    tp_pcts: Sequence[Decimal],
    fractions: Sequence[Decimal],
    callback: Decimal,
    factors: LevelFactors | None,
) -> Levels:
    """Turn planned distances into tick prices (rounding rules: see the module docstring)."""
    sign = side.sign
    with localcontext(_CTX):
        raw_stop = entry * (1 - sign * sl_pct)
        if side is Side.BUY:
            stop = round_to_tick(raw_stop, tick, ROUND_CEILING)  # toward the entry
            stop = stop if stop < entry else tick_below(entry, tick)
        else:
            stop = round_to_tick(raw_stop, tick, ROUND_FLOOR)
            stop = stop if stop > entry else tick_above(entry, tick)
        if stop <= 0:
            raise LevelsError(f"no stop price fits between 0 and entry {entry} on tick {tick}")

        take_profits: list[TakeProfit] = []
        previous = entry
        for index, (pct, fraction) in enumerate(zip(tp_pcts, fractions, strict=True), start=1):
            raw = entry * (1 + sign * pct)
            if side is Side.BUY:  # away from the entry, and strictly beyond the previous level
                price = max(round_to_tick(raw, tick, ROUND_CEILING), tick_above(previous, tick))
            else:
                price = min(round_to_tick(raw, tick, ROUND_FLOOR), tick_below(previous, tick))
            if price <= 0:
                raise LevelsError(
                    f"take-profit {index} does not fit above 0 for entry {entry} on tick {tick}"
                )
            take_profits.append(
                TakeProfit(index=index, price=price, fraction=fraction, distance_pct=pct)
            )
            previous = price
    return Levels(
        side=side,
        entry_price=entry,
        tick_size=tick,
        stop_loss=stop,
        sl_distance_pct=sl_pct,
        take_profits=tuple(take_profits),
        trailing_callback_pct=callback,
        factors=factors,
    )


def _dec(value: float | int | Decimal) -> Decimal:
    """Exact Decimal; a float goes through its shortest repr (0.72, not 0.7199999999999999733...)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _clamp(value: Decimal, low: Decimal | int, high: Decimal | int) -> Decimal:
    return max(Decimal(low), min(Decimal(high), value))


def _finite_positive(value: Decimal) -> bool:
    try:
        number = _dec(value)
    except (TypeError, ValueError, ArithmeticError):
        return False
    return number.is_finite() and number > 0


def _finite(value: float | int | Decimal, name: str) -> Decimal:
    number = _dec(value)
    if not number.is_finite():
        raise LevelsError(f"{name} must be a finite number, got {value}")
    return number


def _positive_price(value: Decimal, name: str) -> Decimal:
    if not _finite_positive(value):
        raise LevelsError(f"{name} must be a finite number > 0, got {value}")
    return _dec(value)
