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
    from activities.schemas.monitor import KillWatch, WatchEvent, WatchKind, WatchRequest
    from activities.schemas.orders import OrderRef, OrderType, PlaceOrderRequest, PositionRequest
    from trading.exits import ExitAction, ExitDecision
    from trading.reconcile import FindingKind
    from trading.levels import stop_would_trigger
    from trading.levels import validate_manual_levels
    from trading.models import ExitReason, TradeStatus
    from trading.sizing import floor_to_step
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    import workflows.activity_calls as calls
    from workflows.trade_state import AdjustLevelsRequest, AdjustLevelsResult
    from workflows.trade_support import StopRefused, abandon, failure_of



# Versioning (workflow.patched): the stop re-sized when the exchange's position size changed.
RESIZE_STOP_PATCH = "resize-stop-on-size-change"


class MonitoringSteps:
    def _watch_request(self) -> WatchRequest:
        st, policy = self.state, self.state.policy
        kill = None
        if policy.monitor.kill_score and st.features_at_entry is not None:
            kill = KillWatch(entry=st.features_at_entry, weights=policy.kill_weights,
                             threshold=policy.kill_threshold, age_horizon_s=policy.kill_age_horizon_s,
                             window=policy.monitor.kill_window)
        return WatchRequest(
            workflow_id=st.workflow_id, symbol=self.intent.symbol, exit=st.exit, exit_policy=policy.exits,
            paused=st.paused, kill=kill, session_cap_s=policy.monitor.session_cap_s,
            position_qty=st.open_qty, stop_client_order_id=st.stop_client_id,
            heartbeat_interval_s=policy.monitor.heartbeat_interval_s, publish=self._unpublished,
        )

    async def _watch_once(self) -> WatchEvent | None:
        """One monitor session; None when an operator interrupted it (or it failed)."""
        monitor = self.state.policy.monitor
        self._interrupt = False
        request = self._watch_request()
        self._watch = workflow.start_activity(
            calls.WATCH_POSITION.name, request,
            **calls.WATCH_POSITION.options(
                heartbeat_timeout=timedelta(seconds=monitor.heartbeat_timeout_s),
                start_to_close_timeout=timedelta(seconds=monitor.session_cap_s + 600)))
        handle = self._watch
        await workflow.wait_condition(lambda: handle.done() or self._interrupt)
        if not handle.done():
            abandon(handle)  # ABANDON: read-only, the session ends at its next heartbeat
            return None  # (the position record is handed to the next session again: idempotent)
        try:
            event = handle.result()
            self._unpublished = None  # the session published it as it started
            return event
        except ActivityError as err:
            self.state.note(f"monitor session failed: {failure_of(err)[1]}")
            await workflow.sleep(timedelta(seconds=5))
            return None

    async def _on_event(self, event: WatchEvent) -> None:
        """Act on what the monitor returned. It decided with `trading/exits.py`; nothing is
        decided again here (the session saw the same state this workflow holds)."""
        st = self.state
        if event.price is not None:
            st.last_price, st.last_price_ms = event.price, event.market_ms
        if event.kind is WatchKind.DECIDED and event.decision is not None:
            if event.kill_score is not None:
                st.kill = event.kill_score
            await self._act(event.decision)
        else:
            st.exit = event.state  # (a trailing extreme the session reached is kept)
            if event.kind is WatchKind.EXCHANGE_FILL:
                await self._exchange_changed()
        self._show()

    async def _act(self, decision: ExitDecision) -> None:
        st, before = self.state, self.state.exit
        action = decision.action
        if action is ExitAction.CLOSE_ALL:
            st.exit = decision.state
            await self._close(decision.reason, decision.note)
        elif action is ExitAction.TAKE_PROFIT:
            await self._harvest(decision)
        elif action is ExitAction.MOVE_STOP:
            # The stop moves only once the exchange holds the new one (`_place_stop`).
            st.exit = decision.state.model_copy(update={"stop": before.stop, "stop_kind": before.stop_kind})
            if await self._move_stop(decision.new_stop, decision.state.stop_kind):
                self._record_position()

    async def _harvest(self, decision: ExitDecision) -> None:
        """Partial close at a TP stage and the stop's move (break-even, trailing) in one activity.

        The TP counts as done only together with the filled quantity, so a query never sees a TP
        done and the position still whole; the stop moves only once the exchange holds it."""
        st, side, before = self.state, self.intent.side, self.state.exit
        harvested = decision.state.model_copy(update={"stop": before.stop, "stop_kind": before.stop_kind})
        index, kind, move_to = decision.take_profits[-1], decision.state.stop_kind, decision.new_stop
        qty = min(floor_to_step(st.entry_qty * decision.close_fraction, st.rules.step_size), st.open_qty)
        if qty >= st.open_qty:
            st.exit = harvested
            await self._close(ExitReason.TP, decision.note)
            return
        if qty <= 0 or qty < st.rules.min_qty:
            st.exit = harvested
            st.note(f"TP{index}: {qty} is below the minimum quantity, nothing harvested")
            if move_to is None or await self._move_stop(move_to, kind):
                self._record_position()
            return
        # A new stop the price is already through would be refused (-2021): harvest, then close.
        crossed = move_to is not None and st.last_price is not None and stop_would_trigger(side, move_to, st.last_price)
        step = f"tp{index}"
        try:
            result = await self._amend(
                reduce=(step, PlaceOrderRequest(
                    symbol=self.intent.symbol, side=side.opposite, type=OrderType.MARKET, quantity=qty,
                    reduce_only=True, client_order_id=self._cid(step))),
                stop_price=None if crossed else move_to, kind=kind)
        except ActivityError as err:
            st.exit = harvested  # a refused TP order is not retried at the next tick
            failure, message = failure_of(err)
            st.note(f"TP{index} order failed: {message}")
            if failure == "reduce_only_rejected":  # nothing left to reduce: the stop fired meanwhile
                await self._exchange_changed()
            return
        order = result.reduce
        st.exit = harvested.model_copy(update={"stop": st.exit.stop, "stop_kind": st.exit.stop_kind})
        st.open_qty -= order.filled
        st.note(f"TP{index}: {order.filled} closed @ {order.average_price}")
        if st.open_qty <= 0:
            await self._close(ExitReason.TP, decision.note)
            return
        if crossed or result.stop_crossed:
            await self._close(self._stop_reason(kind), f"new {kind.value.lower()} stop {move_to} already crossed")
            return
        if move_to is not None:
            if result.new_stop is None:
                st.note(f"stop move to {move_to} refused ({result.stop_error}); the previous stop stays")
            else:
                st.note(f"{kind.value.lower()} stop at {move_to}")
        self._record_position()

    async def _exchange_changed(self) -> None:
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
            if workflow.patched(RESIZE_STOP_PATCH) and st.exit is not None:
                # The resting stop still has the old size: re-sized at the same price (new stop,
                # then the old one cancelled), so all of the position stays protected.
                await self._move_stop(st.exit.stop, st.exit.stop_kind)
            self._record_position()

    async def _apply_notices(self) -> None:
        """What reconcile runs told (the `reconcile` signal), checked against the exchange here:
        a notice is a reason to look, never a fact to act on blindly."""
        st, notices = self.state, self._notices
        self._notices = []
        kinds = {n.kind for n in notices}
        for notice in notices:
            st.note(f"reconcile: {notice.kind.value}: {notice.detail}")
        if st.status is not TradeStatus.OPEN:
            return
        try:
            if kinds & {FindingKind.VANISHED_POSITION, FindingKind.SIZE_MISMATCH}:
                await self._exchange_changed()
            if FindingKind.MISSING_STOP in kinds and st.status is TradeStatus.OPEN:
                await self._rearm_stop()
        except ActivityError as err:  # an exchange outage: keep managing; the next run tells again
            st.note(f"reconcile: could not check the exchange: {failure_of(err)[1]}")

    async def _rearm_stop(self) -> None:
        """The stop is not resting (cancelled behind our back, expired): look it up, and place it
        again at the same price if it is gone; a stop that fired means the position changed."""
        st = self.state
        stop = None
        if st.stop_client_id is not None:
            stop = await self._call(calls.GET_ORDER, OrderRef(symbol=self.intent.symbol,
                                                              client_order_id=st.stop_client_id, conditional=True))
        if stop is not None and stop.is_open:
            st.note(f"stop {st.stop_client_id} is resting after all: nothing to do")
            return
        if stop is not None and stop.status == "closed":  # it fired: the position is smaller or gone
            await self._exchange_changed()
            return
        if await self._move_stop(st.exit.stop, st.exit.stop_kind):
            st.note(f"stop re-armed at {st.exit.stop} ({st.stop_client_id})")
            self._record_position()

    async def _why_flat(self) -> ExitReason:
        st = self.state
        if st.stop_client_id is not None:
            stop = await self._call(calls.GET_ORDER, OrderRef(symbol=self.intent.symbol,
                                                              client_order_id=st.stop_client_id,
                                                              conditional=True))
            if stop is not None and stop.status == "closed":
                return self._stop_reason(st.exit.stop_kind)
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
