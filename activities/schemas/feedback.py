"""Arguments of the feedback activities (`activities/feedback.py`): what a trade tells the old
system's consumers and the learning dataset. No Redis here (safe in the workflow sandbox).

Field names of the Redis payloads follow the old system where it had them (the position hash
`quantum:position:{symbol}`: symbol, side LONG/SHORT, quantity, leverage, stop_loss,
take_profit, plan_id, created_at), so its dashboards and consumers keep working.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from activities.schemas.gates import ReleaseLockRequest
from trading.models import ExitReason, Side


class ExecutionReport(BaseModel):
    """One fill of one of the trade's orders: one `quantum:stream:execution.result` entry."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    intent_id: str | None = None
    symbol: str  # exchange id, NEARUSDT
    step: str  # entry / tp1 / sl-2 / close / ... (the client-id step)
    client_order_id: str | None = None
    order_id: str
    trade_id: str  # the exchange's fill id: the idempotency key of the stream entry
    side: Side  # the order's side
    quantity: Decimal
    price: Decimal
    fee: Decimal = Decimal(0)
    reduce_only: bool = False
    leverage: int | None = None
    time_ms: int  # market time of the fill


class PositionSnapshot(BaseModel):
    """The open position as the old system's `quantum:position:{symbol}` hash shows it."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    symbol: str
    side: Side  # of the position (written as LONG/SHORT, the old hash's spelling)
    quantity: Decimal  # contracts still open (> 0)
    entry_price: Decimal
    leverage: int
    stop_loss: Decimal  # the stop resting on the exchange now
    take_profit: Decimal | None = None  # the next pending take-profit
    take_profits: list[Decimal] = Field(default_factory=list)  # every pending one
    status: str  # TradeStatus
    opened_at_ms: int
    updated_at_ms: int
    version: int = 0  # bumps with every change: a late retry never overwrites a newer state


class RecordPositionRequest(BaseModel):
    """After the entry and after every change (TP harvested, stop moved): keep the hash in step
    and publish the new fills."""

    position: PositionSnapshot
    executions: list[ExecutionReport] = Field(default_factory=list)


class TradeClosedEvent(BaseModel):
    """One `quantum:stream:trade.closed` entry (old consumers: trade journal, learning)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    intent_id: str | None = None
    symbol: str
    side: Side
    quantity: Decimal  # contracts opened
    entry_price: Decimal
    exit_price: Decimal | None
    exit_reason: ExitReason
    realized_pnl: Decimal  # net: gross - fees + funding
    gross_pnl: Decimal
    fees: Decimal
    funding: Decimal
    r_multiple: Decimal | None = None
    holding_s: float | None = None
    leverage: int
    confidence: float
    model: str | None = None
    opened_at_ms: int
    closed_at_ms: int


class TradeOutcome(BaseModel):
    """What the learning step reads for one closed trade (features at entry → outcome)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    symbol: str
    side: Side
    model_version: str | None = None
    intent: dict[str, Any]  # the intent's own fields, as received
    features_at_entry: dict[str, Any] = Field(default_factory=dict)
    levels: dict[str, Any] = Field(default_factory=dict)  # planned and final
    fills: list[ExecutionReport] = Field(default_factory=list)
    closed: TradeClosedEvent
    label: int  # 1 = net win, 0 = loss or flat: the training target


class RecordCloseRequest(BaseModel):
    """At the end of a trade: remaining fills, the trade.closed event, the hash removed, the
    outcome appended to the dataset. Idempotent: a retried call publishes nothing twice."""

    closed: TradeClosedEvent
    executions: list[ExecutionReport] = Field(default_factory=list)
    outcome: TradeOutcome
    # The symbol lock, released (with its cooldown) first, in the same activity: the trade's
    # last step costs the history one activity.
    release: ReleaseLockRequest | None = None


class FeedbackResult(BaseModel):
    published: int  # stream entries written by this call (0 on a retry that found them done)
