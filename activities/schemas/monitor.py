"""Argument and result of `watch_position` (`activities/monitor.py`).

One pydantic model each, so fields can be added without breaking running workflows; no ccxt.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from trading.exits import DEFAULT_EXIT_POLICY, ExitDecision, ExitPolicy, ExitState, KillScore, KillScoreWeights
from activities.schemas.feedback import RecordPositionRequest
from trading.features import Candle, MarketFeatures
from trading.models import Side


class WatchKind(StrEnum):
    DECIDED = "DECIDED"  # `decision` (from trading/exits.py) says what to do; never NONE
    EXCHANGE_FILL = "EXCHANGE_FILL"  # the position size on the exchange is not `position_qty`
    SESSION_CAP = "SESSION_CAP"  # wall-clock cap: the workflow regains control (continue-as-new)


class KillWatch(BaseModel):
    """Kill score on candle closes, evaluated inside the monitor: it returns (a KILL_SCORE close)
    only when the score reaches `threshold`, so a quiet position costs no workflow history."""

    model_config = ConfigDict(frozen=True)

    entry: MarketFeatures  # features when the trade opened
    weights: KillScoreWeights = KillScoreWeights()
    threshold: float = 0.7
    age_horizon_s: float = 86_400.0
    window: int = Field(48, ge=20, le=500)  # closed candles per feature computation


class WatchRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow_id: str
    symbol: str  # BTCUSDT (exchange id) or BTC/USDT:USDT
    # The exit rules' state as the workflow holds it (`exit.stop` rests on the exchange) and the
    # policy to decide with: the monitor calls `decide_exit` / `decide_kill` and returns the
    # first decision that is not NONE.
    exit: ExitState
    exit_policy: ExitPolicy = DEFAULT_EXIT_POLICY
    # Management paused by the operator: no exit rule is applied (the exchange stop stays); only
    # the exchange position is watched.
    paused: bool = False
    # Open time of the last candle the workflow processed: a newer one that closed while no
    # session was watching (between two sessions) is delivered at once. None: from now on.
    candles_after_ms: int | None = None
    session_cap_s: float = Field(3600.0, gt=0)  # wall seconds
    # Expected |contracts| on the exchange; another size means an exchange-side fill (the resting
    # stop or a liquidation fired). None: do not poll the position.
    position_qty: Decimal | None = Field(None, ge=0)
    stop_client_order_id: str | None = None  # for the workflow's follow-up lookup (see report)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    kill: KillWatch | None = None  # None: no kill score
    # The position as the workflow holds it now (hash + new fills), when it changed since the
    # last session: published by the session as it starts, so a change costs the history no
    # activity of its own. Best effort: a failed write is retried within the session and logged.
    publish: RecordPositionRequest | None = None

    @property
    def side(self) -> Side:
        return self.exit.levels.side


class WatchEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: WatchKind
    decision: ExitDecision | None = None  # DECIDED: act on it; its `state` is the one to keep
    # The exit state the monitor saw when it returned: for DECIDED the state the decision was
    # taken on, otherwise the state to keep (a trailing extreme may have moved meanwhile).
    state: ExitState
    # The market since the previous wake-up (None only if no price could be read this session).
    price: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    market_ms: int | None = None
    candle: Candle | None = None  # the close a kill decision was taken on
    exchange_position_qty: Decimal | None = None  # for EXCHANGE_FILL
    features: MarketFeatures | None = None  # kill decision: features now
    kill_score: KillScore | None = None  # ... and the score that reached the threshold
