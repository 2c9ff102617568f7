"""TradeWorkflow: one durable workflow owns one trade, from the gates to the learning record.

Read `run` top to bottom and it is the SPEC's stage list:

    gates → sizing → adaptive levels → entry → protection on the exchange → monitoring
    (harvest at TPs, break-even, trailing, kill score, time limit) → close → learning feedback

The workflow only orchestrates: every decision is a pure function from `trading/` (levels,
sizing, exits, kill score, PnL) and every I/O is an activity called by name (see
`workflows/activity_calls.py`), so no exchange or Redis client is ever imported here.

Crash safety comes from three rules:
- every order carries a client id derived from this workflow's id and the step (`…-entry`,
  `…-sl-2`, `…-tp1`, `…-close`), and every placement looks the id up first: a replayed or
  retried step can never place a second order;
- order activities are shielded from workflow cancellation: a kill waits for the order in
  flight to finish, then flattens what really exists;
- a reduce-only STOP_MARKET rests on the exchange from right after the entry until the
  position is flat, and moving it places the new stop before cancelling the old one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.schemas.feedback import (
        ExecutionReport,
        PositionSnapshot,
        RecordCloseRequest,
        RecordPositionRequest,
        TradeClosedEvent,
        TradeOutcome,
    )
    from activities.schemas.gates import GateReport, GateRequest, ReleaseLockRequest
    from activities.schemas.policy import TradePolicy
    from activities.schemas.monitor import (
        CrossedLevel,
        KillWatch,
        TrailingSpec,
        WatchEvent,
        WatchKind,
        WatchRequest,
    )
    from activities.schemas.orders import (
        LATE_ENTRY_REFUSED,
        WOULD_TRIGGER_IMMEDIATELY,
        ClosePositionRequest,
        FillsRequest,
        FillsResult,
        OrderRef,
        OrderResult,
        OrderType,
        PlaceOrderRequest,
        PositionRequest,
        ProtectiveStop,
    )
    from trading.client_ids import client_order_id, run_tag
    from trading.exits import (
        ExitAction,
        ExitDecision,
        ExitState,
        PriceMove,
        StopKind,
        decide_exit,
        kill_score,
        tighter_stop,
    )
    from trading.intent import IntentError, TradeIntent, parse_stream_fields
    from trading.levels import (
        LevelsError,
        levels_for_intent,
        rebase_levels,
        stop_would_trigger,
        validate_manual_levels,
    )
    from trading.models import ExitReason, Side, TradeStatus
    from trading.pnl import Fill as PnlFill
    from trading.pnl import FundingPayment as PnlFunding
    from trading.pnl import realized_pnl
    from trading.sizing import floor_to_step, size_position
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    import workflows.activity_calls as calls
    import common.search_attributes as sa
    from workflows.trade_state import (
        AdjustLevelsRequest,
        AdjustLevelsResult,
        CloseRequest,
        PlacedOrder,
        Stage,
        TradeResult,
        TradeState,
    )
    from workflows.trade_view import details_markdown

CANDLE_MS = 5 * 60 * 1000
# Versioning (workflow.patched): runs started with this code tag their client order ids with
# the trade's first run id, open the position through `open_position` (entry + protective stop
# in one heartbeating activity, a late entry re-checked) and let the gates refuse a reused
# workflow id. Histories recorded before it replay on the old path.
RUN_TAGGED_ENTRY = "run-tagged-orders-open-position"


class _StopRefused(Exception):
    """The exchange would not take the new stop; `crossed` = it would trigger at once (-2021)."""

    def __init__(self, message: str, crossed: bool) -> None:
        super().__init__(message)
        self.crossed = crossed


def _abandon(handle: asyncio.Future) -> None:
    """Cancel a monitor session nobody awaits any more; its ending (an ActivityError) is read here,
    so asyncio does not log "exception was never retrieved" for it. No command: history unchanged."""
    handle.add_done_callback(lambda done: done.cancelled() or done.exception())
    handle.cancel()


def _failure(err: BaseException) -> tuple[str | None, str]:
    """(ApplicationError type, readable message) of an activity failure."""
    cause = err.cause if isinstance(err, ActivityError) else err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.type, cause.message
    return None, str(cause or err)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def _nothing() -> None:
    return None


async def _raise(err: BaseException) -> None:
    raise err


@workflow.defn(name="TradeWorkflow")
class TradeWorkflow:
    @workflow.init
    def __init__(self, intent: dict[str, Any], carried: TradeState | None = None) -> None:
        self._raw_intent = intent
        self.intent: TradeIntent | None = None
        self._invalid: str | None = None
        try:
            self.intent = parse_stream_fields(intent) if isinstance(intent, dict) else None
            if self.intent is None:
                self._invalid = f"the input must be a JSON object of intent fields, got {type(intent).__name__}"
        except IntentError as err:
            self._invalid = str(err)
        self.state = carried or TradeState(workflow_id=workflow.info().workflow_id)
        self._close_request: CloseRequest | None = None
        self._adjust_request: AdjustLevelsRequest | None = None
        self._adjust_outcome: AdjustLevelsResult | str | None = None
        self._partial_request: CloseRequest | None = None
        self._partial_outcome: str | None = None  # "done", or why the partial close was refused
        self._interrupt = False
        self._watch: workflow.ActivityHandle | None = None
        self._stop_refused: _StopRefused | None = None  # by the exchange, in the entry activity
        self._in_flight: list[asyncio.Task] = []  # shielded order steps
        self._background: list[asyncio.Task] = []  # feedback writes

    # ============================================================================ the lifecycle

    @workflow.run
    async def run(self, intent: dict[str, Any], carried: TradeState | None = None) -> TradeResult:
        try:
            if self.intent is None:
                return await self._reject(f"invalid intent: {self._invalid}")
            if carried is None:
                await self._start()
            if not self.state.status.is_final:
                await self._manage_until_closed()
            await self._drain_background()
            return self._result()
        except asyncio.CancelledError:
            # Workflow cancellation = operator kill: flatten, cancel protection, end as KILLED.
            return await self._kill()

    async def _start(self) -> None:
        """Stages 1-5: gates, sizing, adaptive levels, entry, protection."""
        intent, st = self.intent, self.state
        first_run_id = workflow.info().first_execution_run_id
        if workflow.patched(RUN_TAGGED_ENTRY) and first_run_id:
            st.order_tag = run_tag(first_run_id)
        workflow.upsert_search_attributes([
            sa.SYMBOL.value_set(intent.symbol), sa.SIDE.value_set(intent.side.value),
            sa.CONFIDENCE.value_set(intent.confidence), sa.LEVERAGE.value_set(float(intent.leverage)),
            sa.MODEL_VERSION.value_set(intent.model), sa.INTENT_SOURCE.value_set(intent.source or "unknown"),
            sa.TRADE_STATUS.value_set(TradeStatus.PENDING.value),
        ])
        self._show()

        # 1. Gates: every verdict in one activity; the symbol lock is taken only if all pass.
        # The report also carries the trade's policy and the entry features (kill score): every
        # extra activity would cost the history ~6 events.
        try:
            report = await self._call(calls.RUN_GATES, GateRequest(
                workflow_id=st.workflow_id, intent=intent,
                first_run_id=first_run_id if st.order_tag else None))
        except ActivityError as err:
            why = f"gates could not run: {_failure(err)[1]}"
            try:  # a lost attempt may have taken the lock; tried within a short budget
                await self._release_lock(cooldown=False, quick=st.order_tag is not None)
            except ActivityError as release_err:
                why += f"; the symbol lock could not be released either: {_failure(release_err)[1]}"
            return await self._reject(why)
        st.policy = report.policy or TradePolicy()
        st.features_at_entry = report.features
        st.gates = report.verdicts
        if not report.passed:
            return await self._reject(report.rejection_reason or "rejected by the gates")
        st.lock_held = report.lock_acquired

        # 2-3. Sizing and adaptive levels at today's price (re-based on the real fill later).
        st.stage = Stage.SIZING
        if not await self._size(report):
            return
        if self._close_request is not None:
            await self._release_lock(cooldown=False)
            return await self._reject(f"closed by the operator before the entry ({self._close_request.reason})")

        # 4. Entry.
        st.stage = Stage.ENTRY
        await self._set_status(TradeStatus.OPENING, sa.LEVERAGE.value_set(float(st.leverage)))
        if not await self._enter():
            return

        # 5. Protection: a reduce-only stop rests on the exchange before anything else happens.
        st.stage = Stage.PROTECTION
        await self._protect()

    async def _manage_until_closed(self) -> None:
        """Stages 6-7: monitoring and harvest, until a close (stages 8-9 run from `_close`)."""
        st = self.state
        while not st.status.is_final:
            st.stage = Stage.MONITORING
            if self._close_request is not None:
                await self._close(ExitReason.MANUAL, f"closed by the operator ({self._close_request.reason})")
                break
            if self._adjust_request is not None:
                await self._apply_adjustment()
                continue
            if self._partial_request is not None:
                await self._apply_partial_close()
                continue
            if workflow.info().is_continue_as_new_suggested():
                await self._continue_as_new()
            event = await self._watch_once()
            if event is not None:
                await self._on_event(event)

    # ================================================================ stage 1-3: gates, sizing

    async def _size(self, report: GateReport) -> bool:
        intent, st, policy = self.intent, self.state, self.state.policy
        st.rules = report.market_rules
        try:
            st.planned_levels = levels_for_intent(intent, tick_size=st.rules.tick_size,
                                                  entry_price=report.price, policy=policy.levels)
            sizing = size_position(
                side=intent.side, entry_price=report.price, stop_price=st.planned_levels.stop_loss,
                confidence=intent.confidence, equity=report.equity or Decimal(0),
                free_margin=report.free_margin or Decimal(0), intent_size_usd=intent.position_size_usd,
                intent_leverage=intent.leverage, market=st.rules.sizing_rules(), policy=policy.sizing)
        except (LevelsError, ValueError) as err:
            await self._release_lock(cooldown=False)
            await self._reject(f"sizing: {err}")
            return False
        st.sizing = sizing
        if report.entry_guard is not None:  # (its clock starts when the gates read the price)
            st.entry_guard = report.entry_guard.model_copy(update={"planned_stop": st.planned_levels.stop_loss})
        if not sizing.ok:
            await self._release_lock(cooldown=False)
            await self._reject(f"sizing: {sizing.rejected_reason}")
            return False
        st.leverage = sizing.leverage
        st.note(f"size {sizing.quantity} @ ~{report.price} ×{sizing.leverage} ({sizing.binding_cap} cap)")
        return True

    # ===================================================================== stage 4: the entry

    async def _enter(self) -> bool:
        intent, st = self.intent, self.state
        request = PlaceOrderRequest(  # leverage (isolated) is set by the same activity, just before
            symbol=intent.symbol, side=intent.side, type=OrderType.MARKET, leverage=st.leverage,
            quantity=st.sizing.quantity, client_order_id=self._cid("entry"))
        try:
            if st.order_tag is None:  # (histories from before RUN_TAGGED_ENTRY)
                order = await self._place("entry", request)
            else:
                order = await self._open_position(request.model_copy(update={
                    "entry_guard": st.entry_guard,
                    "protective_stop": ProtectiveStop(client_order_id=self._cid("sl-1"),
                                                      planned_levels=st.planned_levels)}))
            for _ in range(st.policy.entry_fill_checks):
                if order.filled > 0 and order.average_price is not None:
                    break
                await workflow.sleep(timedelta(seconds=1))
                order = await self._call(calls.GET_ORDER, OrderRef(symbol=intent.symbol,
                                                                   client_order_id=order.client_order_id))
                self._remember("entry", order)
        except ActivityError as err:
            kind, message = _failure(err)
            if kind == LATE_ENTRY_REFUSED:  # nothing was sent: the gates' verdict is out of date
                await self._release_lock(cooldown=False)
                await self._reject(message)
                return False
            return await self._abort_entry(f"entry order failed: {message}")
        if order is None or order.filled <= 0 or order.average_price is None:
            return await self._abort_entry("entry order did not fill")

        # Partial fills give the position its real size; levels move onto the real fill price.
        st.entry_qty = st.open_qty = order.filled
        st.entry_price = order.average_price
        st.opened_at_ms = order.time_ms or self._now_ms()
        st.last_price, st.last_price_ms = order.average_price, st.opened_at_ms
        levels = rebase_levels(st.planned_levels, order.average_price)
        st.exit = ExitState.start(levels, opened_at=_utc(st.opened_at_ms))
        st.note(f"entry filled {order.filled} @ {order.average_price}")
        if order.protective_stop is not None:  # placed by the entry activity itself
            stop = order.protective_stop
            if stop.trigger_price is not None and stop.trigger_price != levels.stop_loss:
                st.note(f"stop rests at {stop.trigger_price}, planned {levels.stop_loss}")
                st.exit = st.exit.model_copy(update={"stop": stop.trigger_price})
        elif order.protective_stop_error:
            self._stop_refused = _StopRefused(order.protective_stop_error, order.protective_stop_crossed)
        return True

    async def _abort_entry(self, why: str) -> bool:
        """Entry failed: make sure nothing is open (an unknown outcome may have filled), FAILED."""
        st = self.state
        st.note(why)
        try:
            flat = await self._shielded(self._close_round())
        except ActivityError as err:
            flat = False
            why += f"; could not confirm flat: {_failure(err)[1]}"
        if flat:
            if st.order_tag is not None:
                # open_position may have placed `sl-1` before its last attempt failed: once flat,
                # nothing of this trade may rest on the exchange (an unknown id is a no-op).
                await self._cancel_stops()
            await self._release_lock(cooldown=False)
        st.reason, st.stage = why, Stage.DONE
        await self._set_status(TradeStatus.FAILED)
        return False

    # =============================================================== stage 5: protection

    async def _protect(self) -> None:
        st = self.state
        # The liquidation price (adjust_levels refuses a stop beyond it) is read alongside.
        # The entry activity usually placed the stop already (`sl-1`).
        if self._stop_refused is not None:  # the entry activity's stop was refused on its merits
            placing = _raise(self._stop_refused)
        elif st.stop_client_id is None:
            placing = self._place_stop(st.exit.stop)
        else:
            placing = _nothing()
        stop, position = await asyncio.gather(
            placing, self._call(calls.GET_POSITION, PositionRequest(symbol=self.intent.symbol)),
            return_exceptions=True)
        if isinstance(stop, _StopRefused):
            reason = ExitReason.SL if stop.crossed else ExitReason.PROTECTION_FAILED
            await self._close(reason, f"protective stop not placed ({stop}): closed at market")
            return
        if isinstance(stop, BaseException):
            raise stop
        if isinstance(position, BaseException):
            st.note(f"liquidation price unknown: {_failure(position)[1]}")
        else:
            st.liquidation_price = position.liquidation_price
        await self._set_status(TradeStatus.OPEN)
        self._record_position()

    async def _place_stop(self, price: Decimal, kind: StopKind | None = None) -> None:
        """Place `sl-{n+1}` at `price`; cancel the previous stop only once the new one rests."""
        st, side = self.state, self.intent.side
        if st.last_price is not None and stop_would_trigger(side, price, st.last_price):
            raise _StopRefused(f"stop {price} is already crossed by the price {st.last_price}", crossed=True)
        step = f"sl-{st.stop_seq + 1}"
        try:
            await self._place(step, PlaceOrderRequest(
                symbol=self.intent.symbol, side=side.opposite, type=OrderType.STOP_MARKET,
                quantity=st.open_qty, trigger_price=price, reduce_only=True,
                client_order_id=self._cid(step)))
        except ActivityError as err:
            kind, message = _failure(err)
            raise _StopRefused(message, crossed=kind == WOULD_TRIGGER_IMMEDIATELY) from None
        previous, st.stop_seq, st.stop_client_id = st.stop_client_id, st.stop_seq + 1, self._cid(step)
        st.exit = st.exit.model_copy(update={"stop": price, "stop_kind": kind or st.exit.stop_kind})
        if previous is not None:
            # The position hash is updated while the old stop is cancelled (one round trip).
            self._record_position()
            try:
                await self._call(calls.CANCEL_ORDER, OrderRef(symbol=self.intent.symbol,
                                                              client_order_id=previous, conditional=True))
            except ActivityError:
                st.stale_stop_ids.append(previous)  # cancelled again at the close
            await self._drain_background()

    async def _move_stop(self, new_stop: Decimal, kind: StopKind) -> bool:
        """Replace the resting stop; a stop the market already crossed closes at market."""
        st = self.state
        try:
            await self._place_stop(new_stop, kind)
        except _StopRefused as err:
            if err.crossed:
                reason = ExitReason.TRAILING if kind is StopKind.TRAILING else ExitReason.SL
                await self._close(reason, f"new {kind.value.lower()} stop {new_stop} already crossed")
            else:
                st.note(f"stop move to {new_stop} refused ({err}); the previous stop stays")
            return False
        st.note(f"{kind.value.lower()} stop at {new_stop}")
        return True

    # ================================================================ stage 6-7: monitoring

    def _watch_request(self) -> WatchRequest:
        st, policy, ex = self.state, self.state.policy, self.state.exit
        paused = st.paused
        trailing = None
        if not paused and ex.tps_done >= policy.exits.trailing_after_tp:
            trailing = TrailingSpec(callback_pct=ex.levels.trailing_callback_pct, extreme=ex.extreme,
                                    min_step=policy.exits.trail_min_step_pct * ex.levels.entry_price)
        kill = None
        if not paused and policy.monitor.kill_score and st.features_at_entry is not None:
            kill = KillWatch(entry=st.features_at_entry, weights=policy.kill_weights,
                             threshold=policy.kill_threshold, age_horizon_s=policy.kill_age_horizon_s,
                             window=policy.monitor.kill_window)
        max_hold = policy.exits.max_hold_s
        return WatchRequest(
            workflow_id=st.workflow_id, symbol=self.intent.symbol, side=self.intent.side,
            stop_price=ex.stop,
            take_profit_prices=[] if paused else [tp.price for tp in ex.levels.take_profits[ex.tps_done:]],
            trailing=trailing, want_candles=kill is not None, kill=kill,
            opened_at_ms=st.opened_at_ms,
            max_holding_ms=None if paused or max_hold is None else int(max_hold * 1000),
            session_cap_s=policy.monitor.session_cap_s, position_qty=st.open_qty,
            stop_client_order_id=st.stop_client_id,
            heartbeat_interval_s=policy.monitor.heartbeat_interval_s,
        )

    async def _watch_once(self) -> WatchEvent | None:
        """One monitor session; None when an operator interrupted it (or it failed)."""
        monitor = self.state.policy.monitor
        self._interrupt = False
        self._watch = workflow.start_activity(
            calls.WATCH_POSITION.name, self._watch_request(),
            **calls.WATCH_POSITION.options(
                heartbeat_timeout=timedelta(seconds=monitor.heartbeat_timeout_s),
                start_to_close_timeout=timedelta(seconds=monitor.session_cap_s + 600)))
        handle = self._watch
        await workflow.wait_condition(lambda: handle.done() or self._interrupt)
        if not handle.done():
            _abandon(handle)  # ABANDON: read-only, the session ends at its next heartbeat
            return None
        try:
            return handle.result()
        except ActivityError as err:
            self.state.note(f"monitor session failed: {_failure(err)[1]}")
            await workflow.sleep(timedelta(seconds=5))
            return None

    async def _on_event(self, event: WatchEvent) -> None:
        st = self.state
        if event.price is not None:
            st.last_price, st.last_price_ms = event.price, event.market_ms
        if event.kind is WatchKind.EXCHANGE_FILL:
            await self._exchange_changed(event)
        elif event.kind is WatchKind.CANDLE_CLOSED:
            await self._candle_closed(event)
        elif event.kind is not WatchKind.SESSION_CAP and event.price is not None:
            move = self._price_move(event)
            decision = decide_exit(st.exit, move, st.policy.exits)
            await self._act(decision, event, move)
        self._show()

    def _price_move(self, event: WatchEvent) -> PriceMove:
        """The event's price range, widened by the monitor's trailing extreme: the ratchet in
        `decide_exit` must see the best price the monitor saw during the whole session."""
        price = event.price
        high, low = max(event.high or price, price), min(event.low or price, price)
        if event.trailing_extreme is not None:
            if self.intent.side is Side.BUY:
                high = max(high, event.trailing_extreme)
            else:
                low = min(low, event.trailing_extreme)
        return PriceMove(price=price, high=high, low=low, at=_utc(event.market_ms or self._now_ms()))

    async def _act(self, decision: ExitDecision, event: WatchEvent, move: PriceMove) -> None:
        st, before = self.state, self.state.exit
        action = decision.action
        if action is ExitAction.CLOSE_ALL:
            st.exit = decision.state
            await self._close(decision.reason, decision.note)
        elif action is ExitAction.TAKE_PROFIT:
            # The stop moves only once the exchange holds the new one (`_move_stop`).
            if not await self._harvest(decision, decision.state.model_copy(
                    update={"stop": before.stop, "stop_kind": before.stop_kind})):
                return
            if decision.new_stop is None or not await self._move_stop(decision.new_stop,
                                                                      decision.state.stop_kind):
                self._record_position()  # (a stop move records the position itself)
        elif action is ExitAction.MOVE_STOP:
            st.exit = decision.state.model_copy(update={"stop": before.stop, "stop_kind": before.stop_kind})
            await self._move_stop(decision.new_stop, decision.state.stop_kind)
        else:
            st.exit = decision.state
            # The monitor and decide_exit share their rules; should they ever disagree at a
            # boundary, act on what the monitor saw rather than wake it again at once.
            if event.kind is WatchKind.LEVEL_CROSSED and event.level is CrossedLevel.TRAILING:
                await self._close(ExitReason.TRAILING, f"trailing stop {event.trailing_stop} crossed")
            elif (event.kind is WatchKind.TRAIL_ADVANCED and event.trailing_stop is not None
                  and tighter_stop(self.intent.side, event.trailing_stop, before.stop) != before.stop):
                st.exit = st.exit.model_copy(update={"extreme": event.trailing_extreme})
                await self._move_stop(event.trailing_stop, StopKind.TRAILING)

    async def _harvest(self, decision: ExitDecision, harvested: ExitState) -> bool:
        """Partial close at a TP stage; False when the trade ended meanwhile.

        `harvested` (the TP counted as done) becomes the state only together with the filled
        quantity, so a query never sees a TP done and the position still whole."""
        st = self.state
        index = decision.take_profits[-1]
        qty = min(floor_to_step(st.entry_qty * decision.close_fraction, st.rules.step_size), st.open_qty)
        if qty >= st.open_qty:
            st.exit = harvested
            await self._close(ExitReason.TP, decision.note)
            return False
        if qty <= 0 or qty < st.rules.min_qty:
            st.exit = harvested
            st.note(f"TP{index}: {qty} is below the minimum quantity, nothing harvested")
            return True
        step = f"tp{index}"
        try:
            order = await self._place(step, PlaceOrderRequest(
                symbol=self.intent.symbol, side=self.intent.side.opposite, type=OrderType.MARKET,
                quantity=qty, reduce_only=True, client_order_id=self._cid(step)))
        except ActivityError as err:
            st.exit = harvested  # a refused TP order is not retried at the next tick
            kind, message = _failure(err)
            st.note(f"TP{index} order failed: {message}")
            if kind == "reduce_only_rejected":  # nothing left to reduce: the stop fired meanwhile
                await self._exchange_changed()
                return not st.status.is_final
            return True
        st.exit, st.open_qty = harvested, st.open_qty - order.filled
        st.note(f"TP{index}: {order.filled} closed @ {order.average_price}")
        if st.open_qty <= 0:
            await self._close(ExitReason.TP, decision.note)
            return False
        return True

    async def _candle_closed(self, event: WatchEvent) -> None:
        """Kill score on a candle close (the monitor only reports closes that reach the threshold)."""
        st, policy = self.state, self.state.policy
        score = event.kill_score
        if event.features is not None and st.features_at_entry is not None and event.candle is not None:
            entry, now = st.features_at_entry, event.features
            score = kill_score(
                regime_at_entry=entry.regime, regime_now=now.regime, sigma_at_entry=entry.sigma,
                sigma_now=now.sigma, trend_at_entry=entry.trend_strength, trend_now=now.trend_strength,
                age_s=(event.candle.open_ms + CANDLE_MS - st.opened_at_ms) / 1000,
                age_horizon_s=policy.kill_age_horizon_s, weights=policy.kill_weights,
                threshold=policy.kill_threshold)
        if score is None:
            return
        st.kill = score
        if score.should_close:
            await self._close(ExitReason.KILL_SCORE, f"kill score {score.score:.3f} >= {score.threshold:g}")

    async def _exchange_changed(self, event: WatchEvent | None = None) -> None:
        """The position size on the exchange changed without us: the stop fired, or someone else."""
        st = self.state
        position = await self._call(calls.GET_POSITION, PositionRequest(symbol=self.intent.symbol))
        size = abs(position.quantity)
        if size == 0:
            reason = await self._why_flat()
            await self._close(reason, f"position closed on the exchange ({reason.value})", reason_known=True)
        elif size != st.open_qty:
            st.note(f"exchange position is {size}, expected {st.open_qty}: adopted")
            st.open_qty = size
            self._record_position()

    async def _why_flat(self) -> ExitReason:
        st = self.state
        if st.stop_client_id is not None:
            stop = await self._call(calls.GET_ORDER, OrderRef(symbol=self.intent.symbol,
                                                              client_order_id=st.stop_client_id,
                                                              conditional=True))
            if stop is not None and stop.status == "closed":
                return ExitReason.TRAILING if st.exit.stop_kind is StopKind.TRAILING else ExitReason.SL
        return ExitReason.EXTERNAL

    # ======================================================================= operator surface

    @workflow.query(name="state")
    def get_state(self) -> TradeState:
        return self.state

    @workflow.signal
    def pause(self) -> None:
        """Stop managing (TPs, trailing, kill score, time limit); the exchange stop stays."""
        if not self.state.paused:
            self.state.paused, self._interrupt = True, True
            self.state.note("management paused by the operator")

    @workflow.signal
    def resume(self) -> None:
        if self.state.paused:
            self.state.paused, self._interrupt = False, True
            self.state.note("management resumed by the operator")

    @workflow.update
    async def close(self, request: CloseRequest | None = None) -> TradeResult:
        request = request or CloseRequest()
        self._interrupt = True
        if request.amount is not None and request.amount < self.state.open_qty:
            self._partial_request, self._partial_outcome = request, None
            await workflow.wait_condition(lambda: self._partial_outcome is not None or self.state.status.is_final)
            if self._partial_outcome not in (None, "done"):
                raise ApplicationError(self._partial_outcome, type="CloseRefused", non_retryable=True)
            return self._result()
        self._close_request = request
        await workflow.wait_condition(lambda: self.state.status.is_final)
        return self._result()

    @close.validator
    def _validate_close(self, request: CloseRequest | None = None) -> None:
        st = self.state
        if st.status.is_final:
            raise ValueError(f"the trade is already {st.status.value}: nothing to close")
        if st.status is TradeStatus.CLOSING or self._close_request is not None:
            raise ValueError("the trade is already closing")
        if request is None or request.amount is None or request.amount >= st.open_qty:
            return
        if st.status is not TradeStatus.OPEN or st.rules is None:
            raise ValueError(f"amount: a partial close needs an OPEN trade (it is {st.status.value})")
        if self._partial_request is not None or self._adjust_request is not None:
            raise ValueError("another operator change is in progress")
        if floor_to_step(request.amount, st.rules.step_size) != request.amount:
            raise ValueError(f"amount: {request.amount} is not a multiple of the step size {st.rules.step_size}")
        if request.amount < st.rules.min_qty:
            raise ValueError(f"amount: {request.amount} is below the minimum quantity {st.rules.min_qty}")

    @workflow.update
    async def adjust_levels(self, request: AdjustLevelsRequest) -> AdjustLevelsResult:
        self._adjust_request, self._adjust_outcome = request, None
        self._interrupt = True
        await workflow.wait_condition(lambda: self._adjust_outcome is not None or self.state.status.is_final)
        outcome = self._adjust_outcome
        if isinstance(outcome, AdjustLevelsResult):
            return outcome
        raise ApplicationError(outcome or f"the trade ended ({self.state.status.value}) before the change",
                               type="AdjustRefused", non_retryable=True)

    @adjust_levels.validator
    def _validate_adjust(self, request: AdjustLevelsRequest) -> None:
        problems = self._adjust_problems(request)
        if problems:
            raise ValueError("; ".join(problems))

    def _adjust_problems(self, request: AdjustLevelsRequest, *, applying: bool = False) -> list[str]:
        st = self.state
        if st.status is not TradeStatus.OPEN or st.exit is None:
            return [f"levels can be adjusted only while the trade is OPEN (it is {st.status.value})"]
        if not applying and (self._adjust_request is not None or self._close_request is not None
                             or self._partial_request is not None):
            return ["another operator change is in progress"]
        if request.stop_loss is None and not request.take_profits:
            return ["give stop_loss and/or take_profits"]
        pending = len(st.exit.levels.take_profits) - st.exit.tps_done
        if request.take_profits is not None and len(request.take_profits) != pending:
            return [f"{pending} take-profit(s) are pending: give exactly {pending} price(s), nearest first"]
        return validate_manual_levels(
            self.intent.side, st.last_price or st.entry_price, stop_loss=request.stop_loss,
            take_profits=request.take_profits or (), liquidation_price=st.liquidation_price)

    async def _apply_adjustment(self) -> None:
        st, request = self.state, self._adjust_request
        self._adjust_request = None
        # Checked again: a TP may have been harvested between the update's validation and now.
        problems = self._adjust_problems(request, applying=True)
        if problems:
            self._adjust_outcome = "; ".join(problems)
            return
        note = request.reason or "operator"
        if request.stop_loss is not None and request.stop_loss != st.exit.stop:
            try:
                await self._place_stop(request.stop_loss)
            except _StopRefused as err:
                self._adjust_outcome = f"stop {request.stop_loss} refused by the exchange: {err}"
                return
        if request.take_profits:
            done = st.exit.tps_done
            tps = list(st.exit.levels.take_profits)
            for offset, price in enumerate(request.take_profits):
                tps[done + offset] = tps[done + offset].model_copy(update={"price": price})
            levels = st.exit.levels.model_copy(update={"take_profits": tuple(tps)})
            st.exit = st.exit.model_copy(update={"levels": levels})
        st.note(f"levels adjusted ({note}): stop {st.exit.stop}, "
                f"TPs {[str(tp.price) for tp in st.exit.levels.take_profits[st.exit.tps_done:]]}")
        if request.take_profits:  # (a stop move records the position itself)
            self._record_position()
        self._show()
        self._adjust_outcome = AdjustLevelsResult(
            stop_loss=st.exit.stop,
            take_profits=[tp.price for tp in st.exit.levels.take_profits[st.exit.tps_done:]],
            note=note)

    async def _apply_partial_close(self) -> None:
        """Reduce-only market for `amount` contracts; the rest stays managed under its stop (a
        reduce-only stop larger than the position closes what is left)."""
        st, request = self.state, self._partial_request
        self._partial_request = None
        if request.amount >= st.open_qty:  # a TP or the exchange took the rest meanwhile
            self._close_request = request
            return
        step = f"reduce-{st.reduce_seq + 1}"
        try:
            order = await self._place(step, PlaceOrderRequest(
                symbol=self.intent.symbol, side=self.intent.side.opposite, type=OrderType.MARKET,
                quantity=request.amount, reduce_only=True, client_order_id=self._cid(step)))
        except ActivityError as err:
            kind, message = _failure(err)
            self._partial_outcome = f"partial close refused by the exchange: {message}"
            if kind == "reduce_only_rejected":  # nothing left to reduce: the stop fired meanwhile
                await self._exchange_changed()
            return
        st.reduce_seq += 1
        st.open_qty -= order.filled
        st.note(f"partial close ({request.reason}): {order.filled} @ {order.average_price}, {st.open_qty} left")
        self._partial_outcome = "done"
        if st.open_qty <= 0:
            await self._close(ExitReason.MANUAL, f"closed by the operator ({request.reason})")
            return
        self._record_position()
        self._show()

    async def _kill(self) -> TradeResult:
        st = self.state
        if self._watch is not None and not self._watch.done():
            _abandon(self._watch)
        for task in self._in_flight:  # an order in flight finishes first: then we know what exists
            try:
                await task
            except (ActivityError, _StopRefused, asyncio.CancelledError):
                pass
        if not st.status.is_final:
            st.note("killed by the operator")
            if st.status in (TradeStatus.OPENING, TradeStatus.OPEN, TradeStatus.CLOSING) or st.orders:
                await self._close(ExitReason.KILLED, "killed by the operator", final=TradeStatus.KILLED)
            else:
                await self._release_lock(cooldown=False)
                st.exit_reason, st.reason, st.stage = ExitReason.KILLED, "killed before the entry", Stage.DONE
                await self._set_status(TradeStatus.KILLED, sa.EXIT_REASON.value_set(ExitReason.KILLED.value))
        await self._drain_background()
        return self._result()

    # ========================================================== stage 8-9: close and feedback

    async def _close(self, reason: ExitReason, note: str, final: TradeStatus = TradeStatus.CLOSED,
                     reason_known: bool = False) -> None:
        """Reduce-only market for the rest, confirm flat, cancel protection, PnL, feedback."""
        st = self.state
        if st.status.is_final:
            return
        st.stage, st.reason = Stage.CLOSING, note
        await self._set_status(TradeStatus.CLOSING)
        closes_before = st.close_seq, len(st.orders)
        # Close first, cancel the stop after: the position is never without a resting stop.
        for _ in range(st.policy.max_close_rounds if st.policy else 5):
            try:
                if await self._shielded(self._close_round()):
                    break
            except ActivityError as err:
                st.note(f"close failed: {_failure(err)[1]}")
        else:
            st.reason = f"{note}; could not get flat: the stop stays, an operator must look"
            await self._set_status(TradeStatus.FAILED)
            return
        stop_reason = reason in (ExitReason.SL, ExitReason.TRAILING)
        if (not reason_known and not stop_reason and final is TradeStatus.CLOSED
                and (st.close_seq, len(st.orders)) == closes_before):
            # Flat before we sent anything: the resting stop may have beaten us to it (a TP or a
            # time limit racing a stop-out). The exchange decides the reason then.
            fired = await self._why_flat()
            if fired is not ExitReason.EXTERNAL and fired is not reason:
                st.note(f"the exchange stop had already closed the position ({fired.value}, not {reason.value})")
                reason = fired
        st.open_qty = Decimal(0)
        _, fills = await asyncio.gather(self._cancel_stops(), self._fills())
        await self._finish(reason, final, fills)

    async def _close_round(self) -> bool:
        """One reduce-only market close (`close`, then `close-2`... after a partial fill)."""
        st = self.state
        step = "close" if st.close_seq == 0 else f"close-{st.close_seq + 1}"
        result = await self._call(calls.CLOSE_POSITION, ClosePositionRequest(
            symbol=self.intent.symbol, client_order_id=self._cid(step)))
        if result.order is not None:
            self._remember(step, result.order)
        if result.remaining_quantity == 0:
            return True
        st.close_seq += 1
        return False

    async def _cancel_stops(self) -> None:
        st = self.state
        ids = [i for i in [st.stop_client_id, *st.stale_stop_ids] if i]
        if st.order_tag is not None and st.stop_seq == 0:
            # open_position may have placed `sl-1` in an attempt whose answer was lost (a kill or
            # a failed entry after it): an unknown id costs one look-up, a forgotten stop more.
            ids.append(self._cid("sl-1"))
        await asyncio.gather(*(self._call(calls.CANCEL_ORDER, OrderRef(
            symbol=self.intent.symbol, client_order_id=i, conditional=True)) for i in ids))
        st.stale_stop_ids = []

    async def _finish(self, reason: ExitReason, final: TradeStatus, fills: FillsResult) -> None:
        st, intent = self.state, self.intent
        st.stage = Stage.FEEDBACK
        every_fill = self._executions(fills)
        executions = [e for e in every_fill if e.client_order_id not in st.reported_orders]
        pnl = self._pnl(fills)
        st.pnl, st.exit_reason = pnl, reason
        st.closed_at_ms = max((f.time_ms for f in fills.fills), default=None) or st.last_price_ms
        closed = TradeClosedEvent(
            workflow_id=st.workflow_id, intent_id=intent.intent_id, symbol=intent.symbol,
            side=intent.side, quantity=st.entry_qty, entry_price=pnl.avg_entry_price if pnl else Decimal(0),
            exit_price=pnl.avg_exit_price if pnl else None, exit_reason=reason,
            realized_pnl=pnl.net_pnl if pnl else Decimal(0), gross_pnl=pnl.gross_pnl if pnl else Decimal(0),
            fees=pnl.fees if pnl else Decimal(0), funding=pnl.funding if pnl else Decimal(0),
            r_multiple=pnl.r_multiple if pnl else None, holding_s=pnl.holding_s if pnl else None,
            leverage=st.leverage or intent.leverage, confidence=intent.confidence, model=intent.model,
            opened_at_ms=st.opened_at_ms or 0, closed_at_ms=st.closed_at_ms or 0)
        outcome = TradeOutcome(
            workflow_id=st.workflow_id, symbol=intent.symbol, side=intent.side,
            model_version=intent.model, intent=intent.model_dump(mode="json"),
            features_at_entry=st.features_at_entry.model_dump(mode="json") if st.features_at_entry else {},
            levels={"planned": st.planned_levels.model_dump(mode="json") if st.planned_levels else None,
                    "final": st.exit.model_dump(mode="json") if st.exit else None},
            fills=every_fill, closed=closed, label=1 if closed.realized_pnl > 0 else 0)
        await self._drain_background()
        results = await asyncio.gather(
            self._release_lock(cooldown=True),
            self._call(calls.RECORD_CLOSE, RecordCloseRequest(closed=closed, executions=executions,
                                                             outcome=outcome)),
            return_exceptions=True)
        if isinstance(results[1], BaseException):
            st.note(f"feedback not recorded: {_failure(results[1])[1]}")
        st.stage = Stage.DONE
        await self._set_status(final, sa.EXIT_REASON.value_set(reason.value),
                               sa.REALIZED_PNL.value_set(float(closed.realized_pnl)))

    async def _fills(self) -> FillsResult:
        st = self.state
        since = st.opened_at_ms or min((o.time_ms for o in st.orders if o.time_ms), default=None)
        return await self._call(calls.GET_FILLS, FillsRequest(
            symbol=self.intent.symbol,
            client_order_ids=[o.client_order_id for o in st.orders if not o.conditional],
            since_ms=since, funding_since_ms=since))

    def _pnl(self, fills: FillsResult):
        side = self.intent.side
        entries = [PnlFill(side=side, price=f.price, qty=f.quantity, fee=f.fee, at=_utc(f.time_ms))
                   for f in fills.fills if f.side == side.value]
        exits = [PnlFill(side=side.opposite, price=f.price, qty=f.quantity, fee=f.fee, at=_utc(f.time_ms))
                 for f in fills.fills if f.side != side.value]
        if not entries:
            return None
        try:
            return realized_pnl(
                side, entries, exits, [PnlFunding(amount=p.amount, at=_utc(p.time_ms)) for p in fills.funding],
                initial_stop=self.state.exit.levels.stop_loss if self.state.exit else None,
                opened_at=_utc(self.state.opened_at_ms) if self.state.opened_at_ms else None)
        except ValueError as err:
            self.state.note(f"PnL from fills failed ({err})")
            return None

    def _executions(self, fills: FillsResult) -> list[ExecutionReport]:
        """One report per fill, named by the step of the order it belongs to (entry and TP orders
        were already published when they happened, as one entry per order: see `_finish`)."""
        st = self.state
        step_of = {o.client_order_id: o.step for o in st.orders}
        out = []
        for f in fills.fills:
            step = step_of.get(f.client_order_id or "", "exchange")
            if step == "exchange" and st.stop_client_id:
                step = "sl"  # a triggered stop's market order
            out.append(ExecutionReport(
                workflow_id=st.workflow_id, intent_id=self.intent.intent_id, symbol=self.intent.symbol,
                step=step, client_order_id=f.client_order_id, order_id=f.order_id, trade_id=f.trade_id,
                side=Side(f.side), quantity=f.quantity, price=f.price, fee=f.fee,
                reduce_only=f.side != self.intent.side.value, leverage=st.leverage, time_ms=f.time_ms))
        return out

    # ================================================================== small building blocks

    async def _reject(self, reason: str) -> TradeResult:
        st = self.state
        st.reason, st.stage = reason, Stage.DONE
        workflow.logger.info("trade rejected: %s", reason)
        await self._set_status(TradeStatus.REJECTED)
        return self._result()

    async def _release_lock(self, cooldown: bool, quick: bool = False) -> None:
        """Free the symbol; with `cooldown`, no new trade of it until the policy's cooldown has
        passed in market time after the close (`quick`: a bounded number of attempts)."""
        if self.intent is None:
            return
        st, policy = self.state, self.state.policy
        seconds = policy.cooldown_s if cooldown and policy else 0
        until = None
        if seconds:
            closed = st.closed_at_ms or st.last_price_ms or self._now_ms()
            until = closed + seconds * 1000
        call = calls.RELEASE_SYMBOL_LOCK_QUICK if quick else calls.RELEASE_SYMBOL_LOCK
        await self._call(call, ReleaseLockRequest(
            workflow_id=st.workflow_id, symbol=self.intent.symbol, cooldown_s=seconds,
            cooldown_until_ms=until))
        st.lock_held = False

    async def _set_status(self, status: TradeStatus, *extra) -> None:
        """Search attributes change with the status only (one history event per change)."""
        self.state.status = status
        workflow.upsert_search_attributes([sa.TRADE_STATUS.value_set(status.value), *extra])
        workflow.logger.info("trade %s", status.value)
        self._show()

    def _show(self) -> None:
        if self.intent is not None:
            workflow.set_current_details(details_markdown(self.intent, self.state))

    def _cid(self, step: str) -> str:
        return client_order_id(self.state.workflow_id, step, self.state.order_tag or "")

    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)

    async def _call(self, call: calls.Call, *args: Any) -> Any:
        return await workflow.execute_activity(call.name, *args, **call.options())

    async def _shielded(self, step: Coroutine) -> Any:
        """Run an order step to its end even if the workflow is cancelled meanwhile (kill)."""
        task = asyncio.ensure_future(step)
        self._in_flight.append(task)
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._in_flight.remove(task)

    async def _place(self, step: str, request: PlaceOrderRequest) -> OrderResult:
        async def place() -> OrderResult:
            order = await self._call(calls.PLACE_ORDER, request)
            self._remember(step, order)  # recorded even when a kill interrupted the caller
            return order
        return await self._shielded(place())

    async def _open_position(self, request: PlaceOrderRequest) -> OrderResult:
        """The entry and its stop in one activity; both recorded even when a kill interrupted."""
        async def open_() -> OrderResult:
            order = await self._call(calls.OPEN_POSITION, request)
            self._remember("entry", order)
            if order.protective_stop is not None:
                self._remember("sl-1", order.protective_stop)
                self.state.stop_seq, self.state.stop_client_id = 1, order.protective_stop.client_order_id
            return order
        return await self._shielded(open_())

    def _remember(self, step: str, order: OrderResult | None) -> None:
        if order is None:
            return
        st = self.state
        record = PlacedOrder(step=step, client_order_id=order.client_order_id, type=order.type,
                             side=order.side, quantity=order.quantity, trigger_price=order.trigger_price,
                             filled=order.filled, average_price=order.average_price,
                             time_ms=order.time_ms, conditional=order.conditional)
        st.orders = [o for o in st.orders if o.step != step] + [record]
        if step == "entry" and st.opened_at_ms is None and order.time_ms:
            st.opened_at_ms = order.time_ms

    def _record_position(self) -> None:
        """Keep `quantum:position:{symbol}` in step, in the background (never blocks trading)."""
        st = self.state
        if st.exit is None or st.open_qty <= 0:
            return
        st.position_version += 1
        ex = st.exit
        pending = [tp.price for tp in ex.levels.take_profits[ex.tps_done:]]
        snapshot = PositionSnapshot(
            workflow_id=st.workflow_id, symbol=self.intent.symbol, side=self.intent.side,
            quantity=st.open_qty, entry_price=st.entry_price, leverage=st.leverage, stop_loss=ex.stop,
            take_profit=pending[0] if pending else None, take_profits=pending, status=st.status.value,
            opened_at_ms=st.opened_at_ms, updated_at_ms=st.last_price_ms or st.opened_at_ms,
            version=st.position_version)
        executions = []
        for order in st.orders:  # fills of entry / TP orders not yet published, one entry each
            if order.conditional or order.filled <= 0 or order.average_price is None:
                continue
            if order.client_order_id in st.reported_orders or order.step.startswith("close"):
                continue
            st.reported_orders.append(order.client_order_id)
            executions.append(ExecutionReport(
                workflow_id=st.workflow_id, intent_id=self.intent.intent_id, symbol=self.intent.symbol,
                step=order.step, client_order_id=order.client_order_id, order_id=order.client_order_id,
                trade_id=f"order:{order.client_order_id}", side=Side(order.side), quantity=order.filled,
                price=order.average_price, reduce_only=order.step != "entry", leverage=st.leverage,
                time_ms=order.time_ms or st.last_price_ms or st.opened_at_ms))
        request = RecordPositionRequest(position=snapshot, executions=executions)
        self._background.append(asyncio.ensure_future(self._call(calls.RECORD_POSITION, request)))

    async def _drain_background(self) -> None:
        tasks, self._background = self._background, []
        for task in tasks:
            try:
                await task
            except ActivityError as err:
                self.state.note(f"position feedback not recorded: {_failure(err)[1]}")

    async def _continue_as_new(self) -> None:
        """Fresh history with the whole state; never with an order in flight (all are awaited)."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._drain_background()
        self.state.run += 1
        self.state.note(f"continued as new (run {self.state.run})")
        workflow.continue_as_new(args=[self._raw_intent, self.state])

    def _result(self) -> TradeResult:
        st, intent = self.state, self.intent
        pnl = st.pnl
        return TradeResult(
            workflow_id=st.workflow_id, status=st.status, exit_reason=st.exit_reason,
            realized_pnl=pnl.net_pnl if pnl else (Decimal(0) if st.status.is_final and st.orders else None),
            reason=st.reason, symbol=intent.symbol if intent else None,
            side=intent.side.value if intent else None, quantity=st.entry_qty,
            entry_price=pnl.avg_entry_price if pnl else st.entry_price,
            exit_price=pnl.avg_exit_price if pnl else None, fees=pnl.fees if pnl else None,
            funding=pnl.funding if pnl else None, r_multiple=pnl.r_multiple if pnl else None,
            holding_s=pnl.holding_s if pnl else None,
            details={"run": st.run, "orders": [o.client_order_id for o in st.orders]})
