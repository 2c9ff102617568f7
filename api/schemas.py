"""Request and response bodies of the API that the project has no model for yet. Everything
else is the project's own: `TradeIntent` (as parsed), `TradeState`, `TradeResult`,
`AdjustLevelsRequest`, `CloseRequest`, `GateVerdict`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from activities.schemas.gates import GateVerdict
from trading.intent import TradeIntent
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import AdjustLevelsRequest, TradeResult, TradeState


class ManualIntentRequest(BaseModel):
    """A manual intent with the stream's field names. Left out: `timestamp` = the market clock
    now, `entry_price` = the exchange's last price, `confidence` = 1 (the operator's own call),
    `source` = api. `intent_id` (or the `Idempotency-Key` header) makes retries safe."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "100", "leverage": 5},
        {"intent_id": "manual-2026-12-01-eth", "symbol": "ETHUSDT", "side": "SELL", "confidence": 0.8,
         "entry_price": "3400", "stop_loss": "3468", "position_size_usd": "200", "leverage": 10,
         "reason": "fading the breakout"},
    ]})

    symbol: str = Field(max_length=40)
    side: str = Field(max_length=8)
    position_size_usd: Decimal
    leverage: int
    confidence: float | None = None
    entry_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    timestamp: datetime | None = None
    intent_id: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    model: str = Field("manual", max_length=128)
    reason: str = Field("", max_length=1024)


class IntentAccepted(BaseModel):
    workflow_id: str
    run_id: str | None
    started: bool  # False: this intent already had its trade (a retry): that one is returned
    web_ui_url: str
    intent: TradeIntent
    status: TradeStatus | None = None
    gates: list[GateVerdict] | None = None  # with ?wait=gates
    reason: str | None = None  # a rejection's reason, with ?wait=gates


class TradeSummary(BaseModel):
    workflow_id: str
    run_id: str
    status: str | None  # TradeStatus search attribute (PENDING before a worker took it)
    execution_status: str  # Temporal's: RUNNING, COMPLETED, TERMINATED...
    symbol: str | None = None
    side: str | None = None
    exit_reason: str | None = None
    realized_pnl: float | None = None
    leverage: float | None = None
    confidence: float | None = None
    model: str | None = None
    source: str | None = None
    started_at: datetime
    closed_at: datetime | None = None
    web_ui_url: str


class TradePage(BaseModel):
    trades: list[TradeSummary]
    next_page_token: str | None = None  # pass as `page_token` for the next page


class TradeDetail(BaseModel):
    workflow_id: str
    run_id: str | None
    execution_status: str
    web_ui_url: str
    state: TradeState | None = None  # the live `state` query (None: no worker answered)
    result: TradeResult | None = None  # a closed trade's result, from its history
    note: str | None = None


class Accepted(BaseModel):
    workflow_id: str
    action: str
    detail: str


class AdjustRequest(AdjustLevelsRequest):
    """`AdjustLevelsRequest` with the bounds a body from outside needs: the update's argument is
    written to the trade's history, and one past Temporal's payload limit (2 MB: a 3 MB `reason`)
    fails every workflow task of that trade from then on (PayloadsTooLarge), so it stops answering."""
    take_profits: list[Decimal] | None = Field(None, max_length=20)
    reason: str = Field("", max_length=1024)


class TerminateRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "stuck: exchange account closed by hand"}]})
    reason: str = Field(min_length=1, max_length=1024)


class SafeModeRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "CPI release", "ttl_s": 1800, "set_by": "alice"}]})
    reason: str = Field(min_length=1, max_length=1024)
    ttl_s: int = Field(900, ge=1, le=7 * 86_400)
    set_by: str = Field("api", min_length=1, max_length=128)


class SafeModeView(BaseModel):
    active: bool
    reason: str | None = None
    set_by: str | None = None
    # What set it: operator, kill_switch, or breaker:<group> (the circuit breaker)
    origin: str | None = None
    since_ms: int | None = None
    ttl_s: int | None = None  # seconds left; None: no expiry


class KillSwitchRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "exchange incident", "set_by": "alice"}]})
    reason: str = Field(min_length=1, max_length=1024)
    set_by: str = Field("api", min_length=1, max_length=128)
    wait_s: float = Field(60, ge=0, le=300, description="how long to wait for the killed trades to end")


class KilledTrade(BaseModel):
    workflow_id: str
    status: str | None
    exit_reason: ExitReason | None = None
    realized_pnl: Decimal | None = None
    reason: str | None = None


class KillSwitchReport(BaseModel):
    active: bool
    safe_mode: SafeModeView
    killed: list[KilledTrade] = []
    still_running: list[str] = []  # killed but not ended within wait_s
    open_positions: list[str] = []  # symbols the exchange still reports open afterwards


class Problem(BaseModel):
    """Every error answer: what went wrong, in words (FastAPI's 422s add `loc` per field)."""
    detail: str | list[dict]
    kind: Literal["not_found", "conflict", "invalid", "unavailable", "unauthorized", "forbidden"] | None = None


# FastAPI's answer to a request body that is not UTF-8 text (a body that is not JSON is a 422).
UNREADABLE_BODY = {400: {"model": Problem, "description": "the body is not UTF-8 text"}}


class PositionView(BaseModel):
    symbol: str
    side: Literal["LONG", "SHORT"]
    quantity: Decimal  # contracts, unsigned
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    notional: Decimal  # |quantity × mark|, USDT
    unrealized_pnl: Decimal
    leverage: int | None = None
    liquidation_price: Decimal | None = None
    owners: list[str]  # the open trades (workflow ids) on this symbol
    orphan: bool  # True: no open trade owns it (opened by hand, or a trade lost track of it)


class Portfolio(BaseModel):
    positions: list[PositionView]
    open_trades: list[TradeSummary]  # trades that may hold a position (OPENING, OPEN, CLOSING)
    exposure_by_symbol: dict[str, Decimal]
    total_exposure: Decimal
    unrealized_pnl: Decimal
    wallet_balance: Decimal | None = None
    free_margin: Decimal | None = None  # availableBalance
    equity: Decimal | None = None  # totalMarginBalance (wallet + unrealized)
