"""Stages 8-9: the close (reduce-only market rounds until flat, protection cancelled), PnL from
the exchange's fills, and the feedback records: the execution reports, the position hash, the
closed-trade event and the learning outcome.

A mixin of `TradeWorkflow` (workflows/trade.py): its methods run in the workflow, on its state.
"""

from __future__ import annotations

from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.schemas.feedback import (
        ExecutionReport,
        PositionSnapshot,
        RecordCloseRequest,
        RecordPositionRequest,
        TradeClosedEvent,
        TradeOutcome,
    )
    from activities.schemas.orders import FillsRequest, FillsResult
    from trading.models import ExitReason, Side, TradeStatus
    from trading.pnl import Fill as PnlFill
    from trading.pnl import FundingPayment as PnlFunding
    from trading.pnl import realized_pnl
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    from trading.market_time import utc_of_ms
    import workflows.activity_calls as calls
    import common.search_attributes as sa
    from workflows.trade_state import Stage
    from workflows.trade_support import failure_of



class CloseSteps:
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
                closed = await self._shielded(self._close_round(cancel_stops=True, read_fills=True))
                if closed.remaining_quantity == 0:
                    break
            except ActivityError as err:
                st.note(f"close failed: {failure_of(err)[1]}")
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
        if closed.stops_not_cancelled:
            st.note(f"stops {closed.stops_not_cancelled} not cancelled at the close: retried")
            await self._cancel_stops(closed.stops_not_cancelled)
        fills = closed.fills
        if fills is None:
            st.note(f"fills not read ({closed.fills_error}): no PnL")
            fills = FillsResult(symbol=self.intent.symbol, fills=[], realized_pnl=Decimal(0), fees=Decimal(0),
                                funding_total=Decimal(0))
        await self._finish(reason, final, fills)

    async def _finish(self, reason: ExitReason, final: TradeStatus, fills: FillsResult) -> None:
        st, intent = self.state, self.intent
        st.stage = Stage.FEEDBACK
        self._show()
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
        try:  # the lock's release travels with the records: one activity
            await self._call(calls.RECORD_CLOSE, RecordCloseRequest(
                closed=closed, executions=executions, outcome=outcome, release=self._release_request(cooldown=True)))
            st.lock_held = False
        except ActivityError as err:
            st.note(f"feedback not recorded: {failure_of(err)[1]}")
            await self._release_lock(cooldown=True)
        st.stage = Stage.DONE
        await self._set_status(final, sa.EXIT_REASON.value_set(reason.value),
                               sa.REALIZED_PNL.value_set(float(closed.realized_pnl)))

    def _fills_request(self, also: str) -> FillsRequest:
        """Every fill of this trade: its orders' (and `also`, the close being sent) and the
        symbol's since the entry (a triggered stop's market order), with funding."""
        st = self.state
        since = st.opened_at_ms or min((o.time_ms for o in st.orders if o.time_ms), default=None)
        ids = [o.client_order_id for o in st.orders if not o.conditional]
        return FillsRequest(symbol=self.intent.symbol, client_order_ids=list(dict.fromkeys([*ids, also])),
                            since_ms=since, funding_since_ms=since)

    def _pnl(self, fills: FillsResult):
        side = self.intent.side
        entries = [PnlFill(side=side, price=f.price, qty=f.quantity, fee=f.fee, at=utc_of_ms(f.time_ms))
                   for f in fills.fills if f.side == side.value]
        exits = [PnlFill(side=side.opposite, price=f.price, qty=f.quantity, fee=f.fee, at=utc_of_ms(f.time_ms))
                 for f in fills.fills if f.side != side.value]
        adopted = self.state.adopted
        if adopted is not None:  # no entry fill of ours: the exchange's entry price when adopted
            entries = [PnlFill(side=side, price=adopted.entry_price, qty=adopted.quantity, fee=Decimal(0),
                               at=utc_of_ms(self.state.opened_at_ms))]
        if not entries:
            return None
        try:
            return realized_pnl(
                side, entries, exits, [PnlFunding(amount=p.amount, at=utc_of_ms(p.time_ms)) for p in fills.funding],
                initial_stop=self.state.exit.levels.stop_loss if self.state.exit else None,
                opened_at=utc_of_ms(self.state.opened_at_ms) if self.state.opened_at_ms else None)
        except ValueError as err:
            self.state.note(f"PnL from fills failed ({err})")
            return None

    def _executions(self, fills: FillsResult) -> list[ExecutionReport]:
        """One report per fill, named by the step of the order it belongs to (entry and TP orders
        were already published when they happened, as one entry per order: see `_finish`)."""
        st = self.state
        step_of = {o.client_order_id: o.step for o in st.orders}
        stop_ids = {i for i in [st.stop_client_id, *st.stale_stop_ids] if i}
        out = []
        for f in fills.fills:
            step = step_of.get(f.client_order_id or "")
            if step is None:
                # A triggered stop's market order carries no client id of ours (or the stop's own);
                # a fill under another client id is not ours: placed by hand, a liquidation...
                closing = f.side != self.intent.side.value
                stop_fill = f.client_order_id in stop_ids or (f.client_order_id is None and stop_ids and closing)
                step = "sl" if stop_fill else "exchange"
            out.append(ExecutionReport(
                workflow_id=st.workflow_id, intent_id=self.intent.intent_id, symbol=self.intent.symbol,
                step=step, client_order_id=f.client_order_id, order_id=f.order_id, trade_id=f.trade_id,
                side=Side(f.side), quantity=f.quantity, price=f.price, fee=f.fee,
                reduce_only=f.side != self.intent.side.value, leverage=st.leverage, time_ms=f.time_ms))
        return out

    def _record_position(self) -> None:
        """The position changed: the next monitor session publishes `quantum:position:{symbol}`
        and the new fills (`WatchRequest.publish`), so a change costs no activity of its own."""
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
        executions = list(self._unpublished.executions) if self._unpublished else []
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
        self._unpublished = RecordPositionRequest(position=snapshot, executions=executions)
