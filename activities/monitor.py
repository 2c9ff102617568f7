"""`watch_position`: a long, heartbeating activity on the `trade-monitor` queue that returns to the
TradeWorkflow only when something needs a decision.

It holds no connection of its own: it subscribes to the process-wide `PriceHub` and sleeps on its
watch's event, which the hub sets only when the price leaves the band between the levels, market
time reaches the holding limit, a candle closes, or the position size changed. Crossing rules
come from `trading/` (the same comparisons the workflow's `decide_exit` uses).

Checks within one wake-up, pessimistic where the true order is unknown (as `decide_exit`):
exchange fill (the exchange is the truth), the stop in force since the previous wake-up
(initial or trailing), take-profits, the trailing ratchet (its new stop applies from the next
wake-up, unless the last price is already through it), time limit, candle close, trailing
advance.

- Candle close with a `KillWatch`: the kill score (`trading.exits.kill_score`) of the features
  now (the hub computes them once per symbol and candle) against the entry's; the activity
  returns only when it says close, so a quiet position costs the workflow no history. Without
  one, `want_candles` returns every close.
- Trailing advance (`TrailingSpec.min_step`): the trailing stop is at least `min_step` beyond
  the resting stop (`WatchRequest.stop_price`) and the last price is not through it: the
  workflow re-places the exchange stop there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from temporalio import activity

from activities.price_hub import PriceHub, Snapshot, Watch
from trading.features import CANDLE_MS, MarketFeatures
from activities.schemas.monitor import (  # noqa: F401 (re-exported)
    Candle, CrossedLevel, KillWatch, TrailingSpec, WatchEvent, WatchKind, WatchRequest,
)
from trading.exits import KillScore, better_price, kill_score, trail_stop
from trading.levels import stop_would_trigger, take_would_trigger, tick_above, tick_below
from trading.models import Side

__all__ = ["Candle", "CrossedLevel", "KillWatch", "MonitorActivities", "TrailingSpec", "WatchEvent", "WatchKind",
           "WatchRequest"]

log = logging.getLogger(__name__)

# --- the activity's argument and result (one pydantic model each, so fields can be added
# without breaking running workflows) ---------------------------------------------------------


# --- the activity ----------------------------------------------------------------------------


class _Trail:
    """Trailing state of one session; `extreme` survives retries through heartbeat details."""

    def __init__(self, spec: TrailingSpec | None, side: Side, tick: Decimal | None, resumed: Decimal | None):
        self.spec, self.side, self.tick = spec, side, tick
        extreme = spec.extreme if spec else None
        if resumed is not None:
            extreme = resumed if extreme is None else better_price(side, extreme, resumed)
        self.extreme = extreme

    @property
    def active(self) -> bool:
        return self.spec is not None and (self.spec.activation_price is None or self.extreme is not None)

    def stop(self, base_stop: Decimal) -> Decimal | None:
        """The trailing stop (never looser than `base_stop`), or None while not trailing."""
        if not self.active or self.extreme is None:
            return None
        return trail_stop(self.side, self.extreme, self.spec.callback_pct, base_stop, self.tick)

    def observe(self, best: Decimal) -> bool:
        """Ratchet with the best price of the interval; True if the extreme moved."""
        if self.spec is None:
            return False
        if not self.active:
            if not take_would_trigger(self.side, self.spec.activation_price, best):
                return False
            self.extreme = best
            return True
        new = best if self.extreme is None else better_price(self.side, self.extreme, best)
        moved, self.extreme = new != self.extreme, new
        return moved

    def advanced(self, base_stop: Decimal) -> Decimal | None:
        """The trailing stop when it is at least `min_step` beyond `base_stop` in the trade's
        favour (worth re-placing the exchange stop), else None."""
        stop = self.stop(base_stop)
        if stop is None or self.spec.min_step is None:
            return None
        gain = stop - base_stop if self.side is Side.BUY else base_stop - stop
        return stop if gain >= self.spec.min_step else None

    def details(self) -> dict:
        return {"extreme": None if self.extreme is None else str(self.extreme)}


def _resumed_extreme() -> Decimal | None:
    """The extreme the previous attempt of this activity heartbeated (worker crash → retry)."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    first = details[0]
    value = first.get("extreme") if isinstance(first, dict) else first
    return Decimal(str(value)) if value is not None else None


class MonitorActivities:
    def __init__(self, hub: PriceHub) -> None:
        self.hub = hub

    @activity.defn(name="watch_position")
    async def watch_position(self, req: WatchRequest) -> WatchEvent:
        tick = await self.hub.tick_size(req.symbol) if req.trailing else None
        trail = _Trail(req.trailing, req.side, tick, _resumed_extreme())
        watch = await self.hub.subscribe(
            req.symbol,
            want_candles=req.want_candles,
            candles_after_ms=req.candles_after_ms,
            want_position=req.position_qty is not None,
            kill_window=req.kill.window if req.kill else None,
        )
        try:
            return await self._run(req, watch, trail)
        finally:
            # Also on cancellation (operator update: the workflow restarts us with new levels):
            # the last watcher leaving stops the symbol's poll task.
            self.hub.unsubscribe(watch)

    async def _run(self, req: WatchRequest, watch: Watch, trail: _Trail) -> WatchEvent:
        deadline = time.monotonic() + req.session_cap_s
        next_heartbeat = 0.0  # heartbeat at once: the retry details exist from the start
        _arm(watch, req, trail)
        while True:
            now = time.monotonic()
            if now >= next_heartbeat:
                activity.heartbeat(trail.details())
                next_heartbeat = now + req.heartbeat_interval_s
            if watch.event.is_set():
                watch.event.clear()
                event, extreme_moved = _evaluate(req, watch, trail, self.hub)
                if event is not None:
                    activity.heartbeat(trail.details())
                    log.info("watch_position returns %s", event.kind,
                             extra={"workflow_id": req.workflow_id, "symbol": req.symbol})
                    return event
                if extreme_moved:
                    activity.heartbeat(trail.details())  # the SDK throttles; the last one wins
                _arm(watch, req, trail)
            if now >= deadline:
                snap = watch.take() if watch.has_price else None
                return _event(WatchKind.SESSION_CAP, snap, trail, req)
            try:
                async with asyncio.timeout(min(deadline, next_heartbeat) - now):
                    await watch.event.wait()
            except TimeoutError:
                pass


def _arm(watch: Watch, req: WatchRequest, trail: _Trail) -> None:
    """Tell the hub when to wake us: outside the band between the levels, or at the time limit."""
    stop = trail.stop(req.stop_price) or req.stop_price
    far: list[Decimal] = list(req.take_profit_prices)
    if trail.spec is not None:
        if not trail.active:
            far.append(trail.spec.activation_price)
        elif trail.extreme is not None:  # a new extreme moves the trailing stop
            far.append(tick_above(trail.extreme, trail.tick) if req.side is Side.BUY
                       else tick_below(trail.extreme, trail.tick))
        else:  # active from the start: the first price seen becomes the extreme
            far.append(Decimal(0) if req.side is Side.BUY else Decimal("Infinity"))
    if req.side is Side.BUY:
        watch.wake_low, watch.wake_high = stop, min(far) if far else None
    else:
        watch.wake_high, watch.wake_low = stop, max(far) if far else None
    watch.wake_at_ms = req.opened_at_ms + req.max_holding_ms if req.max_holding_ms else None
    watch.rearm()
    if watch.has_price and trail.advanced(req.stop_price) is not None:
        # Already worth re-placing (an extreme carried over from the previous session): decide
        # at once. Never a busy loop: with a price, an evaluation then returns (advance or cross).
        watch.event.set()


def _evaluate(req: WatchRequest, watch: Watch, trail: _Trail, hub: PriceHub) -> tuple[WatchEvent | None, bool]:
    side = req.side
    if req.position_qty is not None and watch.position_seq and watch.position_qty != req.position_qty:
        snap = watch.take() if watch.has_price else None
        return _event(WatchKind.EXCHANGE_FILL, snap, trail, req, exchange_position_qty=watch.position_qty), False
    if not watch.has_price:
        return None, False
    snap = watch.take()
    worst, best = (snap.low, snap.high) if side is Side.BUY else (snap.high, snap.low)

    trailing_stop = trail.stop(req.stop_price)
    if trailing_stop is not None and trailing_stop != req.stop_price and stop_would_trigger(side, trailing_stop, worst):
        return _crossed(CrossedLevel.TRAILING, trailing_stop, snap, trail, req), False
    if stop_would_trigger(side, req.stop_price, worst):
        return _crossed(CrossedLevel.STOP, req.stop_price, snap, trail, req), False

    hit = [i for i, tp in enumerate(req.take_profit_prices, 1) if take_would_trigger(side, tp, best)]
    if hit:
        price = req.take_profit_prices[hit[-1] - 1]
        return _crossed(CrossedLevel.TAKE_PROFIT, price, snap, trail, req, take_profit_index=hit[-1]), False

    moved = trail.observe(best)
    new_stop = trail.stop(req.stop_price)
    if moved and new_stop is not None and new_stop != req.stop_price and stop_would_trigger(side, new_stop, snap.price):
        # The price already fell back through the ratcheted stop within this interval.
        return _crossed(CrossedLevel.TRAILING, new_stop, snap, trail, req), moved

    if req.max_holding_ms and snap.market_ms >= req.opened_at_ms + req.max_holding_ms:
        return _event(WatchKind.TIME_LIMIT, snap, trail, req), moved

    while watch.candles:
        candle = watch.candles.popleft()
        if req.kill is None:
            return _event(WatchKind.CANDLE_CLOSED, snap, trail, req, candle=candle), moved
        now = hub.features_at(watch.symbol, candle.open_ms, req.kill.window)
        verdict = _kill_verdict(req, req.kill, candle, now)
        if verdict is not None:
            features, score = verdict
            return _event(WatchKind.CANDLE_CLOSED, snap, trail, req, candle=candle, features=features,
                          kill_score=score), moved

    advanced = trail.advanced(req.stop_price)
    if advanced is not None and not stop_would_trigger(side, advanced, snap.price):
        return _event(WatchKind.TRAIL_ADVANCED, snap, trail, req), moved
    return None, moved


def _kill_verdict(
    req: WatchRequest, kill: KillWatch, candle: Candle, now: MarketFeatures | None
) -> tuple[MarketFeatures, KillScore] | None:
    """The features now (at `candle`) and the kill score against the entry's, when the score
    says close; None otherwise (also without features: missing data never closes a trade)."""
    if now is None:
        return None
    entry = kill.entry
    score = kill_score(
        regime_at_entry=entry.regime, regime_now=now.regime,
        sigma_at_entry=entry.sigma, sigma_now=now.sigma,
        trend_at_entry=entry.trend_strength, trend_now=now.trend_strength,
        age_s=(candle.open_ms + CANDLE_MS - req.opened_at_ms) / 1000,  # market time at the close
        age_horizon_s=kill.age_horizon_s, weights=kill.weights, threshold=kill.threshold,
    )
    return (now, score) if score.should_close else None


def _crossed(
    level: CrossedLevel, price: Decimal, snap: Snapshot, trail: _Trail, req: WatchRequest, **extra
) -> WatchEvent:
    return _event(WatchKind.LEVEL_CROSSED, snap, trail, req, level=level, level_price=price, **extra)


def _event(kind: WatchKind, snap: Snapshot | None, trail: _Trail, req: WatchRequest, **extra) -> WatchEvent:
    return WatchEvent(
        **extra,
        kind=kind,
        price=snap.price if snap else None,
        high=snap.high if snap else None,
        low=snap.low if snap else None,
        market_ms=snap.market_ms if snap else None,
        trailing_active=trail.active,
        trailing_extreme=trail.extreme,
        trailing_stop=trail.stop(req.stop_price),
    )
