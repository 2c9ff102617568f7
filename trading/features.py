"""Market features from closed candles: what the kill score compares (entry vs now) and what the
signal engine feeds its model. Pure: candles in, numbers out; no I/O.

TODO(helper): implement `compute_features` (see its docstring) with unit and property tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from pydantic import BaseModel, ConfigDict


class Bar(Protocol):
    """Anything with OHLC(V) attributes (the hub's `Candle`, the feed's klines)."""

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


def compute_features(candles: Sequence[Bar]) -> MarketFeatures | None:
    """Features at the last candle of `candles` (oldest first); None with too few candles."""
    raise NotImplementedError
