"""Market features: hand-checked values on small series, the regime of typical shapes, and
property tests (finite whatever the candles, bounded, deterministic)."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.features import (
    MIN_CANDLES,
    RANGING,
    REGIMES,
    TRENDING_DOWN,
    TRENDING_UP,
    VOLATILE,
    Candle,
    compute_features,
    efficiency_ratio,
    ema,
    rsi,
)

D = Decimal
FIVE_MIN = 300_000


Bar = Candle


def bars(closes, spread="0.001", volume="1") -> list[Bar]:
    """Candles opening at the previous close, high/low `spread` (relative) beyond the body."""
    out, prev = [], None
    for i, close in enumerate(closes):
        close = D(str(close))
        open_ = close if prev is None else prev
        up, down = max(open_, close), min(open_, close)
        out.append(Bar(i * FIVE_MIN, open_, up * (1 + D(spread)), down * (1 - D(spread)), close, D(volume)))
        prev = close
    return out


def assert_sane(f) -> None:
    floats = (f.returns_1, f.atr_pct, f.sigma, f.volatility_factor, f.rsi, f.trend_strength)
    assert all(math.isfinite(x) for x in floats), f
    assert 0 <= f.rsi <= 100 and 0 <= f.trend_strength <= 1, f
    assert f.atr_pct >= 0 and f.sigma >= 0 and f.volatility_factor >= 0, f
    assert f.regime in REGIMES


# --- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, MIN_CANDLES - 1])
def test_too_few_candles_is_none(n):
    assert compute_features(bars([100 + i for i in range(n)])) is None


def test_values_on_a_small_series():
    closes = [100 + (i % 5) - 2 * (i % 3) for i in range(30)]
    f = compute_features(bars(closes))
    returns = [math.log(b / a) for a, b in zip(closes, closes[1:])]
    assert (f.candles, f.candle_open_ms, f.close) == (30, 29 * FIVE_MIN, D(closes[-1]))
    assert f.returns_1 == pytest.approx(returns[-1], rel=1e-12)
    assert f.sigma == pytest.approx(statistics.stdev(returns), rel=1e-12)
    assert f.volatility_factor == pytest.approx(statistics.stdev(returns[-14:]) / statistics.stdev(returns), rel=1e-12)
    assert_sane(f)


def test_atr_of_constant_ranges_is_the_range():
    # Flat closes at 100, every candle 99..101: true range 2, ATR 2, 2 % of the close.
    candles = [Bar(i * FIVE_MIN, D(100), D(101), D(99), D(100), D(0)) for i in range(25)]
    f = compute_features(candles)
    assert f.atr_pct == pytest.approx(0.02)
    assert (f.rsi, f.sigma, f.volatility_factor, f.trend_strength, f.regime) == (50.0, 0.0, 1.0, 0.0, RANGING)


def test_rsi_wilder_by_hand():
    # 14 moves of +1 / -1 alternating (7 up, 7 down): seed gain = loss = 0.5; then one +2 move:
    # gain = (0.5 × 13 + 2) / 14, loss = 0.5 × 13 / 14 → RSI = 100 × 8.5 / (8.5 + 6.5).
    closes = [100 + (i % 2) for i in range(15)] + [102]
    assert rsi([float(c) for c in closes]) == pytest.approx(100 * 8.5 / 15)
    assert rsi([1.0] * 20) == 50.0 and rsi([float(i) for i in range(20)]) == 100.0
    assert rsi([float(20 - i) for i in range(20)]) == 0.0


def test_efficiency_ratio_and_ema():
    assert efficiency_ratio([1.0, 2.0, 3.0]) == 1.0
    assert efficiency_ratio([1.0, 3.0, 2.0]) == pytest.approx(1 / 3)
    assert efficiency_ratio([5.0, 5.0, 5.0]) == 0.0
    assert ema([1.0, 2.0], 3) == 1.5  # alpha = 2 / (3 + 1)


def test_steady_rise_and_fall_are_trends():
    up = compute_features(bars([100 * 1.002**i for i in range(48)]))
    down = compute_features(bars([100 * 0.998**i for i in range(48)]))
    assert (up.regime, up.trend_strength, up.rsi) == (TRENDING_UP, 1.0, 100.0)
    assert (down.regime, down.trend_strength, down.rsi) == (TRENDING_DOWN, 1.0, 0.0)
    assert up.returns_1 > 0 > down.returns_1


def test_flat_and_oscillating_are_ranging():
    flat = compute_features(bars([100] * 48, volume="0"))
    assert (flat.regime, flat.returns_1, flat.sigma, flat.volatility_factor) == (RANGING, 0.0, 0.0, 1.0)
    wave = compute_features(bars([100 + 3 * math.sin(i) for i in range(48)]))
    assert wave.regime == RANGING and wave.trend_strength < 0.2


def test_volatility_spike_without_direction_is_volatile():
    quiet = [100 + 0.05 * (i % 2) for i in range(34)]
    wild = [100 + 4 * (i % 2) for i in range(14)]  # the last 14 returns swing 80× more
    f = compute_features(bars(quiet + wild))
    assert f.volatility_factor > 1.5 and f.trend_strength < 0.4
    assert f.regime == VOLATILE


def test_a_turn_is_not_a_trend():
    """A steep rise, then 20 small steps down: the last 20 moves are one-way (efficiency 1),
    but EMA(8) is still above EMA(21): the market is turning, not trending down."""
    closes = [100 + 4 * i for i in range(28)] + [208 - 0.05 * i for i in range(1, 21)]
    f = compute_features(bars(closes))
    assert f.trend_strength == 1.0
    assert f.regime not in (TRENDING_UP, TRENDING_DOWN)


def test_deterministic_and_uses_only_the_given_window():
    closes = [100 + math.sin(i / 3) * 5 for i in range(60)]
    assert compute_features(bars(closes)) == compute_features(bars(closes))
    assert compute_features(bars(closes)[-48:]).candles == 48


# --- properties ------------------------------------------------------------------------------

prices = st.decimals(min_value=D("0.0001"), max_value=D("1000000"), places=4, allow_nan=False, allow_infinity=False)


@st.composite
def candle_lists(draw, min_size=0, max_size=80):
    closes = draw(st.lists(prices, min_size=min_size, max_size=max_size))
    out = []
    for i, close in enumerate(closes):
        open_ = draw(prices)
        wick_up, wick_down = draw(st.decimals(0, 1, places=3)), draw(st.decimals(0, 1, places=3))
        high = max(open_, close) * (1 + wick_up)
        low = min(open_, close) * (1 - wick_down)  # may reach 0
        volume = draw(st.one_of(st.just(D(0)), st.decimals(0, 10**9, places=2)))
        out.append(Bar(i * FIVE_MIN, open_, high, low, close, volume))
    return out


@settings(max_examples=300, deadline=None)
@given(candle_lists())
def test_always_finite_and_bounded(candles):
    f = compute_features(candles)
    if len(candles) < MIN_CANDLES:
        assert f is None
        return
    assert_sane(f)
    assert (f.candles, f.candle_open_ms, f.close) == (len(candles), candles[-1].open_ms, candles[-1].close)
    assert f == compute_features(list(candles))  # deterministic


@settings(max_examples=150, deadline=None)
@given(start=prices.filter(lambda p: p >= 1), steps=st.lists(st.decimals(D("0.0001"), D("0.05"), places=4),
                                                       min_size=MIN_CANDLES - 1, max_size=79), rising=st.booleans())
def test_monotonic_series_are_trends(start, steps, rising):
    closes = [start]
    for step in steps:
        closes.append(closes[-1] * (1 + step) if rising else closes[-1] * (1 - step))
    f = compute_features(bars(closes))
    assert f.trend_strength == 1.0
    assert f.regime == (TRENDING_UP if rising else TRENDING_DOWN)
    assert f.rsi == (100.0 if rising else 0.0)


@settings(max_examples=150, deadline=None)
@given(level=prices, n=st.integers(MIN_CANDLES, 80), spread=st.decimals(0, D("0.05"), places=3))
def test_flat_series_are_ranging(level, n, spread):
    f = compute_features(bars([level] * n, spread=str(spread), volume="0"))
    assert (f.regime, f.rsi, f.sigma, f.volatility_factor, f.trend_strength) == (RANGING, 50.0, 0.0, 1.0, 0.0)
    assert_sane(f)


@settings(max_examples=150, deadline=None)
@given(a=prices, gap=st.decimals(D("0.0001"), D("0.2"), places=4), n=st.integers(MIN_CANDLES, 80),
       low_first=st.booleans())
def test_oscillating_series_are_ranging(a, gap, n, low_first):
    b = a * (1 + gap)
    pair = (a, b) if low_first else (b, a)
    f = compute_features(bars([pair[i % 2] for i in range(n)]))
    assert f.regime == RANGING and f.trend_strength < 0.1
    assert_sane(f)
