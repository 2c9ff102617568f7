"""The replay's price path, clock and klines (pure functions, no server)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paper_exchange.config import DATA_DIR, default_symbols
from paper_exchange.replay import (
    CANDLE_MS, MarketClock, RawCandles, SymbolPath, funding_times, klines, load_path,
    next_funding_time,
)

EPOCH = 1_735_689_600_000


def path_of(rows: list[tuple[float, float, float, float]], epoch: int = EPOCH) -> SymbolPath:
    cols = list(zip(*rows))
    raw = RawCandles(0, list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3]),
                     [100.0] * len(rows))
    return SymbolPath(raw, 1.0, epoch)  # one tick per file unit


def test_path_goes_open_nearer_extreme_other_extreme_close():
    # open 100, high 110, low 96: the low (4 away) is nearer than the high (10 away).
    path = path_of([(100, 110, 96, 104)])
    times, prices = path.vertices(0)
    assert prices == (100, 96, 110, 104)
    # Durations follow the price length: 4 + 14 + 6 = 24 ticks over 5 minutes.
    assert times == (EPOCH, EPOCH + 50_000, EPOCH + 225_000, EPOCH + CANDLE_MS)
    assert path.price_at(EPOCH + 25_000) == pytest.approx(98.0)  # halfway down to the low
    assert path.price_at(EPOCH + 50_000) == pytest.approx(96.0)


def test_nearer_high_goes_first_and_ties_follow_the_close():
    assert path_of([(100, 102, 90, 95)]).vertices(0)[1] == (100, 102, 90, 95)
    assert path_of([(100, 105, 95, 103)]).vertices(0)[1] == (100, 95, 105, 103)  # tie, up close
    assert path_of([(100, 105, 95, 97)]).vertices(0)[1] == (100, 105, 95, 97)  # tie, down close


def test_a_stop_between_open_and_low_is_crossed_at_its_price_inside_the_candle():
    path = path_of([(100, 110, 96, 104)])
    seg = path.segment(0, 1)  # open → low
    lam = (97 - seg.p0) / (seg.p1 - seg.p0)
    assert seg.price(lam) == pytest.approx(97)
    assert seg.time_at(lam) == EPOCH + 37_500


def test_gap_between_close_and_next_open_is_a_zero_duration_segment():
    path = path_of([(100, 101, 99, 100), (103, 104, 102, 103)])
    gap = path.segment(1, 0)
    assert gap.gap and gap.t0 == gap.t1 == EPOCH + CANDLE_MS
    assert (gap.p0, gap.p1) == (100, 103)
    assert path.price_at(EPOCH + CANDLE_MS) == 103  # at the boundary: after the gap


def test_replay_loops_with_price_continuity():
    path = path_of([(100, 101, 99, 100), (100, 121, 99, 120)])
    last_close = path.candle(1)[3]
    assert path.candle(2)[0] == last_close  # second pass opens at the first pass's close
    assert path.candle(3)[3] == 144  # and is scaled by 1.2: 120 * 1.2


def test_configured_symbols_start_at_their_start_price_on_the_tick_grid():
    for symbol, spec in default_symbols().items():
        path = load_path(DATA_DIR, spec.candles, spec.start_price, spec.price_scale,
                         spec.tick_size, EPOCH)
        o = path.candle(0)[0]
        if spec.start_price is not None:
            assert spec.tick_size * o == spec.start_price, symbol
        for i in (0, 100, path.n - 1, path.n, 3 * path.n + 7):  # across loop seams too
            co, ch, cl, cc, _ = path.candle(i)
            assert cl <= min(co, cc) <= max(co, cc) <= ch, (symbol, i)
        assert path.candle(path.n)[0] == path.candle(path.n - 1)[3], symbol


def test_klines_are_complete_until_now_and_the_current_one_is_partial():
    path = path_of([(100, 110, 96, 104), (104, 110, 102, 103), (101, 103, 99, 102)])
    now = EPOCH + CANDLE_MS + 60_000  # one minute into the second candle
    rows = klines(path, "5m", now, None, None, 500)
    assert [r[0] for r in rows] == [EPOCH, EPOCH + CANDLE_MS]
    assert rows[0][1:5] == (100, 110, 96, 104)
    o, h, low, c = rows[1][1:5]
    assert o == 104 and c == round(path.price_at(now)) and low <= c <= h
    assert low == 102 and h == 104  # the low came first; the high (110) has not happened yet


def test_kline_windows_follow_binance_semantics():
    path = path_of([(100 + i, 101 + i, 99 + i, 100 + i) for i in range(20)])
    now = EPOCH + 12 * CANDLE_MS
    assert [r[0] for r in klines(path, "5m", now, None, None, 3)] == [
        EPOCH + 10 * CANDLE_MS, EPOCH + 11 * CANDLE_MS, EPOCH + 12 * CANDLE_MS]
    assert [r[0] for r in klines(path, "5m", now, EPOCH + CANDLE_MS, None, 2)] == [
        EPOCH + CANDLE_MS, EPOCH + 2 * CANDLE_MS]
    assert klines(path, "15m", now, None, None, 1)[0][0] == EPOCH + 12 * CANDLE_MS
    hour, current = klines(path, "1h", EPOCH + 12 * CANDLE_MS, None, None, 2)
    assert hour[:5] == (EPOCH, 100, 112, 99, 111)  # twelve complete 5m candles
    assert current[0] == EPOCH + 12 * CANDLE_MS and current[1] == current[4] == 112


def test_clock_speed_and_rebase():
    clock = MarketClock(anchor_market=1_000, anchor_wall=50_000, speed=100)
    assert clock.now(50_010) == 2_000
    clock.rebase(50_010, speed=0)
    assert clock.now(99_999) == 2_000
    clock.rebase(60_000, 2_000 + 5_000)
    assert clock.now(70_000) == 7_000
    with pytest.raises(ValueError):
        clock.rebase(70_000, 6_999)


def test_funding_instants_are_00_08_16_utc():
    eight_hours = 8 * 3_600_000
    assert funding_times(EPOCH, EPOCH + eight_hours) == [EPOCH + eight_hours]
    assert funding_times(EPOCH - 1, EPOCH) == [EPOCH]
    assert next_funding_time(EPOCH) == EPOCH + eight_hours
    assert len(funding_times(EPOCH, EPOCH + 86_400_000)) == 3


def test_scale_keeps_decimal_ticks():
    spec = default_symbols()["XRPUSDT"]
    path = load_path(DATA_DIR, spec.candles, None, spec.price_scale, spec.tick_size, EPOCH)
    assert spec.tick_size * path.candle(0)[0] == Decimal("1.1893")
