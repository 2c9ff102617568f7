"""`watch_position`: a long, heartbeating activity on the `trade-monitor` queue that returns to the
TradeWorkflow only with a decision to act on.

It decides with the one exit decider, `trading/exits.py`: on every wake-up it calls
`decide_exit` with the market since the previous one (and `decide_kill` on a candle close) and
returns the first decision that is not NONE, with the state it was taken on. The workflow acts
on it without deciding again. A NONE decision may still move the state (a new trailing extreme
not yet worth a stop move): the session keeps it, heartbeats it (a retried attempt resumes from
it) and returns it with its result.

A session also publishes the position record the workflow hands it (`WatchRequest.publish`:
the old system's position hash and new fills) as it starts, so a position change costs the
history no activity of its own.

It holds no exchange connection of its own: it subscribes to the process-wide `PriceHub` and sleeps on its
watch's event, which the hub sets only when the price leaves `wake_band` (where the decider can
act), market time reaches the holding limit, a candle closes, or the position size changed.

Checks within one wake-up: the exchange fill first (the exchange is the truth), then the price
(`decide_exit`: stop, take-profits, time limit, trailing), then candle closes (the kill score of
the features now, computed once per symbol and candle by the hub, against the entry's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

from temporalio import activity

from activities.price_hub import PriceHub, Snapshot, Watch
from activities.schemas.feedback import RecordPositionRequest
from activities.schemas.monitor import (  # noqa: F401 (re-exported)
    Candle, KillWatch, WatchEvent, WatchKind, WatchRequest,
)
from trading.exits import (
    ExitAction,
    ExitDecision,
    ExitState,
    KillScore,
    PriceMove,
    better_price,
    decide_exit,
    decide_kill,
    kill_score,
    wake_band,
)
from trading.features import CANDLE_MS, MarketFeatures
from trading.market_time import ms_of_utc, utc_of_ms

__all__ = ["Candle", "KillWatch", "MonitorActivities", "MonitorSession", "WatchEvent", "WatchKind",
           "WatchRequest"]

log = logging.getLogger(__name__)


class MonitorSession:
    """The deciding part of one session, free of Temporal: `arm` sets the watch's band from the
    state, `evaluate` decides on what the watch saw (the property tests drive it directly)."""

    def __init__(self, req: WatchRequest, features_at=None, resumed_extreme: Decimal | None = None):
        self.req = req
        self.state = _resume(req.exit, resumed_extreme)
        self._features_at = features_at  # (symbol, candle open_ms, window) -> MarketFeatures | None
        self._armed = False

    def arm(self, watch: Watch) -> None:
        """Tell the hub when to wake us: outside the band where the decider can act."""
        if self.req.paused:
            watch.wake_low = watch.wake_high = watch.wake_at_ms = None
        else:
            band = wake_band(self.state, self.req.exit_policy)
            watch.wake_low, watch.wake_high = band.low, band.high
            watch.wake_at_ms = ms_of_utc(band.at) if band.at is not None else None
        watch.rearm()
        if not self._armed and watch.has_price:
            # The session's first price is always decided on, band or not: the state may carry a
            # decision that needs no new price (a stop move the exchange refused last session).
            watch.event.set()
        self._armed = True

    def evaluate(self, watch: Watch) -> WatchEvent | None:
        req = self.req
        if req.position_qty is not None and watch.position_seq and watch.position_qty != req.position_qty:
            snap = watch.take() if watch.has_price else None
            return self.event(WatchKind.EXCHANGE_FILL, snap, exchange_position_qty=watch.position_qty)
        if not watch.has_price:
            return None
        snap = watch.take()
        if req.paused:
            watch.candles.clear()
            return None
        move = PriceMove(price=snap.price, high=max(snap.high, snap.price), low=min(snap.low, snap.price),
                         at=utc_of_ms(snap.market_ms))
        decision = decide_exit(self.state, move, req.exit_policy)
        if decision.action is not ExitAction.NONE:
            return self.event(WatchKind.DECIDED, snap, decision=decision)
        self.state = decision.state
        while watch.candles:
            candle = watch.candles.popleft()
            if req.kill is None or self._features_at is None:
                continue
            now = self._features_at(watch.symbol, candle.open_ms, req.kill.window)
            score = _kill_score(req.kill, self.state, candle, now)
            if score is None:
                continue
            decision = decide_kill(self.state, score, snap.price)
            if decision.action is not ExitAction.NONE:
                return self.event(WatchKind.DECIDED, snap, decision=decision, candle=candle, features=now,
                                  kill_score=score)
        return None

    def event(self, kind: WatchKind, snap: Snapshot | None, decision: ExitDecision | None = None,
              **extra) -> WatchEvent:
        return WatchEvent(
            **extra, kind=kind, decision=decision, state=self.state,
            price=snap.price if snap else None, high=snap.high if snap else None,
            low=snap.low if snap else None, market_ms=snap.market_ms if snap else None)

    def details(self) -> dict:
        """Heartbeat details: what a retried attempt resumes from."""
        extreme = self.state.extreme
        return {"extreme": None if extreme is None else str(extreme)}


def _resume(state: ExitState, extreme: Decimal | None) -> ExitState:
    """The request's state with the trailing extreme a previous attempt had reached."""
    if extreme is None:
        return state
    best = extreme if state.extreme is None else better_price(state.levels.side, state.extreme, extreme)
    return state.model_copy(update={"extreme": best})


def _resumed_extreme() -> Decimal | None:
    """The extreme the previous attempt of this activity heartbeated (worker crash → retry)."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    first = details[0]
    value = first.get("extreme") if isinstance(first, dict) else first
    return Decimal(str(value)) if value is not None else None


def _kill_score(kill: KillWatch, state: ExitState, candle: Candle, now: MarketFeatures | None) -> KillScore | None:
    """The kill score of the features now (at `candle`'s close) against the entry's; None
    without features (missing data never closes a trade)."""
    if now is None:
        return None
    entry = kill.entry
    return kill_score(
        regime_at_entry=entry.regime, regime_now=now.regime,
        sigma_at_entry=entry.sigma, sigma_now=now.sigma,
        trend_at_entry=entry.trend_strength, trend_now=now.trend_strength,
        age_s=(candle.open_ms + CANDLE_MS) / 1000 - state.opened_at.timestamp(),  # market time at the close
        age_horizon_s=kill.age_horizon_s, weights=kill.weights, threshold=kill.threshold,
    )


class MonitorActivities:
    def __init__(self, hub: PriceHub, publisher: Callable[[RecordPositionRequest], Awaitable] | None = None,
                 publish_attempts: int = 5) -> None:
        """`publisher`: writes a position record (`FeedbackActivities.record_position`); None:
        requests carrying one are watched but not published (tests of the monitor alone)."""
        self.hub = hub
        self._publisher = publisher
        self._publish_attempts = publish_attempts
        self._publishing: set[asyncio.Task] = set()

    @activity.defn(name="watch_position")
    async def watch_position(self, req: WatchRequest) -> WatchEvent:
        if req.publish is not None and self._publisher is not None:
            # In the background: the watch starts at once; a write finishing after the session
            # returned is fine (records carry a version, an older one never overwrites).
            task = asyncio.create_task(self._publish(req))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        session = MonitorSession(req, self.hub.features_at, _resumed_extreme())
        watch = await self.hub.subscribe(
            req.symbol,
            want_candles=req.kill is not None and not req.paused,
            candles_after_ms=req.candles_after_ms,
            want_position=req.position_qty is not None,
            kill_window=req.kill.window if req.kill and not req.paused else None,
        )
        try:
            return await self._run(req, watch, session)
        finally:
            # Also on cancellation (operator update: the workflow restarts us with new levels):
            # the last watcher leaving stops the symbol's poll task.
            self.hub.unsubscribe(watch)

    async def _publish(self, req: WatchRequest) -> None:
        delay = 0.5
        for attempt in range(1, self._publish_attempts + 1):
            try:
                await self._publisher(req.publish)
                return
            except Exception as exc:  # noqa: BLE001: never a reason to stop watching
                if attempt == self._publish_attempts:
                    log.warning("position record not published: %s", exc,
                                extra={"workflow_id": req.workflow_id, "symbol": req.symbol})
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        """Let position writes still in flight finish (a stopping worker)."""
        if self._publishing:
            await asyncio.wait(set(self._publishing), timeout=5)

    async def _run(self, req: WatchRequest, watch: Watch, session: MonitorSession) -> WatchEvent:
        deadline = time.monotonic() + req.session_cap_s
        next_heartbeat = 0.0  # heartbeat at once: the retry details exist from the start
        session.arm(watch)
        while True:
            now = time.monotonic()
            if now >= next_heartbeat:
                activity.heartbeat(session.details())
                next_heartbeat = now + req.heartbeat_interval_s
            if watch.event.is_set():
                watch.event.clear()
                extreme = session.state.extreme
                event = session.evaluate(watch)
                if event is not None:
                    activity.heartbeat(session.details())
                    log.info("watch_position returns %s", _describe(event),
                             extra={"workflow_id": req.workflow_id, "symbol": req.symbol})
                    return event
                if session.state.extreme != extreme:
                    activity.heartbeat(session.details())  # the SDK throttles; the last one wins
                session.arm(watch)
            if now >= deadline:
                snap = watch.take() if watch.has_price else None
                return session.event(WatchKind.SESSION_CAP, snap)
            try:
                async with asyncio.timeout(min(deadline, next_heartbeat) - now):
                    await watch.event.wait()
            except TimeoutError:
                pass


def _describe(event: WatchEvent) -> str:
    decision = event.decision
    if decision is None:
        return event.kind.value
    return f"{decision.action.value} {decision.reason.value if decision.reason else ''} ({decision.note})".strip()
