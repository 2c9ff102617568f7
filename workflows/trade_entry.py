"""Stages 2-5 of a trade: sizing at the gates' price, the adaptive levels, the entry (with its
protective stop in one activity) and the protection that rests on the exchange until flat.

A mixin of `TradeWorkflow` (workflows/trade.py): its methods run in the workflow, on its state.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.schemas.gates import GateReport
    from activities.schemas.orders import (
        LATE_ENTRY_REFUSED,
        OrderRef,
        OrderType,
        PlaceOrderRequest,
        ProtectiveStop,
    )
    from trading.exits import ExitState
    from trading.levels import rebase_levels
    from trading.models import ExitReason, TradeStatus
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    from trading.market_time import utc_of_ms
    import workflows.activity_calls as calls
    import common.search_attributes as sa
    from workflows.trade_state import Stage
    from workflows.trade_support import StopRefused, failure_of



class EntrySteps:
    async def _size(self, report: GateReport) -> bool:
        """Stages 2-3: the size and the adaptive levels the gates planned at today's price
        (re-based on the real fill by `_enter`); False: REJECTED."""
        st = self.state
        st.stage = Stage.SIZING
        self._show()
        st.rules = report.market_rules
        # The gates' plan (what they checked: trading/entry_plan.py) is what opens; never planned
        # again here.
        plan = report.plan
        if plan is None:
            await self._release_lock(cooldown=False)
            await self._reject("sizing: the gates passed without an entry plan")
            return False
        st.planned_levels, sizing = plan.levels, plan.sizing
        st.sizing = sizing
        if report.entry_guard is not None:  # (its clock starts when the gates read the price)
            st.entry_guard = report.entry_guard.model_copy(update={"planned_stop": st.planned_levels.stop_loss})
        if not sizing.ok:
            await self._release_lock(cooldown=False)
            await self._reject(f"sizing: {sizing.rejected_reason}")
            return False
        st.leverage = sizing.leverage
        st.note(f"size {sizing.quantity} @ ~{report.price} ×{sizing.leverage} ({sizing.binding_cap} cap)")
        if self._close_request is not None:
            await self._release_lock(cooldown=False)
            await self._reject(f"closed by the operator before the entry ({self._close_request.reason})")
            return False
        return True

    async def _enter(self) -> bool:
        """Stage 4: the entry order with its protective stop in one activity; False: the trade
        ended (REJECTED late, or FAILED with nothing left open)."""
        intent, st = self.intent, self.state
        st.stage = Stage.ENTRY
        await self._set_status(TradeStatus.OPENING, sa.LEVERAGE.value_set(float(st.leverage)))
        request = PlaceOrderRequest(  # leverage (isolated) is set by the same activity, just before
            symbol=intent.symbol, side=intent.side, type=OrderType.MARKET, leverage=st.leverage,
            quantity=st.sizing.quantity, client_order_id=self._cid("entry"))
        try:
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
            kind, message = failure_of(err)
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
        st.exit = ExitState.start(levels, opened_at=utc_of_ms(st.opened_at_ms))
        st.liquidation_price = order.liquidation_price
        st.note(f"entry filled {order.filled} @ {order.average_price}")
        if order.protective_stop is not None:  # placed by the entry activity itself
            stop = order.protective_stop
            if stop.trigger_price is not None and stop.trigger_price != levels.stop_loss:
                st.note(f"stop rests at {stop.trigger_price}, planned {levels.stop_loss}")
                st.exit = st.exit.model_copy(update={"stop": stop.trigger_price})
        elif order.protective_stop_error:
            self._stop_refused = StopRefused(order.protective_stop_error, order.protective_stop_crossed)
        return True

    async def _take_over(self, report: GateReport) -> bool:
        """Stages 2-4 of an adopted position (reconcile found it with no workflow): the size and
        price are the exchange's, the levels the gates planned at that entry price. Nothing is
        sent; `_protect` places the stop next (or closes at market if the price is already
        through it)."""
        st, adopted = self.state, self.state.adopted
        st.stage = Stage.ENTRY
        st.rules, plan = report.market_rules, report.plan
        if plan is None:
            await self._release_lock(cooldown=False)
            await self._reject("adopt: the gates passed without levels")
            return False
        st.planned_levels, st.sizing, st.leverage = plan.levels, plan.sizing, plan.sizing.leverage
        await self._set_status(TradeStatus.OPENING, sa.LEVERAGE.value_set(float(st.leverage)))
        st.entry_qty = st.open_qty = adopted.quantity
        st.entry_price = adopted.entry_price
        st.opened_at_ms = report.price_time_ms or self._now_ms()
        st.last_price, st.last_price_ms = report.price or adopted.entry_price, st.opened_at_ms
        st.exit = ExitState.start(plan.levels, opened_at=utc_of_ms(st.opened_at_ms))
        st.note(f"adopted {adopted.quantity} @ {adopted.entry_price} (reconcile run {adopted.reconcile_run_id})")
        return True

    async def _abort_entry(self, why: str) -> bool:
        """Entry failed: make sure nothing is open (an unknown outcome may have filled), FAILED."""
        st = self.state
        st.note(why)
        try:
            # open_position may have placed `sl-1` before its last attempt failed: once flat,
            # nothing of this trade may rest on the exchange (an unknown id is a no-op).
            closed = await self._shielded(self._close_round(cancel_stops=True))
            flat = closed.remaining_quantity == 0
        except ActivityError as err:
            flat = False
            why += f"; could not confirm flat: {failure_of(err)[1]}"
        if flat:
            if closed.stops_not_cancelled:
                await self._cancel_stops(closed.stops_not_cancelled)
            await self._release_lock(cooldown=False)
        st.reason, st.stage = why, Stage.DONE
        await self._set_status(TradeStatus.FAILED)
        return False

    async def _protect(self) -> None:
        """Stage 5: the stop rests before the trade is OPEN: usually placed by the entry activity
        (`sl-1`, which also read the liquidation price); placed here when the entry came without it."""
        st = self.state
        st.stage = Stage.PROTECTION
        self._show()
        if self._stop_refused is not None:  # the entry activity's stop was refused on its merits
            stop = self._stop_refused
        elif st.stop_client_id is None:
            try:
                await self._place_stop(st.exit.stop)
                stop = None
            except StopRefused as err:
                stop = err
        else:
            stop = None
        if stop is not None:
            reason = ExitReason.SL if stop.crossed else ExitReason.PROTECTION_FAILED
            await self._close(reason, f"protective stop not placed ({stop}): closed at market")
            return
        if st.liquidation_price is None:
            st.note("liquidation price unknown (not read with the entry)")
        await self._set_status(TradeStatus.OPEN)
        self._record_position()
