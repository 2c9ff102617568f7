"""Argument and result of `watch_position` (`activities/monitor.py`), and the candle it reports.

One pydantic model each, so fields can be added without breaking running workflows; no ccxt.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.exits import KillScore, KillScoreWeights
from trading.features import MarketFeatures
from trading.models import Side


class Candle(BaseModel):
    """A closed 5-minute candle, as the hub hands it to watchers and WatchEvent carries it."""

    model_config = ConfigDict(frozen=True)

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class WatchKind(StrEnum):
    LEVEL_CROSSED = "LEVEL_CROSSED"  # `level` says which
    EXCHANGE_FILL = "EXCHANGE_FILL"  # the position size on the exchange is not `position_qty`
    CANDLE_CLOSED = "CANDLE_CLOSED"  # `candle` carries it (kill score)
    TIME_LIMIT = "TIME_LIMIT"  # market time reached opened_at_ms + max_holding_ms
    SESSION_CAP = "SESSION_CAP"  # wall-clock cap: the workflow regains control (continue-as-new)
    # The trailing stop moved by at least `TrailingSpec.min_step` beyond the resting stop
    # (`WatchRequest.stop_price`): the workflow re-places the exchange stop (new first, then
    # cancel the old). `trailing_stop` carries the new stop.
    TRAIL_ADVANCED = "TRAIL_ADVANCED"


class CrossedLevel(StrEnum):
    STOP = "STOP"
    TAKE_PROFIT = "TAKE_PROFIT"  # `take_profit_index` says which
    TRAILING = "TRAILING"


class TrailingSpec(BaseModel):
    """Trailing stop: active once the price reaches `activation_price` (None: active at once);
    the stop follows the best price since activation (`extreme`) at `callback_pct` behind it."""

    model_config = ConfigDict(frozen=True)

    callback_pct: Decimal = Field(gt=0, lt=1)
    activation_price: Decimal | None = Field(None, gt=0)
    extreme: Decimal | None = Field(None, gt=0)  # carried over from the previous session
    # Return TRAIL_ADVANCED once the trailing stop is at least this far (price units) beyond
    # the resting stop. None: never (the trailing stop is only watched, not re-placed).
    min_step: Decimal | None = Field(None, gt=0)


class KillWatch(BaseModel):
    """Kill score on candle closes, evaluated inside the monitor: it returns CANDLE_CLOSED only
    when the score reaches `threshold`, so a quiet position costs no workflow history."""

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
    side: Side  # of the position
    stop_price: Decimal = Field(gt=0)
    take_profit_prices: list[Decimal] = Field(default_factory=list)  # pending TPs, nearest first
    trailing: TrailingSpec | None = None
    want_candles: bool = False
    # Open time of the last candle the workflow processed: a newer one that closed while no
    # session was watching (between two sessions) is delivered at once. None: from now on.
    candles_after_ms: int | None = None
    opened_at_ms: int  # market time
    max_holding_ms: int | None = Field(None, gt=0)  # market time; None = no limit
    session_cap_s: float = Field(300.0, gt=0)  # wall seconds
    # Expected |contracts| on the exchange; another size means an exchange-side fill (the resting
    # stop or a liquidation fired). None: do not poll the position.
    position_qty: Decimal | None = Field(None, ge=0)
    stop_client_order_id: str | None = None  # for the workflow's follow-up lookup (see report)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    kill: KillWatch | None = None  # None: no kill score (want_candles alone reports every close)

    @model_validator(mode="after")
    def _levels_positive(self) -> WatchRequest:
        if any(p <= 0 for p in self.take_profit_prices):
            raise ValueError("take-profit prices must be > 0")
        return self


class WatchEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: WatchKind
    level: CrossedLevel | None = None
    take_profit_index: int | None = None  # 1-based into `take_profit_prices`: the furthest crossed
    level_price: Decimal | None = None  # the level that fired
    # The market since the previous wake-up (None only if no price could be read this session).
    price: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    market_ms: int | None = None
    trailing_active: bool = False
    trailing_extreme: Decimal | None = None  # carry into the next WatchRequest
    trailing_stop: Decimal | None = None  # the effective trailing stop now
    candle: Candle | None = None
    exchange_position_qty: Decimal | None = None  # for EXCHANGE_FILL
    features: MarketFeatures | None = None  # CANDLE_CLOSED with a KillWatch: features now
    kill_score: KillScore | None = None  # ... and the score that reached the threshold
