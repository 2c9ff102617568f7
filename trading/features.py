"""Market features from closed candles: what the kill score compares (entry vs now) and what the
signal engine feeds its model. Pure: candles in, numbers out; no I/O, no numpy (importable in
the Temporal workflow sandbox), deterministic, every float finite (flat prices, zero volume and
tiny or huge prices included: an undefined ratio takes its neutral value).

Choices (documented here because the kill score's regime flip depends on them):
- Returns are log returns of consecutive closes; `sigma` is their sample stdev over the window.
- ATR and RSI use Wilder's smoothing over 14 candles (seeded with the simple mean of the first
  14 values).
- `trend_strength` is Kaufman's efficiency ratio over the last 20 close-to-close moves:
  |net move| / sum of |moves|. It is direction-free, exactly 1 for a monotonic series, 0 for a
  flat one and near 0 for an oscillating one, and needs no squashing to stay in [0, 1].
- `regime`, checked in this order:
  1. TRENDING_UP / TRENDING_DOWN when trend_strength >= TREND_MIN (0.4) and EMA(8) vs EMA(21)
     points the same way as the net move of the trend window (both say "up", or both "down";
     when they disagree the market is turning, which is not a trend);
  2. VOLATILE when volatility_factor >= VOLATILE_FACTOR (1.5: the last 14 returns swing half as
     much again as the whole window's);
  3. RANGING otherwise.
  A clean directional move is reported as a trend even when its step sizes grow: which way the
  market goes is what a position's regime flip is about, and the kill score has its own
  volatility component (sigma spike).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict

# The candles the system trades on (features, kill score, signal engine, market feed): 5 minutes.
CANDLE_MS = 300_000


@dataclass(frozen=True, slots=True)
class Candle:
    """A closed 5-minute candle: the one candle type of the system (the hub and the monitor's
    results, the signal engine, the trainer and the features all use it)."""

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class MarketFeatures(BaseModel):
    """Features of a symbol at the close of one candle."""

    model_config = ConfigDict(frozen=True)

    candle_open_ms: int  # open time of the last candle used
    candles: int  # how many candles went in
    close: Decimal
    returns_1: float  # last candle's log return
    atr_pct: float  # ATR(14) / close
    sigma: float  # stdev of log returns over the window (volatility)
    volatility_factor: float  # sigma relative to its longer-run level (1 = normal)
    rsi: float  # RSI(14), 0..100
    trend_strength: float  # 0 = no trend .. 1 = strong trend (direction-free)
    regime: str  # TRENDING_UP / TRENDING_DOWN / RANGING / VOLATILE


MIN_CANDLES = 20
ATR_PERIOD = 14
RSI_PERIOD = 14
RECENT_RETURNS = 14  # volatility_factor: stdev of these last returns / stdev of the window's
TREND_MOVES = 20  # efficiency-ratio lookback (close-to-close moves)
EMA_FAST, EMA_SLOW = 8, 21
TREND_MIN = 0.4
VOLATILE_FACTOR = 1.5

TRENDING_UP, TRENDING_DOWN, RANGING, VOLATILE = "TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE"
REGIMES = (TRENDING_UP, TRENDING_DOWN, RANGING, VOLATILE)


def compute_features(candles: Sequence[Candle]) -> MarketFeatures | None:
    """Features at the last candle of `candles` (oldest first); None with too few candles
    (fewer than MIN_CANDLES = 20). See the module docstring for the definitions."""
    if len(candles) < MIN_CANDLES:
        return None
    closes = [_float(c.close) for c in candles]
    logs = [_ln(c.close) for c in candles]
    returns = [cur - prev for prev, cur in zip(logs, logs[1:])]
    sigma = _stdev(returns)
    recent = _stdev(returns[-RECENT_RETURNS:])
    volatility_factor = recent / sigma if sigma > 0 else 1.0
    trend = efficiency_ratio(closes[-(TREND_MOVES + 1):])
    last = candles[-1]
    return MarketFeatures(
        candle_open_ms=last.open_ms,
        candles=len(candles),
        close=last.close,
        returns_1=_finite(returns[-1], 0.0),
        atr_pct=_finite(_ratio(atr(candles), closes[-1]), 0.0),
        sigma=_finite(sigma, 0.0),
        volatility_factor=_finite(volatility_factor, 1.0),
        rsi=_finite(rsi(closes), 50.0),
        trend_strength=_finite(trend, 0.0),
        regime=regime(trend, _direction(closes), volatility_factor),
    )


def regime(trend_strength: float, direction: int, volatility_factor: float) -> str:
    """The regime from its inputs (thresholds and order in the module docstring)."""
    if trend_strength >= TREND_MIN and direction:
        return TRENDING_UP if direction > 0 else TRENDING_DOWN
    if volatility_factor >= VOLATILE_FACTOR:
        return VOLATILE
    return RANGING


def atr(candles: Sequence[Candle]) -> float:
    """Wilder's ATR(14) of the true ranges (each against the previous close)."""
    ranges = []
    for prev, cur in zip(candles, candles[1:]):
        high, low, prev_close = _float(cur.high), _float(cur.low), _float(prev.close)
        ranges.append(max(high - low, abs(high - prev_close), abs(low - prev_close)))
    return _wilder(ranges, ATR_PERIOD)


def rsi(closes: Sequence[float]) -> float:
    """Wilder's RSI(14): 100 when the window only rose, 0 when it only fell, 50 when flat."""
    moves = [cur - prev for prev, cur in zip(closes, closes[1:])]
    gain = _wilder([max(m, 0.0) for m in moves], RSI_PERIOD)
    loss = _wilder([max(-m, 0.0) for m in moves], RSI_PERIOD)
    if gain + loss <= 0:
        return 50.0
    if loss <= 0 or gain <= 0:  # exact ends (the ratio below could be one ulp off)
        return 100.0 if loss <= 0 else 0.0
    return min(100.0, max(0.0, 100.0 * gain / (gain + loss)))  # = 100 - 100 / (1 + gain / loss)


def efficiency_ratio(closes: Sequence[float]) -> float:
    """Kaufman's efficiency ratio: |net move| / path length, in [0, 1]; 0 for a flat series."""
    path = math.fsum(abs(cur - prev) for prev, cur in zip(closes, closes[1:]))
    if not path > 0:
        return 0.0
    return min(1.0, abs(closes[-1] - closes[0]) / path)


def ema(values: Sequence[float], period: int) -> float:
    """Exponential moving average seeded with the first value (alpha = 2 / (period + 1))."""
    alpha = 2.0 / (period + 1)
    average = values[0]
    for value in values[1:]:
        average += alpha * (value - average)
    return average


def _direction(closes: Sequence[float]) -> int:
    """+1 / -1 when EMA(8) vs EMA(21) and the trend window's net move agree, else 0."""
    ema_side = _sign(ema(closes, EMA_FAST) - ema(closes, EMA_SLOW))
    net_side = _sign(closes[-1] - closes[-(TREND_MOVES + 1):][0])
    return ema_side if ema_side == net_side else 0


def _wilder(values: Sequence[float], period: int) -> float:
    """Wilder's smoothing: the mean of the first `period` values, then (prev × (n-1) + x) / n."""
    if not values:
        return 0.0
    period = min(period, len(values))
    average = math.fsum(values[:period]) / period
    for value in values[period:]:
        average = (average * (period - 1) + value) / period
    return average


def _ln(price: Decimal) -> float:
    """ln(price) for log returns; 0 for a non-positive price (its returns then read as flat).
    Through a float when the price is one (fast), else in Decimal (no overflow or underflow)."""
    if price <= 0:
        return 0.0
    as_float = float(price)
    if sys.float_info.min <= as_float < math.inf:
        return math.log(as_float)
    try:
        return float(price.ln())
    except (ArithmeticError, InvalidOperation):
        return 0.0


def _stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (two-pass, `fsum`: exact enough and 10x faster than
    `statistics.stdev`, which works in fractions)."""
    if len(values) < 2:
        return 0.0
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (len(values) - 1))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _float(value: Decimal) -> float:
    return float(value)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _finite(x: float, default: float) -> float:
    return x if math.isfinite(x) else default
