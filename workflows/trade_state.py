"""Everything a TradeWorkflow knows about its trade: the `state` query's answer and the value
carried through continue-as-new, plus the workflow's update arguments and its result.

One model for both, so what an operator sees is exactly what the next run resumes from.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from activities.schemas.gates import AdoptPosition, GateVerdict
from activities.schemas.market import SymbolRules
from activities.schemas.policy import TradePolicy
from trading.entry_checks import EntryGuard
from trading.exits import ExitState, KillScore
from trading.features import MarketFeatures
from trading.levels import Levels
from trading.models import ExitReason, TradeStatus
from trading.pnl import TradePnl
from trading.reconcile import FindingKind
from trading.sizing import SizingResult

MAX_NOTES = 30  # the state's event log keeps the newest notes only (it rides in every query)


class Stage(StrEnum):
    """The SPEC's stage list; `stage` says which one the trade is in."""

    GATES = "GATES"
    SIZING = "SIZING"
    ENTRY = "ENTRY"
    PROTECTION = "PROTECTION"
    MONITORING = "MONITORING"
    CLOSING = "CLOSING"
    FEEDBACK = "FEEDBACK"
    DONE = "DONE"


class PlacedOrder(BaseModel):
    """An order this trade sent (by its client id): what fills and cancels are looked up by."""

    step: str
    client_order_id: str
    type: str
    side: str
    quantity: Decimal
    trigger_price: Decimal | None = None
    filled: Decimal = Decimal(0)
    average_price: Decimal | None = None
    time_ms: int | None = None
    conditional: bool = False


class TradeState(BaseModel):
    workflow_id: str
    status: TradeStatus = TradeStatus.PENDING
    stage: Stage = Stage.GATES
    reason: str | None = None  # rejection / failure / close note
    exit_reason: ExitReason | None = None
    policy: TradePolicy | None = None
    gates: list[GateVerdict] = Field(default_factory=list)
    lock_held: bool = False
    rules: SymbolRules | None = None
    sizing: SizingResult | None = None
    planned_levels: Levels | None = None  # at the gate's price, before the fill
    exit: ExitState | None = None  # levels re-based on the fill, the stop in force, TPs done
    leverage: int | None = None
    entry_qty: Decimal = Decimal(0)  # contracts filled by the entry
    open_qty: Decimal = Decimal(0)  # contracts still open
    entry_price: Decimal | None = None
    liquidation_price: Decimal | None = None
    opened_at_ms: int | None = None  # market time of the entry fill
    closed_at_ms: int | None = None
    orders: list[PlacedOrder] = Field(default_factory=list)
    stop_seq: int = 0  # the resting stop is `sl-{stop_seq}`
    stop_client_id: str | None = None
    stale_stop_ids: list[str] = Field(default_factory=list)  # replaced stops whose cancel failed
    adopted: AdoptPosition | None = None  # taken over from reconcile: no entry order of ours
    close_seq: int = 0
    reduce_seq: int = 0  # partial closes by the operator: `reduce-{n}`
    last_price: Decimal | None = None
    last_price_ms: int | None = None
    features_at_entry: MarketFeatures | None = None
    kill: KillScore | None = None  # the last kill score the monitor reported
    pnl: TradePnl | None = None
    paused: bool = False
    position_version: int = 0
    reported_orders: list[str] = Field(default_factory=list)  # client ids already on execution.result
    run: int = 1  # 1 + continue-as-new count
    # Client order ids carry this tag (hash of the first run id): orders of another run under
    # the same workflow id are never taken for this trade's. None: a run from before the tag.
    order_tag: str | None = None
    entry_guard: EntryGuard | None = None  # what a late entry re-checks
    notes: list[str] = Field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes = [*self.notes, text][-MAX_NOTES:]

    def order(self, step: str) -> PlacedOrder | None:
        return next((o for o in self.orders if o.step == step), None)


class StaleAtIntake(BaseModel):
    """The intake saw the intent stale for sure: older than the gates' limit at the market time of
    the feed's latest price (a lower bound of the market's now, which only moves forward). The
    workflow then ends REJECTED in its first task, with no activity (a replayed backlog costs the
    server one workflow task per intent)."""

    market_ms: int  # the feed's latest exchange time for the symbol
    age_s: float  # the intent's age at that time
    max_age_s: float  # the gates' limit (QT_RISK_MAX_INTENT_AGE_S)

    @property
    def detail(self) -> str:  # the stale_intent gate's words
        return (f"intent is stale: {self.age_s:.0f} s old at market time (max {self.max_age_s:g} s; "
                "seen by the intake, from the market feed's clock)")


class ReconcileNotice(BaseModel):
    """The `reconcile` signal: what a reconcile run saw of this trade on the exchange. The
    workflow does not take it on trust: it reads the exchange itself, then acts."""

    kind: FindingKind  # VANISHED_POSITION, SIZE_MISMATCH or MISSING_STOP
    detail: str
    run_id: str  # the ReconcileWorkflow run that saw it


class AdjustLevelsRequest(BaseModel):
    """New stop and/or take-profit prices for an OPEN trade (operator update)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"stop_loss": "62500", "reason": "tighter after the news"},
        {"take_profits": ["64000", "64800", "65500"]}]})

    stop_loss: Decimal | None = None
    # Prices for the take-profits still pending, nearest first (as many as are pending).
    take_profits: list[Decimal] | None = Field(None, max_length=20)
    # Bounded: the request is kept in the workflow's state, and an unbounded text (3 MB tried)
    # made every later workflow task too large for Temporal.
    reason: str = Field("", max_length=1024)


class AdjustLevelsResult(BaseModel):
    stop_loss: Decimal
    take_profits: list[Decimal]
    note: str


class CloseRequest(BaseModel):
    """Close at market now: everything, or `amount` contracts (a partial close: the rest stays
    open and managed, its stop resting). An amount of the whole position or more closes it all."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "manual"},
                                                              {"reason": "take some off", "amount": "0.004"}]})

    reason: str = Field("operator", max_length=1024)
    amount: Decimal | None = Field(None, gt=0, lt=Decimal("1e12"), description="contracts to close now")


class TradeResult(BaseModel):
    """The workflow's result: enough for the CLI, the API and the demo summary."""

    workflow_id: str
    status: TradeStatus
    exit_reason: ExitReason | None = None
    realized_pnl: Decimal | None = None  # net of fees and funding, USDT
    reason: str | None = None
    symbol: str | None = None
    side: str | None = None
    quantity: Decimal = Decimal(0)
    entry_price: Decimal | None = None
    exit_price: Decimal | None = None
    fees: Decimal | None = None
    funding: Decimal | None = None
    r_multiple: Decimal | None = None
    holding_s: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)
