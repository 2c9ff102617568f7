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
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.schemas.feedback import RecordPositionRequest
    from activities.schemas.gates import AdoptPosition, GateReport, GateRequest, GateVerdict
    from activities.schemas.policy import TradePolicy
    from trading.client_ids import run_tag
    from trading.intent import IntentError, TradeIntent, parse_stream_fields
    from trading.models import ExitReason, TradeStatus
    from trading.sizing import floor_to_step
    # `import a.b as c`, not `from a import b`: the sandbox already holds its own `workflows`
    # package (the parent of this module), so a from-import of a sibling would re-execute the
    # sibling inside the sandbox for every workflow run instead of passing it through.
    import workflows.activity_calls as calls
    import common.search_attributes as sa
    from workflows.trade_state import (
        AdjustLevelsRequest,
        AdjustLevelsResult,
        CloseRequest,
        ReconcileNotice,
        Stage,
        StaleAtIntake,
        TradeResult,
        TradeState,
    )
    from workflows.trade_view import details_markdown
    # The stages' steps (mixins of TradeWorkflow): passed through like the modules above, so a
    # workflow run re-executes this module only (tests/unit/test_workflow_imports.py).
    from workflows.trade_close import CloseSteps
    from workflows.trade_entry import EntrySteps
    from workflows.trade_monitoring import MonitoringSteps
    from workflows.trade_orders import OrderSteps
    from workflows.trade_support import StopRefused, abandon, failure_of

def _typed(model: type, value: Any) -> Any:
    """`value` as `model` (a dict when the SDK decoded without type hints); None stays None."""
    return value if value is None or isinstance(value, model) else model.model_validate(value)


def _refused(message: str) -> ApplicationError:
    """A validator's refusal: the request is wrong for this trade's state, and asking again
    unchanged cannot help (non-retryable; nothing was written to history)."""
    return ApplicationError(message, type="UpdateRefused", non_retryable=True)


@workflow.defn(name="TradeWorkflow")
class TradeWorkflow(EntrySteps, MonitoringSteps, OrderSteps, CloseSteps):
    """The nine stages, in order, in `run` below; the steps of each stage are the mixins'
    methods (trade_entry: 2-5, trade_monitoring: 6-7, trade_close: 8-9, trade_orders: the order
    mechanics they share)."""

    @workflow.init
    def __init__(self, intent: dict[str, Any], carried: TradeState | None = None,
                 stale: StaleAtIntake | None = None, adopt: AdoptPosition | None = None) -> None:
        self._raw_intent = intent
        self.intent: TradeIntent | None = None
        self._invalid: str | None = None
        try:
            self.intent = parse_stream_fields(intent) if isinstance(intent, dict) else None
            if self.intent is None:
                self._invalid = f"the input must be a JSON object of intent fields, got {type(intent).__name__}"
        except IntentError as err:
            self._invalid = str(err)
        # The SDK decodes by the type hints only when every parameter got an argument: a run
        # continued as new (2 arguments of 3) hands `carried` over as a plain dict.
        carried, self._stale = _typed(TradeState, carried), _typed(StaleAtIntake, stale)
        self._carried = carried is not None
        self.state = carried or TradeState(workflow_id=workflow.info().workflow_id)
        if not self._carried and adopt is not None:  # reconcile hands over an orphan position
            self.state.adopted = _typed(AdoptPosition, adopt)
        self._close_request: CloseRequest | None = None
        self._adjust_request: AdjustLevelsRequest | None = None
        self._adjust_outcome: AdjustLevelsResult | str | None = None
        self._partial_request: CloseRequest | None = None
        self._partial_outcome: str | None = None  # "done", or why the partial close was refused
        self._interrupt = False
        self._watch: workflow.ActivityHandle | None = None
        self._stop_refused: StopRefused | None = None  # by the exchange, in the entry activity
        self._in_flight: list[asyncio.Task] = []  # shielded order steps
        # The position record the next monitor session publishes (`_record_position`).
        self._unpublished: RecordPositionRequest | None = None
        self._notices: list[ReconcileNotice] = []  # from reconcile runs, handled between sessions

    # ============================================================================ the lifecycle

    @workflow.run
    async def run(self, intent: dict[str, Any], carried: TradeState | None = None,
                  stale: StaleAtIntake | None = None, adopt: AdoptPosition | None = None) -> TradeResult:
        try:
            if self.intent is None:
                return await self._reject(f"invalid intent: {self._invalid}")
            stale = self._stale  # (the arguments as `__init__` typed them)
            if stale is not None and not self._carried:
                # 1. Gates, decided before any: the intake's clock already proves the intent stale.
                self._announce()
                self.state.gates = [GateVerdict(name="stale_intent", passed=False, detail=stale.detail)]
                return await self._reject(f"stale_intent: {stale.detail}")
            st = self.state
            if not self._carried and st.adopted is not None:
                # An orphan position reconcile found: the gates take the lock and plan its levels,
                # the position is taken as it is (no entry order), then protected and managed.
                report = await self._gates()                                     # 1. gates
                if report is not None and await self._take_over(report):        # 2-4. as found
                    await self._protect()                                        # 5. protection
            elif not self._carried:  # (a run continued as new resumes at stage 6)
                report = await self._gates()                                     # 1. gates
                if (report is not None and await self._size(report)             # 2-3. sizing, levels
                        and await self._enter()):                                # 4. entry
                    await self._protect()                                        # 5. protection
            if not st.status.is_final:
                # 6-7. monitoring and harvest, until an exit decision (or the operator) closes
                # the trade: 8. close and 9. feedback then run from `_close` (trade_close.py).
                await self._manage_until_closed()
            return self._result()
        except asyncio.CancelledError:
            # Workflow cancellation = operator kill: flatten, cancel protection, end as KILLED.
            return await self._kill()

    async def _gates(self) -> GateReport | None:
        """Stage 1: every verdict in one local activity; the symbol lock is taken only if all
        pass. The report also carries the trade's policy, the entry features (kill score) and the
        entry plan: every extra activity would cost the history events. None: REJECTED."""
        intent, st = self.intent, self.state
        # Client order ids carry a tag of the first run id: another trade reusing this workflow id
        # can never take this one's orders for its own (and the gates refuse a reused id).
        first_run_id = workflow.info().first_execution_run_id
        st.order_tag = run_tag(first_run_id)
        self._announce()
        try:
            report = await self._call(calls.RUN_GATES, GateRequest(
                workflow_id=st.workflow_id, intent=intent, first_run_id=first_run_id, adopt=st.adopted))
        except FailureError as err:  # (a local activity's failure may come unwrapped, no ActivityError)
            why = f"gates could not run: {failure_of(err)[1]}"
            try:  # a lost attempt may have taken the lock; tried within a short budget
                await self._release_lock(cooldown=False, quick=True)
            except ActivityError as release_err:
                why += f"; the symbol lock could not be released either: {failure_of(release_err)[1]}"
            await self._reject(why)
            return None
        st.policy = report.policy or TradePolicy()
        st.features_at_entry = report.features
        st.gates = report.verdicts
        if not report.passed:
            await self._reject(report.rejection_reason or "rejected by the gates")
            return None
        st.lock_held = report.lock_acquired
        return report

    def _announce(self) -> None:
        """The trade's search attributes (PENDING) and details, before its first decision."""
        intent = self.intent
        if workflow.info().typed_search_attributes.get(sa.SYMBOL) == intent.symbol:
            self._show()  # set by the starter (workflows/starter.py): no history event needed
            return
        workflow.upsert_search_attributes([
            sa.SYMBOL.value_set(intent.symbol), sa.SIDE.value_set(intent.side.value),
            sa.CONFIDENCE.value_set(intent.confidence), sa.LEVERAGE.value_set(float(intent.leverage)),
            sa.MODEL_VERSION.value_set(intent.model), sa.INTENT_SOURCE.value_set(intent.source or "unknown"),
            sa.TRADE_STATUS.value_set(TradeStatus.PENDING.value),
        ])
        self._show()

    async def _manage_until_closed(self) -> None:
        """Stages 6-7: monitoring and harvest, until a close (stages 8-9 run from `_close`)."""
        st = self.state
        while not st.status.is_final:
            st.stage = Stage.MONITORING
            self._show()  # the Web UI's details follow the stage and the last price seen
            if self._close_request is not None:
                await self._close(ExitReason.MANUAL, f"closed by the operator ({self._close_request.reason})")
                break
            if self._adjust_request is not None:
                await self._apply_adjustment()
                continue
            if self._partial_request is not None:
                await self._apply_partial_close()
                continue
            if self._notices:
                await self._apply_notices()
                continue
            if workflow.info().is_continue_as_new_suggested():
                await self._continue_as_new()
            event = await self._watch_once()
            if event is not None:
                await self._on_event(event)

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

    @workflow.signal(name="reconcile")
    def reconcile(self, notice: ReconcileNotice) -> None:
        """A reconcile run saw this trade's position vanish or change size, or its stop missing:
        checked against the exchange and acted on between monitor sessions."""
        if not self.state.status.is_final:
            self._notices.append(_typed(ReconcileNotice, notice))
            self._interrupt = True

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
            raise _refused(f"the trade is already {st.status.value}: nothing to close")
        if st.status is TradeStatus.CLOSING or self._close_request is not None:
            raise _refused("the trade is already closing")
        if request is None or request.amount is None or request.amount >= st.open_qty:
            return
        if st.status is not TradeStatus.OPEN or st.rules is None:
            raise _refused(f"amount: a partial close needs an OPEN trade (it is {st.status.value})")
        if self._partial_request is not None or self._adjust_request is not None:
            raise _refused("another operator change is in progress")
        if floor_to_step(request.amount, st.rules.step_size) != request.amount:
            raise _refused(f"amount: {request.amount} is not a multiple of the step size {st.rules.step_size}")
        if request.amount < st.rules.min_qty:
            raise _refused(f"amount: {request.amount} is below the minimum quantity {st.rules.min_qty}")

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
            raise _refused("; ".join(problems))

    async def _kill(self) -> TradeResult:
        st = self.state
        if self._watch is not None and not self._watch.done():
            abandon(self._watch)
        for task in self._in_flight:  # an order in flight finishes first: then we know what exists
            try:
                await task
            except (ActivityError, StopRefused, asyncio.CancelledError) as err:
                # The close below finds what exists on the exchange; the failure is still told.
                st.note(f"an order in flight when killed failed: {failure_of(err)[1] or type(err).__name__}")
        if not st.status.is_final:
            st.note("killed by the operator")
            if st.status in (TradeStatus.OPENING, TradeStatus.OPEN, TradeStatus.CLOSING) or st.orders:
                await self._close(ExitReason.KILLED, "killed by the operator", final=TradeStatus.KILLED)
            else:
                await self._release_lock(cooldown=False)
                st.exit_reason, st.reason, st.stage = ExitReason.KILLED, "killed before the entry", Stage.DONE
                await self._set_status(TradeStatus.KILLED, sa.EXIT_REASON.value_set(ExitReason.KILLED.value))
        return self._result()

    # ================================================================== small building blocks

    async def _reject(self, reason: str) -> TradeResult:
        st = self.state
        st.reason, st.stage = reason, Stage.DONE
        workflow.logger.info("trade rejected: %s", reason)
        await self._set_status(TradeStatus.REJECTED)
        return self._result()

    async def _set_status(self, status: TradeStatus, *extra) -> None:
        """Search attributes change with the status only (one history event per change)."""
        self.state.status = status
        workflow.upsert_search_attributes([sa.TRADE_STATUS.value_set(status.value), *extra])
        workflow.logger.info("trade %s", status.value)
        self._show()

    def _show(self) -> None:
        if self.intent is not None:
            workflow.set_current_details(details_markdown(self.intent, self.state))

    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)

    async def _continue_as_new(self) -> None:
        """Fresh history with the whole state; never with an order in flight (all are awaited)."""
        await workflow.wait_condition(workflow.all_handlers_finished)
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
