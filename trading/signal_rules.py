"""The signal engine's pure part: the model's input vector, the rule-based trend-following
fallback, the publish decision (threshold + cooldown in market time) and the intent it writes.

Pure Python (no numpy, no I/O): importable in the Temporal workflow sandbox, like the rest of
`trading/`. The engine (`signals_ingest/signal_engine.py`) does the Redis side and the LightGBM
call; the trainer (`signals_ingest/train_model.py`) builds its dataset with `feature_vector`
here, so training and serving see the very same columns.

Feature vector (`FEATURE_NAMES`, this order is the model file's column order):

    returns_1            last candle's log return
    atr_pct              ATR(14) / close
    sigma                stdev of the window's log returns
    volatility_factor    recent sigma / window sigma (1 = normal)
    rsi                  RSI(14), 0..100
    trend_strength       Kaufman efficiency ratio, 0..1 (direction-free)
    regime_trending_up   regime one-hot (exactly one of the four is 1.0)
    regime_trending_down
    regime_ranging
    regime_volatile
    funding_rate         the venue's current funding rate (0.0 when unknown)
    exchange_divergence  (secondary venue price - primary) / primary (0.0 with one venue)

Every value is finite: a non-finite input is replaced by its neutral value (0, RSI 50,
volatility factor 1).

Fallback rule ("fallback-trend-following", the old bot's model name): trade *with* the trend
when the regime is TRENDING_UP / TRENDING_DOWN (trend_strength >= 0.4 and EMA(8)/EMA(21) agree
with the net move, see `trading.features`), unless RSI is already at an extreme in the trade's
direction (>= 80 for a BUY, <= 20 for a SELL: the move is likely exhausted). Confidence grows
linearly with trend strength: 0.50 at the regime's minimum (0.4) to 0.95 at 1.0. No trend, or
an exhausted one: no side, confidence 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from trading.features import (
    RANGING,
    TREND_MIN,
    TRENDING_DOWN,
    TRENDING_UP,
    VOLATILE,
    MarketFeatures,
)
from trading.intent import TradeIntent
from trading.levels import compute_adaptive_levels
from trading.models import Side

FALLBACK_MODEL = "fallback-trend-following"
INTENT_SOURCE = "signal-engine"

FEATURE_NAMES: tuple[str, ...] = (
    "returns_1",
    "atr_pct",
    "sigma",
    "volatility_factor",
    "rsi",
    "trend_strength",
    "regime_trending_up",
    "regime_trending_down",
    "regime_ranging",
    "regime_volatile",
    "funding_rate",
    "exchange_divergence",
)
_REGIME_COLUMNS = {
    TRENDING_UP: "regime_trending_up",
    TRENDING_DOWN: "regime_trending_down",
    RANGING: "regime_ranging",
    VOLATILE: "regime_volatile",
}

# Fallback rule knobs (see the module docstring).
RSI_OVERBOUGHT = 80.0  # no BUY at or above
RSI_OVERSOLD = 20.0  # no SELL at or below
FALLBACK_CONF_MIN = 0.50  # confidence at trend_strength == TREND_MIN
FALLBACK_CONF_MAX = 0.95  # confidence at trend_strength == 1

# A window never spans more than this many missing candles: beyond it (a long feed outage, a new
# replay) the engine restarts the symbol's window and the trainer drops the sample, so features
# never mix two stretches of market that do not join up.
MAX_GAP_CANDLES = 12

# The stop / take-profit suggestion is computed on a grid this many significant digits below
# the price's leading digit (the engine does not know the exchange's tick; the workflow
# recomputes adaptive levels on the real tick anyway).
_SUGGESTION_DIGITS = 6


@dataclass(frozen=True)
class Signal:
    """One evaluation: a side (None: no trade), a confidence in [0, 1] and why."""

    side: Side | None
    confidence: float
    model: str
    reason: str
    model_version: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.confidence) and 0.0 <= self.confidence <= 1.0):
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")


def feature_vector(
    features: MarketFeatures, funding_rate: float = 0.0, exchange_divergence: float = 0.0
) -> dict[str, float]:
    """The model's input columns, in `FEATURE_NAMES` order, every value a finite float."""
    vector = {
        "returns_1": _finite(features.returns_1, 0.0),
        "atr_pct": _finite(features.atr_pct, 0.0),
        "sigma": _finite(features.sigma, 0.0),
        "volatility_factor": _finite(features.volatility_factor, 1.0),
        "rsi": _finite(features.rsi, 50.0),
        "trend_strength": _finite(features.trend_strength, 0.0),
    }
    hot = _REGIME_COLUMNS.get(features.regime)
    for column in _REGIME_COLUMNS.values():
        vector[column] = 1.0 if column == hot else 0.0
    vector["funding_rate"] = _finite(funding_rate, 0.0)
    vector["exchange_divergence"] = _finite(exchange_divergence, 0.0)
    return {name: vector[name] for name in FEATURE_NAMES}


def vector_values(vector: Mapping[str, float]) -> list[float]:
    """The vector as a row in `FEATURE_NAMES` order (what the model is fed)."""
    return [float(vector[name]) for name in FEATURE_NAMES]


def fallback_signal(
    features: MarketFeatures,
    *,
    rsi_overbought: float = RSI_OVERBOUGHT,
    rsi_oversold: float = RSI_OVERSOLD,
) -> Signal:
    """The rule-based trend-following signal (rule in the module docstring)."""
    trend = _finite(features.trend_strength, 0.0)
    rsi = _finite(features.rsi, 50.0)
    regime = features.regime
    if regime not in (TRENDING_UP, TRENDING_DOWN):
        return Signal(None, 0.0, FALLBACK_MODEL, f"no trend: regime {regime}, trend strength {trend:.2f}")
    side = Side.BUY if regime == TRENDING_UP else Side.SELL
    if side is Side.BUY and rsi >= rsi_overbought:
        return Signal(None, 0.0, FALLBACK_MODEL, f"uptrend exhausted: RSI {rsi:.1f} >= {rsi_overbought:g}")
    if side is Side.SELL and rsi <= rsi_oversold:
        return Signal(None, 0.0, FALLBACK_MODEL, f"downtrend exhausted: RSI {rsi:.1f} <= {rsi_oversold:g}")
    confidence = fallback_confidence(trend)
    reason = (
        f"trend following: regime {regime}, trend strength {trend:.2f}, RSI {rsi:.1f}, "
        f"volatility factor {_finite(features.volatility_factor, 1.0):.2f}"
    )
    return Signal(side, confidence, FALLBACK_MODEL, reason)


def fallback_confidence(trend_strength: float) -> float:
    """0.50 at trend strength 0.4 (the regime's minimum) .. 0.95 at 1.0, clamped to that range."""
    scaled = (_finite(trend_strength, 0.0) - TREND_MIN) / (1.0 - TREND_MIN)
    scaled = min(1.0, max(0.0, scaled))
    return round(FALLBACK_CONF_MIN + (FALLBACK_CONF_MAX - FALLBACK_CONF_MIN) * scaled, 6)


def model_signal(side: Side, confidence: float, model: str, version: str, vector: Mapping[str, float],
                 regime: str) -> Signal:
    """A model's verdict as a `Signal` with a readable reason."""
    confidence = min(1.0, max(0.0, _finite(confidence, 0.0)))
    reason = (
        f"{model}: P({'up' if side is Side.BUY else 'down'}) {confidence:.3f}; regime {regime}, "
        f"trend strength {vector.get('trend_strength', 0.0):.2f}, RSI {vector.get('rsi', 50.0):.1f}"
    )
    return Signal(side, round(confidence, 6), model, reason, version)


def should_publish(
    signal: Signal,
    threshold: float,
    last_intent_close_ms: int | None,
    now_close_ms: int,
    cooldown_ms: int,
) -> bool:
    """Publish an intent for `signal` at the candle closing at `now_close_ms` (market time)?

    Needs a side, confidence >= threshold, and the symbol outside its cooldown: no intent was
    published for a candle closing within `cooldown_ms` before this one. A marker *after* this
    candle (another engine ahead of us, or a replay re-run on older data) counts as inside the
    cooldown: when in doubt, do not trade.
    """
    if signal.side is None or signal.confidence < threshold:
        return False
    if last_intent_close_ms is None:
        return True
    return now_close_ms - last_intent_close_ms >= cooldown_ms


def suggest_levels(
    *,
    side: Side,
    entry_price: Decimal,
    atr_pct: float,
    volatility_factor: float,
    confidence: float,
    leverage: int,
) -> tuple[Decimal, Decimal]:
    """A stop-loss / take-profit suggestion for the intent: the workflow's own adaptive-level
    function (ATR stop, volatility and leverage scaling, the old clamps SL 0.1 %-2 %, TP >= 0.3 %)
    on a fine grid (6 significant digits below the price's first), take-profit = TP2 (2 R: the old
    bot's 2 % stop / 4 % target ratio). Always strictly on the right side of `entry_price`."""
    tick = Decimal(1).scaleb(entry_price.adjusted() - _SUGGESTION_DIGITS)
    atr = _finite(atr_pct, 0.0)
    levels = compute_adaptive_levels(
        entry_price=entry_price,
        side=side,
        leverage=max(1, int(leverage)),
        tick_size=tick,
        volatility_factor=max(0.0, _finite(volatility_factor, 1.0)),
        atr_value=Decimal(repr(atr)) if 0 < atr < 1 else None,
        confidence=min(1.0, max(0.0, _finite(confidence, 0.5))),
    )
    take_profit = levels.take_profits[min(1, len(levels.take_profits) - 1)]
    return levels.stop_loss.normalize(), take_profit.price.normalize()


def intent_id_for(symbol: str, candle_open_ms: int) -> str:
    """`sig-{symbol}-{open_time}`: one intent per symbol and candle, whoever evaluates it.

    Deliberately without the model: two engines (or a restarted one that reloaded a newly
    promoted model) re-evaluating the same candle map to the same workflow id, so the intake
    deduplicates instead of opening a second trade for one candle."""
    return f"sig-{symbol}-{int(candle_open_ms)}"


def market_time(ms: int) -> datetime:
    """Epoch milliseconds (the exchange's clock) as an aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def build_intent(
    *,
    signal: Signal,
    symbol: str,
    features: MarketFeatures,
    candle_open_ms: int,
    candle_close_ms: int,
    position_size_usd: Decimal,
    leverage: int,
    funding_rate: float = 0.0,
    exchange_divergence: float = 0.0,
) -> TradeIntent:
    """The trade intent for a signal with a side, with the old producers' fields and metadata.

    `entry_price` is the candle's close; `timestamp` its close time in market time; `atr_value`
    is ATR as a fraction of price, as the old producers wrote it and as `trading.levels` reads it
    (NEAR: 0.02 with a 2 % stop); `intent_id` is deterministic per symbol and candle."""
    if signal.side is None:
        raise ValueError("a signal without a side has no intent")
    entry = features.close
    stop_loss, take_profit = suggest_levels(
        side=signal.side,
        entry_price=entry,
        atr_pct=features.atr_pct,
        volatility_factor=features.volatility_factor,
        confidence=signal.confidence,
        leverage=leverage,
    )
    return TradeIntent(
        symbol=symbol,
        side=signal.side,
        confidence=signal.confidence,
        entry_price=entry,
        stop_loss=stop_loss,
        take_profit=take_profit,
        position_size_usd=position_size_usd,
        leverage=leverage,
        timestamp=market_time(candle_close_ms),
        model=signal.model,
        reason=signal.reason,
        atr_value=Decimal(f"{_finite(features.atr_pct, 0.0):.8f}"),
        volatility_factor=round(_finite(features.volatility_factor, 1.0), 6),
        exchange_divergence=_finite(exchange_divergence, 0.0),
        funding_rate=_finite(funding_rate, 0.0),
        regime=features.regime,
        intent_id=intent_id_for(symbol, candle_open_ms),
        source=INTENT_SOURCE,
    )


def _finite(x: float, default: float) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default
