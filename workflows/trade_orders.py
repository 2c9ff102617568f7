"""Order mechanics of a trade: every placement by client id (looked up first, so a retried or
replayed step never places twice), shielded from workflow cancellation; stop placement and
moves (the new stop rests before the old one is cancelled), close rounds, cancels, the
symbol lock's release and the background feedback writes.

A mixin of `TradeWorkflow` (workflows/trade.py): its methods run in the workflow, on its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.schemas.gates import ReleaseLockRequest
    from activities.schemas.orders import (
        WOULD_TRIGGER_IMMEDIATELY,
        AmendRequest,
        AmendResult,
        ClosePositionRequest,
        ClosePositionResult,
        OrderRef,
        OrderResult,
        OrderType,
        PlaceOrderRequest,
    )
    from trading.client_ids import client_order_id
    from trading.exits import StopKind
    from trading.levels import stop_would_trigger
    from trading.models import ExitReason
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    import workflows.activity_calls as calls
    from workflows.trade_state import PlacedOrder
    from workflows.trade_support import StopRefused, failure_of


class OrderSteps:
    async def _place_stop(self, price: Decimal, kind: StopKind | None = None) -> None:
        """Place `sl-{n+1}` at `price`; the previous stop is cancelled only once the new one rests."""
        st, side = self.state, self.intent.side
        if st.last_price is not None and stop_would_trigger(side, price, st.last_price):
            raise StopRefused(f"stop {price} is already crossed by the price {st.last_price}", crossed=True)
        if st.stop_client_id is not None:  # a move: new stop and cancel of the old in one activity
            result = await self._amend(stop_price=price, kind=kind)
            if result.new_stop is None:
                raise StopRefused(result.stop_error or "refused", crossed=result.stop_crossed)
            return
        step = f"sl-{st.stop_seq + 1}"  # the first stop (the entry activity could not place it)
        try:
            await self._place(step, self._stop_order(step, price, st.open_qty))
        except ActivityError as err:
            kind_, message = failure_of(err)
            raise StopRefused(message, crossed=kind_ == WOULD_TRIGGER_IMMEDIATELY) from None
        st.stop_seq, st.stop_client_id = st.stop_seq + 1, self._cid(step)
        st.exit = st.exit.model_copy(update={"stop": price, "stop_kind": kind or st.exit.stop_kind})

    def _stop_order(self, step: str, price: Decimal, quantity: Decimal) -> PlaceOrderRequest:
        return PlaceOrderRequest(
            symbol=self.intent.symbol, side=self.intent.side.opposite, type=OrderType.STOP_MARKET,
            quantity=quantity, trigger_price=price, reduce_only=True, client_order_id=self._cid(step))

    async def _amend(self, *, reduce: tuple[str, PlaceOrderRequest] | None = None,
                     stop_price: Decimal | None = None, kind: StopKind | None = None) -> AmendResult:
        """One `amend_position`: the reduce-only `reduce` (step, order), then the stop
        `sl-{n+1}` at `stop_price` replacing the resting one. What it placed is recorded even
        when a kill interrupted the caller; a refused stop leaves the old one in force."""
        st = self.state
        step = f"sl-{st.stop_seq + 1}"
        previous = st.stop_client_id
        request = AmendRequest(
            symbol=self.intent.symbol, reduce=reduce[1] if reduce else None,
            new_stop=self._stop_order(step, stop_price, st.open_qty) if stop_price is not None else None,
            replaced_stop_client_order_id=previous if stop_price is not None else None)

        async def amend() -> AmendResult:
            result = await self._call(calls.AMEND_POSITION, request)
            if reduce is not None:
                self._remember(reduce[0], result.reduce)
            if result.new_stop is not None:
                self._remember(step, result.new_stop)
                st.stop_seq, st.stop_client_id = st.stop_seq + 1, self._cid(step)
                st.exit = st.exit.model_copy(update={"stop": stop_price, "stop_kind": kind or st.exit.stop_kind})
                if previous is not None and not result.replaced_stop_cancelled:
                    st.stale_stop_ids.append(previous)  # cancelled again at the close
            return result
        return await self._shielded(amend())

    async def _move_stop(self, new_stop: Decimal, kind: StopKind) -> bool:
        """Replace the resting stop; a stop the market already crossed closes at market."""
        st = self.state
        try:
            await self._place_stop(new_stop, kind)
        except StopRefused as err:
            if err.crossed:
                await self._close(self._stop_reason(kind), f"new {kind.value.lower()} stop {new_stop} already crossed")
            else:
                st.note(f"stop move to {new_stop} refused ({err}); the previous stop stays")
            return False
        st.note(f"{kind.value.lower()} stop at {new_stop}")
        return True

    @staticmethod
    def _stop_reason(kind: StopKind) -> ExitReason:
        """Why a trade closed at its stop (or at a stop it could not place)."""
        return ExitReason.TRAILING if kind is StopKind.TRAILING else ExitReason.SL

    async def _close_round(self, *, cancel_stops: bool = False, read_fills: bool = False) -> ClosePositionResult:
        """One reduce-only market close (`close`, then `close-2`... after a partial fill). Once
        flat, the same activity cancels the trade's stops and reads its fills, if asked."""
        st = self.state
        step = "close" if st.close_seq == 0 else f"close-{st.close_seq + 1}"
        cid = self._cid(step)
        result = await self._call(calls.CLOSE_POSITION, ClosePositionRequest(
            symbol=self.intent.symbol, client_order_id=cid,
            cancel_stop_client_order_ids=self._stop_ids() if cancel_stops else [],
            fills=self._fills_request(also=cid) if read_fills else None))
        if result.order is not None:
            self._remember(step, result.order)
        if result.remaining_quantity == 0:
            return result
        st.close_seq += 1
        return result

    def _stop_ids(self) -> list[str]:
        """Every stop of this trade that may still rest on the exchange."""
        st = self.state
        ids = [i for i in [st.stop_client_id, *st.stale_stop_ids] if i]
        if st.stop_seq == 0:
            # open_position may have placed `sl-1` in an attempt whose answer was lost (a kill or
            # a failed entry after it): an unknown id costs one look-up, a forgotten stop more.
            ids.append(self._cid("sl-1"))
        return list(dict.fromkeys(ids))

    async def _cancel_stops(self, ids: list[str]) -> None:
        """Cancel stops `_close_round` could not (each retried until done)."""
        await asyncio.gather(*(self._call(calls.CANCEL_ORDER, OrderRef(
            symbol=self.intent.symbol, client_order_id=i, conditional=True)) for i in ids))
        self.state.stale_stop_ids = []

    async def _call(self, call: calls.Call, *args: Any) -> Any:
        if call.local:
            return await workflow.execute_local_activity(call.name, *args, **call.local_options())
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

    def _cid(self, step: str) -> str:
        return client_order_id(self.state.workflow_id, step, self.state.order_tag or "")

    async def _release_lock(self, cooldown: bool, quick: bool = False) -> None:
        """Free the symbol (`quick`: a bounded number of attempts)."""
        if self.intent is None:
            return
        call = calls.RELEASE_SYMBOL_LOCK_QUICK if quick else calls.RELEASE_SYMBOL_LOCK
        await self._call(call, self._release_request(cooldown))
        self.state.lock_held = False

    def _release_request(self, cooldown: bool) -> ReleaseLockRequest:
        """With `cooldown`, no new trade of the symbol until the policy's cooldown has passed in
        market time after the close."""
        st, policy = self.state, self.state.policy
        seconds = policy.cooldown_s if cooldown and policy else 0
        until = None
        if seconds:
            closed = st.closed_at_ms or st.last_price_ms or self._now_ms()
            until = closed + seconds * 1000
        return ReleaseLockRequest(workflow_id=st.workflow_id, symbol=self.intent.symbol, cooldown_s=seconds,
                                  cooldown_until_ms=until)
