"""Stages 6-7: one monitor session at a time watches the position; each event it returns (a
level crossed, a candle closed, an exchange fill) is acted on here: harvest at the TPs,
break-even and trailing stop moves, the kill score, the time limit; and the operator's level
changes and partial closes, applied between sessions.

A mixin of `TradeWorkflow` (workflows/trade.py): its methods run in the workflow, on its state.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.schemas.monitor import (
        CrossedLevel,
        KillWatch,
        TrailingSpec,
        WatchEvent,
        WatchKind,
        WatchRequest,
    )
    from activities.schemas.orders import OrderRef, OrderType, PlaceOrderRequest, PositionRequest
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
    from trading.features import CANDLE_MS
    from trading.levels import validate_manual_levels
    from trading.models import ExitReason, Side, TradeStatus
    from trading.sizing import floor_to_step
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    import workflows.activity_calls as calls
    from workflows.trade_state import AdjustLevelsRequest, AdjustLevelsResult
    from workflows.trade_support import StopRefused, abandon, failure_of, utc_of_ms



class MonitoringSteps:
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
            abandon(handle)  # ABANDON: read-only, the session ends at its next heartbeat
            return None
        try:
            return handle.result()
        except ActivityError as err:
            self.state.note(f"monitor session failed: {failure_of(err)[1]}")
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
        return PriceMove(price=price, high=high, low=low, at=utc_of_ms(event.market_ms or self._now_ms()))

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
            kind, message = failure_of(err)
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
            except StopRefused as err:
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
            kind, message = failure_of(err)
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
