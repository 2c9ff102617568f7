"""The signal engine's pure rules: feature vector, trend-following fallback, publish decision,
stop/take-profit suggestion and the intent they make (checked through the intake's parser)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.features import REGIMES, TREND_MIN, TRENDING_DOWN, TRENDING_UP, MarketFeatures, Candle, compute_features
from trading.intent import parse_stream_fields, to_stream_fields, workflow_id_for
from trading.models import Side
from trading.signal_rules import (
    FALLBACK_MODEL,
    FEATURE_NAMES,
    Signal,
    build_intent,
    fallback_confidence,
    fallback_signal,
    feature_vector,
    intent_id_for,
    should_publish,
    suggest_levels,
    vector_values,
)

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
OPEN_MS = 1_515_560_100_000


def feats(regime: str = TRENDING_UP, trend: float = 0.7, rsi: float = 60.0, **changes) -> MarketFeatures:
    values = dict(candle_open_ms=OPEN_MS, candles=48, close=D("1.465"), returns_1=0.001, atr_pct=0.004,
                  sigma=0.003, volatility_factor=1.1, rsi=rsi, trend_strength=trend, regime=regime)
    values.update(changes)
    return MarketFeatures(**values)


any_float = st.floats(allow_nan=True, allow_infinity=True)
features_st = st.builds(
    MarketFeatures,
    candle_open_ms=st.integers(1_000_000_000_000, 4_000_000_000_000),
    candles=st.integers(20, 100),
    close=st.decimals(D("0.00000001"), D("1000000"), allow_nan=False, allow_infinity=False, places=8),
    returns_1=any_float, atr_pct=any_float, sigma=any_float, volatility_factor=any_float,
    rsi=st.floats(0, 100) | any_float, trend_strength=st.floats(0, 1) | any_float,
    regime=st.sampled_from(REGIMES) | st.text(max_size=8),
)


# --- feature vector -------------------------------------------------------------------------


def test_feature_vector_has_the_documented_columns_in_order():
    vector = feature_vector(feats(), funding_rate=0.0001, exchange_divergence=-0.002)
    assert tuple(vector) == FEATURE_NAMES
    assert vector["regime_trending_up"] == 1.0
    assert vector["regime_trending_down"] == vector["regime_ranging"] == vector["regime_volatile"] == 0.0
    assert (vector["funding_rate"], vector["exchange_divergence"]) == (0.0001, -0.002)
    assert vector_values(vector) == [vector[name] for name in FEATURE_NAMES]


@given(features_st, any_float, any_float)
@settings(max_examples=300)
def test_feature_vector_is_always_finite(features, funding, divergence):
    vector = feature_vector(features, funding, divergence)
    assert tuple(vector) == FEATURE_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in vector.values())
    hot = [vector[c] for c in ("regime_trending_up", "regime_trending_down", "regime_ranging", "regime_volatile")]
    assert sum(hot) == (1.0 if features.regime in REGIMES else 0.0)


def test_non_finite_inputs_take_their_neutral_values():
    vector = feature_vector(feats(rsi=math.nan, volatility_factor=math.inf, returns_1=-math.inf), math.nan, math.inf)
    assert (vector["rsi"], vector["volatility_factor"], vector["returns_1"]) == (50.0, 1.0, 0.0)
    assert (vector["funding_rate"], vector["exchange_divergence"]) == (0.0, 0.0)


# --- fallback rule --------------------------------------------------------------------------


def test_fallback_follows_the_trend():
    up = fallback_signal(feats(TRENDING_UP, trend=0.7, rsi=60))
    assert (up.side, up.model, up.confidence) == (Side.BUY, FALLBACK_MODEL, 0.725)
    assert "TRENDING_UP" in up.reason and "0.70" in up.reason
    down = fallback_signal(feats(TRENDING_DOWN, trend=1.0, rsi=30))
    assert (down.side, down.confidence) == (Side.SELL, 0.95)


@pytest.mark.parametrize("regime,rsi", [("RANGING", 50), ("VOLATILE", 50), (TRENDING_UP, 80), (TRENDING_UP, 95),
                                        (TRENDING_DOWN, 20), (TRENDING_DOWN, 3)])
def test_fallback_stays_out_without_a_trend_or_when_rsi_is_at_an_extreme(regime, rsi):
    signal = fallback_signal(feats(regime, trend=0.9, rsi=rsi))
    assert signal.side is None and signal.confidence == 0.0 and signal.reason


def test_fallback_confidence_scale():
    assert fallback_confidence(TREND_MIN) == 0.5
    assert fallback_confidence(1.0) == 0.95
    assert fallback_confidence(0.0) == 0.5 and fallback_confidence(math.nan) == 0.5
    assert fallback_confidence(0.55) < fallback_confidence(0.7) < fallback_confidence(0.9)


@given(features_st)
@settings(max_examples=300)
def test_fallback_confidence_in_unit_interval_and_side_follows_the_trend(features):
    signal = fallback_signal(features)
    assert 0.0 <= signal.confidence <= 1.0
    if signal.side is Side.BUY:
        assert features.regime == TRENDING_UP
    elif signal.side is Side.SELL:
        assert features.regime == TRENDING_DOWN
    else:
        assert signal.confidence == 0.0


@given(st.lists(st.decimals(D("0.5"), D("2"), places=4), min_size=48, max_size=48))
@settings(max_examples=100)
def test_on_real_feature_output_the_side_matches_the_price_direction(closes):
    bars, prev = [], closes[0]
    for i, close in enumerate(closes):
        bars.append(Candle(OPEN_MS + i * 300_000, prev, max(prev, close), min(prev, close), close, D(1)))
        prev = close
    features = compute_features(bars)
    assert all(math.isfinite(v) for v in feature_vector(features).values())
    signal = fallback_signal(features)
    if signal.side is not None:  # a trend regime: its direction is the net move of the trend window
        assert (closes[-1] - closes[-21]) * signal.side.sign > 0


def test_signal_refuses_a_confidence_outside_0_1():
    with pytest.raises(ValueError):
        Signal(Side.BUY, 1.2, "m", "r")
    with pytest.raises(ValueError):
        Signal(Side.BUY, math.nan, "m", "r")


# --- publish decision -----------------------------------------------------------------------


BUY = Signal(Side.BUY, 0.7, "m", "r")


def test_should_publish_threshold_and_cooldown_in_market_time():
    now, cooldown = 1_000_000_000, 900_000
    assert should_publish(BUY, 0.68, None, now, cooldown)
    assert not should_publish(BUY, 0.71, None, now, cooldown)
    assert not should_publish(Signal(None, 0.0, "m", "r"), 0.0, None, now, cooldown)
    assert not should_publish(BUY, 0.68, now - 600_000, now, cooldown)  # 10 min after the last
    assert should_publish(BUY, 0.68, now - 900_000, now, cooldown)  # exactly the cooldown
    assert not should_publish(BUY, 0.68, now + 300_000, now, cooldown)  # a marker ahead of us
    assert should_publish(BUY, 0.7, now, now, 0) is True  # no cooldown, same candle time


# --- levels and intent ----------------------------------------------------------------------


@given(
    side=st.sampled_from(list(Side)),
    entry=st.decimals(D("0.00000100"), D("200000"), places=8, allow_nan=False, allow_infinity=False),
    atr=st.floats(0, 0.5) | any_float,
    vf=st.floats(0, 10) | any_float,
    conf=st.floats(0, 1),
    leverage=st.integers(1, 125),
)
@settings(max_examples=300)
def test_suggested_levels_are_on_the_right_side(side, entry, atr, vf, conf, leverage):
    stop, take = suggest_levels(side=side, entry_price=entry, atr_pct=atr, volatility_factor=vf,
                                confidence=conf, leverage=leverage)
    assert stop > 0 and take > 0
    if side is Side.BUY:
        assert stop < entry < take
    else:
        assert take < entry < stop
    assert abs(stop - entry) / entry <= D("0.0201")  # the old 2 % fail-safe clamp (plus rounding)


def test_intent_has_the_old_fields_and_passes_the_intake_parser():
    features = feats(TRENDING_DOWN, trend=0.8, rsi=40, atr_pct=0.0123, volatility_factor=1.37)
    signal = fallback_signal(features)
    close_ms = OPEN_MS + 299_999
    intent = build_intent(signal=signal, symbol="NEARUSDT", features=features, candle_open_ms=OPEN_MS,
                          candle_close_ms=close_ms, position_size_usd=D("200"), leverage=10,
                          funding_rate=0.0001, exchange_divergence=0.0)
    fields = to_stream_fields(intent)
    parsed = parse_stream_fields(fields, known_symbols={"NEARUSDT"})
    assert parsed == intent
    assert parsed.side is Side.SELL and parsed.stop_loss > parsed.entry_price > parsed.take_profit
    assert parsed.timestamp == datetime.fromtimestamp(close_ms / 1000, UTC)
    assert fields["timestamp"] == "2018-01-10T04:59:59.999000+00:00"
    assert fields["intent_id"] == "sig-NEARUSDT-1515560100000" == intent_id_for("NEARUSDT", OPEN_MS)
    assert workflow_id_for(parsed) == "trade-sig-NEARUSDT-1515560100000"
    assert fields["model"] == FALLBACK_MODEL and fields["source"] == "signal-engine"
    assert (fields["atr_value"], fields["volatility_factor"], fields["regime"]) == ("0.01230000", "1.37", TRENDING_DOWN)
    assert (fields["funding_rate"], fields["exchange_divergence"]) == ("0.0001", "0.0")
    assert (fields["position_size_usd"], fields["leverage"], fields["entry_price"]) == ("200", "10", "1.465")
    for name in ("symbol", "side", "confidence", "entry_price", "stop_loss", "take_profit", "position_size_usd",
                 "leverage", "timestamp", "model", "reason", "atr_value", "volatility_factor",
                 "exchange_divergence", "funding_rate", "regime", "intent_id", "source"):
        assert fields[name], name


def test_no_intent_without_a_side():
    with pytest.raises(ValueError):
        build_intent(signal=Signal(None, 0.0, FALLBACK_MODEL, "no trend"), symbol="NEARUSDT", features=feats(),
                     candle_open_ms=OPEN_MS, candle_close_ms=OPEN_MS + 299_999,
                     position_size_usd=D(200), leverage=10)


def test_signal_rules_import_nothing_heavy():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, trading.signal_rules; print(' '.join(sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = {name.split(".")[0] for name in out.split()}
    assert not loaded & {"numpy", "lightgbm", "redis", "ccxt", "aiohttp"}
