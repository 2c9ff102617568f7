"""Exit rules of an open trade: kill score, trailing stop, break-even, and the exit decision.

`decide_exit` is a small state machine driven with price events (the last price plus the
high/low since the previous check, all on the market clock). It returns what must happen next
and the state *after* doing it. It is the ONE exit decider: the monitor activity
(`activities/monitor.py`) calls it on every wake-up and returns its decision, and the
TradeWorkflow performs the action and keeps `decision.state` without deciding again. A candle
close goes through `decide_kill` the same way. `wake_band` tells the monitor when a price can
matter at all (outside the band), so it need not call the decider on every poll. Same inputs,
same answer: safe for Temporal replay.

Order of checks within one event, chosen to be pessimistic where the true order is unknown:
1. the stop in force since the previous event (a bar that touched both the stop and a TP is
   counted as stopped out); 2. take-profits (several at once are harvested together);
3. the time limit; 4. the trailing ratchet (the new stop applies from the next event on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from trading.levels import (
    Levels,
    round_to_tick,
    stop_would_trigger,
    take_would_trigger,
    tick_above,
    tick_below,
)
from trading.models import ExitReason, Side

_CTX = Context(prec=50)

# --- kill score ------------------------------------------------------------------------------


class KillScoreWeights(BaseModel):
    """Weights of the old ExitBrain's kill score. These defaults reproduce its logged sample
    (regime flip 1.0, trend drop 0.2416, age 0.0417 → 0.7120) to within 2e-5: a regime flip
    alone (0.66) does not close a trade, a flip plus a weakening trend does."""

    model_config = ConfigDict(frozen=True)

    regime_flip: float = 0.66
    sigma_spike: float = 0.10
    trend_drop: float = 0.21
    age_penalty: float = 0.03


DEFAULT_KILL_WEIGHTS = KillScoreWeights()
KILL_THRESHOLD = 0.7


class KillScore(BaseModel):
    """Components (each in [0, 1]), their weighted sum, and the verdict. Shown in the UI."""

    model_config = ConfigDict(frozen=True)

    regime_flip: float
    sigma_spike: float
    trend_drop: float
    age_penalty: float
    score: float
    threshold: float
    should_close: bool


def kill_score(
    *,
    regime_at_entry: str | None,
    regime_now: str | None,
    sigma_at_entry: float | None,
    sigma_now: float | None,
    trend_at_entry: float | None,
    trend_now: float | None,
    age_s: float,
    age_horizon_s: float = 86_400.0,
    spike_ratio: float = 2.0,
    weights: KillScoreWeights = DEFAULT_KILL_WEIGHTS,
    threshold: float = KILL_THRESHOLD,
) -> KillScore:
    """The old ExitBrain's early-exit score, computed on a candle close.

    - regime_flip: 1 when both regimes are known and differ (unknown never counts as a flip);
    - sigma_spike: volatility growth, 0 at no growth, 1 at `spike_ratio` × the entry's;
    - trend_drop: relative loss of trend strength since entry (0 = as strong, 1 = gone);
    - age_penalty: age / age_horizon (the old sample: 1 h of 24 h = 0.0417).
    Missing or non-finite data gives 0 for that component: a gap in the data never closes a trade.
    """
    flip = 0.0
    if _known(regime_at_entry) and _known(regime_now) and not _same_text(regime_at_entry, regime_now):
        flip = 1.0
    spike = 0.0
    if _positive(sigma_at_entry) and _finite(sigma_now) and spike_ratio > 1:
        spike = _unit((sigma_now / sigma_at_entry - 1) / (spike_ratio - 1))
    drop = 0.0
    if _positive(trend_at_entry) and _finite(trend_now):
        drop = _unit((trend_at_entry - trend_now) / trend_at_entry)
    age = _unit(age_s / age_horizon_s) if age_horizon_s > 0 else 0.0
    score = (
        weights.regime_flip * flip
        + weights.sigma_spike * spike
        + weights.trend_drop * drop
        + weights.age_penalty * age
    )
    return KillScore(
        regime_flip=flip,
        sigma_spike=spike,
        trend_drop=drop,
        age_penalty=age,
        score=score,
        threshold=threshold,
        should_close=score >= threshold,
    )


# --- stop movements --------------------------------------------------------------------------


def tighter_stop(side: Side, a: Decimal, b: Decimal) -> Decimal:
    """The stop that locks in more for `side`: the higher one for a long, the lower for a short."""
    return max(a, b) if side is Side.BUY else min(a, b)


def better_price(side: Side, a: Decimal, b: Decimal) -> Decimal:
    """The price more in the trade's favour (the same comparison as `tighter_stop`)."""
    return max(a, b) if side is Side.BUY else min(a, b)


def trail_stop(
    side: Side,
    extreme: Decimal,
    callback_pct: Decimal,
    current_stop: Decimal,
    tick_size: Decimal,
) -> Decimal:
    """The trailing stop for the best price since activation (`extreme`); only ever tightens.

    The candidate `extreme × (1 ∓ callback)` is rounded toward the market (locks in more), kept
    strictly on the losing side of `extreme` and above 0; the result is the tighter of it and
    `current_stop`, so the stop never moves against the trade.
    """
    with localcontext(_CTX):
        if side is Side.BUY:
            candidate = round_to_tick(extreme * (1 - callback_pct), tick_size, ROUND_CEILING)
            if candidate >= extreme:
                candidate = tick_below(extreme, tick_size)
            if candidate <= 0:
                return current_stop
        else:
            candidate = round_to_tick(extreme * (1 + callback_pct), tick_size, ROUND_FLOOR)
            if candidate <= extreme:
                candidate = tick_above(extreme, tick_size)
    return tighter_stop(side, current_stop, candidate)


def break_even_stop(
    side: Side, entry_price: Decimal, tick_size: Decimal, buffer_pct: Decimal
) -> Decimal:
    """Entry moved by `buffer_pct` in the trade's favour (covers fees), rounded further in favour,
    so a stop-out at break-even never loses money after fees."""
    with localcontext(_CTX):
        if side is Side.BUY:
            return round_to_tick(entry_price * (1 + buffer_pct), tick_size, ROUND_CEILING)
        stop = round_to_tick(entry_price * (1 - buffer_pct), tick_size, ROUND_FLOOR)
        return stop if stop > 0 else tick_below(entry_price, tick_size)


# --- the exit decision -----------------------------------------------------------------------


class StopKind(StrEnum):
    INITIAL = "INITIAL"
    BREAK_EVEN = "BREAK_EVEN"
    TRAILING = "TRAILING"


class ExitAction(StrEnum):
    NONE = "NONE"
    TAKE_PROFIT = "TAKE_PROFIT"  # partial close of `close_fraction` of the initial position
    MOVE_STOP = "MOVE_STOP"  # replace the resting stop (place new, then cancel old)
    CLOSE_ALL = "CLOSE_ALL"  # close whatever remains; `reason` says why


class ExitPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    break_even_after_tp: int = 1  # stop to break-even once this many TPs are harvested
    trailing_after_tp: int = 1  # trailing from then on (SPEC: "trailing after that")
    break_even_buffer_pct: Decimal = Decimal("0.001")  # ≈ two taker fees
    trail_min_step_pct: Decimal = Decimal("0.001")  # move the resting stop only by ≥ this much
    max_hold_s: float | None = 72 * 3600.0


DEFAULT_EXIT_POLICY = ExitPolicy()


class PriceMove(BaseModel):
    """The market since the previous check: last price, high and low, at market time `at`."""

    model_config = ConfigDict(frozen=True)

    price: Decimal
    high: Decimal
    low: Decimal
    at: datetime

    @classmethod
    def at_price(cls, price: Decimal, at: datetime) -> PriceMove:
        return cls(price=price, high=price, low=price, at=at)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> PriceMove:
        if not 0 < self.low <= self.price <= self.high:
            raise ValueError(f"need 0 < low <= price <= high, got {self.low}, {self.price}, {self.high}")
        return self


class ExitState(BaseModel):
    """What the exit rules remember between events (carried across continue-as-new)."""

    model_config = ConfigDict(frozen=True)

    levels: Levels  # anchored at the real fill (see `rebase_levels`)
    stop: Decimal  # the stop in force now
    stop_kind: StopKind = StopKind.INITIAL
    tps_done: int = 0
    extreme: Decimal | None = None  # best price since trailing became active
    opened_at: datetime
    closed: bool = False

    @field_validator("opened_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @classmethod
    def start(cls, levels: Levels, opened_at: datetime) -> ExitState:
        return cls(levels=levels, stop=levels.stop_loss, opened_at=opened_at)

    @property
    def remaining_fraction(self) -> Decimal:
        return 1 - sum((tp.fraction for tp in self.levels.take_profits[: self.tps_done]), Decimal(0))


class ExitDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: ExitAction
    reason: ExitReason | None = None  # set for CLOSE_ALL
    take_profits: tuple[int, ...] = ()  # TP indices harvested by this action
    close_fraction: Decimal = Decimal(0)  # of the initial position
    trigger_price: Decimal | None = None  # the level that fired (the last price for TIME_LIMIT)
    # When the resting stop must move. After a TAKE_PROFIT the new stop may already be crossed
    # by the last price: check `stop_would_trigger` before placing it and close at market if so.
    new_stop: Decimal | None = None
    state: ExitState  # adopt this after performing the action
    note: str = ""


def decide_exit(
    state: ExitState, move: PriceMove, policy: ExitPolicy = DEFAULT_EXIT_POLICY
) -> ExitDecision:
    """What must happen after `move` (see the module docstring for the order of checks)."""
    if state.closed:
        return ExitDecision(action=ExitAction.NONE, state=state, note="already closed")
    levels, side = state.levels, state.levels.side
    worst, best = (move.low, move.high) if side is Side.BUY else (move.high, move.low)

    if stop_would_trigger(side, state.stop, worst):
        reason = ExitReason.TRAILING if state.stop_kind is StopKind.TRAILING else ExitReason.SL
        return _close(state, reason, state.stop, f"{state.stop_kind.lower()} stop {state.stop} reached")

    pending = levels.take_profits[state.tps_done :]
    hit = tuple(tp for tp in pending if take_would_trigger(side, tp.price, best))
    if hit:
        indices = tuple(tp.index for tp in hit)
        if hit[-1].index == len(levels.take_profits):
            last = hit[-1]
            decision = _close(state, ExitReason.TP, last.price, f"TP{last.index} {last.price} reached")
            return decision.model_copy(update={"take_profits": indices})
        after = _after_take_profit(state, hit[-1].index, best, policy)
        return ExitDecision(
            action=ExitAction.TAKE_PROFIT,
            take_profits=indices,
            close_fraction=sum((tp.fraction for tp in hit), Decimal(0)),
            trigger_price=hit[-1].price,
            new_stop=after.stop if after.stop != state.stop else None,
            state=after,
            note=f"TP{'+'.join(map(str, indices))} reached; {after.stop_kind.lower()} stop at {after.stop}",
        )

    held_s = (move.at - state.opened_at).total_seconds()
    if policy.max_hold_s is not None and held_s >= policy.max_hold_s:
        note = f"held {held_s:.0f} s, limit {policy.max_hold_s:.0f} s"
        return _close(state, ExitReason.TIME_LIMIT, move.price, note)

    if state.tps_done >= policy.trailing_after_tp:
        extreme = best if state.extreme is None else better_price(side, state.extreme, best)
        candidate = trail_stop(side, extreme, levels.trailing_callback_pct, state.stop, levels.tick_size)
        with localcontext(_CTX):
            improvement = abs(candidate - state.stop)
            worth_it = improvement > 0 and improvement >= policy.trail_min_step_pct * levels.entry_price
        after = state.model_copy(update={"extreme": extreme, "stop": candidate, "stop_kind": StopKind.TRAILING})
        if worth_it and stop_would_trigger(side, candidate, move.price):
            # The market already fell back through the new stop: placing it would be refused
            # (-2021 would trigger immediately), so the trailing exit happens at market now.
            note = f"price {move.price} is through the new trailing stop {candidate}"
            return _close(after, ExitReason.TRAILING, move.price, note)
        if worth_it:
            note = f"trailing stop to {candidate}"
            return ExitDecision(action=ExitAction.MOVE_STOP, new_stop=candidate, state=after, note=note)
        return ExitDecision(action=ExitAction.NONE, state=state.model_copy(update={"extreme": extreme}))
    return ExitDecision(action=ExitAction.NONE, state=state)


def decide_kill(state: ExitState, score: KillScore, price: Decimal) -> ExitDecision:
    """The kill score of a candle close (`kill_score`): close everything at market when it says
    so, otherwise nothing (the state is unchanged: the score has no memory)."""
    if state.closed or not score.should_close:
        return ExitDecision(action=ExitAction.NONE, state=state)
    return _close(state, ExitReason.KILL_SCORE, price, f"kill score {score.score:.3f} >= {score.threshold:g}")


@dataclass(frozen=True)
class WakeBand:
    """Where `decide_exit` can act: a price at or below `low`, at or above `high` (either may be
    infinite: any price), or market time at or after `at` (None: never on that side). Strictly
    inside it, `decide_exit` returns NONE with the state unchanged, so a watcher calls it only
    when the band is left (and once at its start: see `activities/monitor.py`)."""

    low: Decimal | None = None
    high: Decimal | None = None
    at: datetime | None = None


def wake_band(state: ExitState, policy: ExitPolicy = DEFAULT_EXIT_POLICY) -> WakeBand:
    """The band for `state` (exchange prices are multiples of the tick size, so "beyond the
    trailing extreme" is one tick beyond it). Mirrors `decide_exit`'s checks: the stop in force,
    the next pending take-profit, the trailing extreme (every new extreme may move the stop) and
    the holding limit; a property test holds the two together."""
    if state.closed:
        return WakeBand()
    levels, side = state.levels, state.levels.side
    near, far = state.stop, None  # near: the losing side; far: the winning side
    pending = levels.take_profits[state.tps_done:]
    if pending:
        far = pending[0].price
    if state.tps_done >= policy.trailing_after_tp:
        if state.extreme is None:  # trailing from the first price seen: any price matters
            beyond = Decimal(0) if side is Side.BUY else Decimal("Infinity")
        elif side is Side.BUY:
            beyond = tick_above(state.extreme, levels.tick_size)
        else:
            beyond = tick_below(state.extreme, levels.tick_size)
        far = beyond if far is None else (min(far, beyond) if side is Side.BUY else max(far, beyond))
    at = None
    if policy.max_hold_s is not None:
        at = state.opened_at + timedelta(seconds=policy.max_hold_s)
    if side is Side.BUY:
        return WakeBand(low=near, high=far, at=at)
    return WakeBand(low=far, high=near, at=at)


def _after_take_profit(state: ExitState, done: int, best: Decimal, policy: ExitPolicy) -> ExitState:
    levels, side = state.levels, state.levels.side
    stop, kind, extreme = state.stop, state.stop_kind, state.extreme
    if done >= policy.break_even_after_tp:
        be = break_even_stop(side, levels.entry_price, levels.tick_size, policy.break_even_buffer_pct)
        if tighter_stop(side, be, stop) != stop:
            stop, kind = be, StopKind.BREAK_EVEN
    if done >= policy.trailing_after_tp:
        extreme = best if extreme is None else better_price(side, extreme, best)
        trailed = trail_stop(side, extreme, levels.trailing_callback_pct, stop, levels.tick_size)
        if trailed != stop:
            stop, kind = trailed, StopKind.TRAILING
    update = {"tps_done": done, "stop": stop, "stop_kind": kind, "extreme": extreme}
    return state.model_copy(update=update)


def _close(state: ExitState, reason: ExitReason, trigger: Decimal, note: str) -> ExitDecision:
    return ExitDecision(
        action=ExitAction.CLOSE_ALL,
        reason=reason,
        close_fraction=state.remaining_fraction,
        trigger_price=trigger,
        state=state.model_copy(update={"closed": True}),
        note=note,
    )


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _known(regime: str | None) -> bool:
    return bool(regime) and regime.strip().lower() not in ("unknown", "none", "null")


def _same_text(a: str | None, b: str | None) -> bool:
    return (a or "").strip().lower() == (b or "").strip().lower()


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _positive(x: float | None) -> bool:
    return _finite(x) and x > 0


def _unit(x: float) -> float:
    return min(1.0, max(0.0, x)) if math.isfinite(x) else 0.0
