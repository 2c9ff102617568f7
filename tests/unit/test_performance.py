"""trading/performance.py: hand-computed figures, edge cases, invariants (hypothesis) and a
cross-check of Sharpe, Sortino and max drawdown against empyrical-reloaded on the same returns."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import empyrical
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trading.models import ExitReason
from trading.performance import (
    NO_MODEL,
    ClosedTrade,
    PerformanceReport,
    max_drawdown_fraction,
    performance_report,
    sharpe_ratio,
    sortino_ratio,
)

D = Decimal


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def trade(symbol="BTCUSDT", reason=ExitReason.TP, model="v1", *, gross, fees="0", funding="0", r=None, closed):
    gross, fees, funding = D(gross), D(fees), D(funding)
    return ClosedTrade(
        symbol=symbol,
        exit_reason=reason,
        model=model,
        net_pnl=gross - fees + funding,
        gross_pnl=gross,
        fees=fees,
        funding=funding,
        r_multiple=None if r is None else D(r),
        closed_at=closed if isinstance(closed, (datetime, int)) else at(closed),
    )


def assert_close(ours: float | None, theirs: float) -> None:
    assert ours is not None
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)


# -- the hand-computed case ----------------------------------------------------------------------
#
# Starting equity 1000 USDT. Five trades on three trading days (net = gross − fees + funding):
#   T1 2024-01-31 10:00 BTCUSDT TP        v1      gross  52   fees 2    funding  0    → net  50, R  1
#   T2 2024-01-31 15:00 ETHUSDT SL        v1      gross −28   fees 1.5  funding −0.5  → net −30, R −1
#   T3 2024-02-01 00:00 BTCUSDT SL        v2      gross −48   fees 2.4  funding  0.4  → net −50, R −1
#      (closed exactly at midnight UTC: belongs to 2024-02-01, the day that starts then)
#   T4 2024-02-01 12:00 ETHUSDT TRAILING  (none)  gross  10   fees 1    funding  1    → net  10, R ?
#   T5 2024-02-05 09:00 BTCUSDT TP        v2      gross 102   fees 3    funding  1    → net 100, R  2
# Days 02-02, 02-03, 02-04 have no close: return 0. Calendar: 01-31 Wed (ISO W05, January),
# 02-01 Thu (W05, February), 02-05 Mon (W06).

HAND = [
    trade("BTCUSDT", ExitReason.TP, "v1", gross="52", fees="2", funding="0", r="1", closed="2024-01-31T10:00"),
    trade("ETHUSDT", ExitReason.SL, "v1", gross="-28", fees="1.5", funding="-0.5", r="-1", closed="2024-01-31T15:00"),
    trade("BTCUSDT", ExitReason.SL, "v2", gross="-48", fees="2.4", funding="0.4", r="-1", closed="2024-02-01T00:00"),
    trade("ETHUSDT", ExitReason.TRAILING, None, gross="10", fees="1", funding="1", closed="2024-02-01T12:00"),
    trade("BTCUSDT", ExitReason.TP, "v2", gross="102", fees="3", funding="1", r="2", closed="2024-02-05T09:00"),
]
# daily net: 01-31 = 50 − 30 = 20; 02-01 = −50 + 10 = −40; 02-02..02-04 = 0; 02-05 = 100
# equity at start of day: 1000, 1020, 980, 980, 980, 980; at the end: 1080
# returns: 20/1000 = 1/50, −40/1020 = −2/51, 0, 0, 0, 100/980 = 5/49
HAND_RETURNS = [Fraction(1, 50), Fraction(-2, 51), Fraction(0), Fraction(0), Fraction(0), Fraction(5, 49)]


def test_hand_computed_totals():
    t = performance_report(HAND, D(1000)).totals
    assert t.trades == 5
    assert t.net == D("80")  # 50 − 30 − 50 + 10 + 100
    assert t.gross == D("88")  # 52 − 28 − 48 + 10 + 102
    assert t.fees == D("9.9")  # 2 + 1.5 + 2.4 + 1 + 3
    assert t.funding == D("1.9")  # 0 − 0.5 + 0.4 + 1 + 1;  88 − 9.9 + 1.9 = 80
    assert (t.wins, t.losses, t.flat) == (3, 2, 0)  # T1, T4, T5 / T2, T3
    assert t.win_rate == 0.6  # 3 / 5
    assert t.wins_net == D("160")  # 50 + 10 + 100
    assert t.losses_net == D("-80")  # −30 − 50
    assert t.profit_factor == 2.0  # 160 / 80
    assert t.expectancy == D("16")  # 80 / 5
    assert t.expectancy_r == 0.25  # (1 − 1 − 1 + 2) / 4, T4 has no R
    assert t.r_trades == 4


def test_hand_computed_breakdowns():
    rep = performance_report(HAND, D(1000))

    def net(group):
        return {k: v.net for k, v in group.items()}

    # BTC: T1 + T3 + T5 = 50 − 50 + 100; ETH: T2 + T4 = −30 + 10
    assert net(rep.by_symbol) == {"BTCUSDT": D(100), "ETHUSDT": D(-20)}
    btc = rep.by_symbol["BTCUSDT"]
    assert (btc.trades, btc.wins, btc.losses) == (3, 2, 1)
    assert btc.fees == D("7.4") and btc.funding == D("1.4")  # 2 + 2.4 + 3; 0 + 0.4 + 1
    assert btc.win_rate == pytest.approx(2 / 3)
    assert rep.by_symbol["ETHUSDT"].fees == D("2.5") and rep.by_symbol["ETHUSDT"].win_rate == 0.5

    assert net(rep.by_exit_reason) == {"SL": D(-80), "TP": D(150), "TRAILING": D(10)}
    assert rep.by_exit_reason["SL"].win_rate == 0.0 and rep.by_exit_reason["TP"].win_rate == 1.0
    assert net(rep.by_model) == {NO_MODEL: D(10), "v1": D(20), "v2": D(50)}
    assert net(rep.by_day) == {"2024-01-31": D(20), "2024-02-01": D(-40), "2024-02-05": D(100)}
    assert net(rep.by_week) == {"2024-W05": D(-20), "2024-W06": D(100)}  # T1..T4 / T5
    assert net(rep.by_month) == {"2024-01": D(20), "2024-02": D(60)}
    assert list(rep.by_symbol) == sorted(rep.by_symbol)


def test_hand_computed_daily_series_and_equity_curve():
    rep = performance_report(HAND, D(1000))
    assert (rep.first_day, rep.last_day) == (date(2024, 1, 31), date(2024, 2, 5))
    assert [p.day for p in rep.daily] == [date(2024, 1, 31) + timedelta(days=i) for i in range(6)]
    assert [p.net for p in rep.daily] == [D(20), D(-40), 0, 0, 0, D(100)]
    assert [p.trades for p in rep.daily] == [2, 2, 0, 0, 0, 1]
    assert [p.equity_start for p in rep.daily] == [D(1000), D(1020), D(980), D(980), D(980), D(980)]
    assert [p.daily_return for p in rep.daily] == [float(r) for r in HAND_RETURNS]
    assert rep.daily[0].fees == D("3.5") and rep.daily[0].funding == D("-0.5")  # T1 + T2

    # one point per UTC midnight, 01-31 00:00 .. 02-06 00:00
    assert [p.at for p in rep.equity_curve] == [at("2024-01-31") + timedelta(days=i) for i in range(7)]
    assert [p.equity for p in rep.equity_curve] == [D(1000), D(1020), D(980), D(980), D(980), D(980), D(1080)]
    assert rep.ending_equity == D(1080)


def test_hand_computed_risk():
    risk = performance_report(HAND, D(1000)).risk
    assert risk.periods_per_year == 365 and risk.days == 6
    # peak 1020 (end of 01-31), trough 980 (end of 02-01): 40 USDT, 40 / 1020 = 2/51
    assert risk.max_drawdown == D(40)
    assert risk.max_drawdown_fraction == pytest.approx(2 / 51, abs=1e-15)
    # mean = (1/50 − 2/51 + 5/49) / 6 = (2499 − 4900 + 12750) / 124950 / 6 = 10349/749700 ≈ 0.0138042
    r = HAND_RETURNS
    mean = sum(r) / 6
    assert mean == Fraction(10349, 749700)
    # sample variance Σ(r − mean)² / 5 ≈ 0.00224137, stdev ≈ 0.0473431
    var = sum((x - mean) ** 2 for x in r) / 5
    assert math.sqrt(var) == pytest.approx(0.04734314005614, abs=1e-13)
    # Sharpe = 0.0138042 / 0.0473431 × √365 ≈ 5.5705779
    assert risk.sharpe == pytest.approx(float(mean) / math.sqrt(var) * math.sqrt(365), abs=1e-12)
    assert risk.sharpe == pytest.approx(5.570577863183, abs=1e-11)
    # downside deviation² = (2/51)² / 6 (all six days in the mean) = 2/7803; DD ≈ 0.0160097
    dd2 = sum(min(x, 0) ** 2 for x in r) / 6
    assert dd2 == Fraction(2, 7803)
    # Sortino = 0.0138042 / 0.0160097 × √365 ≈ 16.4730158
    assert risk.sortino == pytest.approx(16.473015761075, abs=1e-11)


def test_hand_case_matches_empyrical():
    rep = performance_report(HAND, D(1000))
    returns = np.array([p.daily_return for p in rep.daily])
    assert_close(rep.risk.sharpe, empyrical.sharpe_ratio(returns, annualization=365))
    assert_close(rep.risk.sortino, empyrical.sortino_ratio(returns, annualization=365))
    assert_close(rep.risk.max_drawdown_fraction, -empyrical.max_drawdown(returns))


# -- edge cases ----------------------------------------------------------------------------------


def test_no_trades_gives_a_well_formed_empty_report():
    rep = performance_report([], D(500))
    t = rep.totals
    assert (t.trades, t.wins, t.losses, t.flat, t.r_trades) == (0, 0, 0, 0, 0)
    assert t.net == t.gross == t.fees == t.funding == t.wins_net == t.losses_net == 0
    assert t.win_rate is None and t.profit_factor is None
    assert t.expectancy is None and t.expectancy_r is None
    assert rep.ending_equity == D(500) and rep.first_day is None and rep.last_day is None
    assert rep.by_symbol == rep.by_day == rep.by_week == {} and rep.daily == rep.equity_curve == []
    assert rep.risk.days == 0 and rep.risk.max_drawdown == 0 and rep.risk.max_drawdown_fraction == 0.0
    assert rep.risk.sharpe is None and rep.risk.sortino is None
    json.loads(rep.model_dump_json())  # serialisable as it is


def test_only_wins_profit_factor_is_none():
    trades = [
        trade(gross="10", closed="2024-03-01T08:00"),
        trade(gross="30", closed="2024-03-02T08:00"),
    ]
    rep = performance_report(trades, D(1000))
    t = rep.totals
    # no losing trade: nothing to divide by → None; wins == trades says "only wins"
    assert t.profit_factor is None and t.wins == t.trades == 2 and t.losses == 0
    assert t.win_rate == 1.0 and t.wins_net == D(40) and t.losses_net == 0
    # returns 10/1000 = 0.01, 30/1010; no losing day → zero downside deviation → Sortino None
    assert rep.risk.sortino is None
    assert rep.risk.sharpe is not None and rep.risk.max_drawdown == 0 and rep.risk.max_drawdown_fraction == 0.0


def test_one_day_only_sharpe_and_sortino_are_none():
    trades = [
        trade(gross="10", closed="2024-03-01T01:00"),
        trade(gross="-25", closed="2024-03-01T23:00"),
    ]
    rep = performance_report(trades, D(1000))
    assert rep.risk.days == 1 and rep.risk.sharpe is None and rep.risk.sortino is None
    assert rep.daily[0].daily_return == -0.015  # −15 / 1000
    assert rep.risk.max_drawdown == D(15) and rep.risk.max_drawdown_fraction == 0.015
    assert len(rep.equity_curve) == 2 and rep.equity_curve[-1].equity == D(985)


def test_constant_returns_sharpe_is_none():
    assert sharpe_ratio([0.01, 0.01, 0.01]) is None  # zero dispersion, not a huge number
    assert sharpe_ratio([0.0, 0.0]) is None
    assert sortino_ratio([0.01, 0.02]) is None  # no downside
    assert sharpe_ratio([]) is None and sortino_ratio([0.01]) is None
    assert max_drawdown_fraction([]) == 0.0


def test_midnight_utc_belongs_to_the_new_day():
    before = trade(gross="1", closed=at("2024-02-29T23:59:59.999"))
    midnight = trade(gross="2", closed=at("2024-03-01T00:00"))
    rep = performance_report([before, midnight], D(1000))
    assert rep.by_day == {
        "2024-02-29": rep.by_day["2024-02-29"],
        "2024-03-01": rep.by_day["2024-03-01"],
    }
    assert rep.by_day["2024-02-29"].net == D(1) and rep.by_day["2024-03-01"].net == D(2)
    assert rep.by_month["2024-02"].net == D(1) and rep.by_month["2024-03"].net == D(2)
    # the equity at midnight 03-01 counts only what closed before it
    assert [(p.at, p.equity) for p in rep.equity_curve][1] == (at("2024-03-01"), D(1001))


def test_closed_at_accepts_epoch_ms_and_other_zones_and_refuses_naive():
    ms = int(at("2024-03-01T00:00").timestamp() * 1000)
    assert trade(gross="1", closed=ms).closed_at == at("2024-03-01")
    assert trade(gross="1", closed=ms - 1).day == date(2024, 2, 29)
    plus2 = datetime(2024, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 02-29 23:30 UTC
    assert trade(gross="1", closed=plus2).day == date(2024, 2, 29)
    with pytest.raises(ValidationError, match="timezone-aware"):
        trade(gross="1", closed=datetime(2024, 3, 1))
    with pytest.raises(ValidationError):
        trade(gross="NaN", closed=ms)


def test_starting_equity_must_be_positive():
    for bad in (D(0), D(-1), D("NaN")):
        with pytest.raises(ValueError, match="starting_equity"):
            performance_report(HAND, bad)


def test_flat_trade_is_neither_win_nor_loss():
    trades = [
        trade(gross="5", fees="5", closed="2024-03-01T08:00"),
        trade(gross="20", closed="2024-03-01T09:00"),
    ]
    t = performance_report(trades, D(100)).totals
    assert (t.wins, t.losses, t.flat, t.trades) == (1, 0, 1, 2) and t.win_rate == 0.5


def test_equity_at_or_below_zero_leaves_later_returns_undefined():
    trades = [
        trade(gross="-100", closed="2024-03-01T08:00"),  # wipes the 100 USDT out
        trade(gross="10", closed="2024-03-02T08:00"),
        trade(gross="-5", closed="2024-03-03T08:00"),
    ]
    rep = performance_report(trades, D(100))
    # 02: 10 / 0 is undefined; 03: −5 / 10 is defined again, but the series has a hole
    assert [p.daily_return for p in rep.daily] == [-1.0, None, -0.5]
    assert rep.risk.sharpe is None and rep.risk.sortino is None
    # drawdown still reads the curve: peak 100, trough 0 → 100 USDT, 100 %
    assert rep.risk.max_drawdown == D(100) and rep.risk.max_drawdown_fraction == 1.0


def test_input_order_does_not_matter_and_json_round_trips():
    shuffled = HAND[::-1]
    assert performance_report(shuffled, D(1000)) == performance_report(HAND, D(1000))
    rep = performance_report(HAND, D(1000))
    assert PerformanceReport.model_validate_json(rep.model_dump_json()) == rep
    doc = json.loads(rep.model_dump_json())
    assert D(doc["totals"]["net"]) == D(80) and doc["by_week"]["2024-W06"]["trades"] == 5 - 4


# -- invariants ----------------------------------------------------------------------------------

_START = at("2024-01-01")
_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]

closed_times = st.one_of(
    st.integers(0, 40 * 86_400_000 - 1).map(lambda ms: _START + timedelta(milliseconds=ms)),
    st.integers(0, 40).map(lambda d: _START + timedelta(days=d)),  # exact midnights
)


@st.composite
def closed_trades(draw):
    net = D(draw(st.integers(-500, 500)))  # whole USDT: keeps the returns well apart
    fees = D(draw(st.integers(0, 500))).scaleb(-2)
    funding = D(draw(st.integers(-200, 200))).scaleb(-2)
    r = draw(st.one_of(st.none(), st.integers(-300, 300).map(lambda n: D(n).scaleb(-2))))
    return ClosedTrade(
        symbol=draw(st.sampled_from(_SYMBOLS)),
        exit_reason=draw(st.sampled_from(list(ExitReason))),
        model=draw(st.sampled_from([None, "v1", "v2"])),
        net_pnl=net,
        gross_pnl=net + fees - funding,
        fees=fees,
        funding=funding,
        r_multiple=r,
        closed_at=draw(closed_times),
    )


# ≤ 15 trades × ≤ 500 USDT against 10,000: equity stays > 0, every daily return is defined
trade_lists = st.lists(closed_trades(), max_size=15)


@settings(max_examples=200, deadline=None)
@given(trade_lists)
def test_breakdowns_add_up_and_the_curve_ends_at_the_net(trades):
    start = D(10_000)
    rep = performance_report(trades, start)
    total = rep.totals.net
    assert total == sum((t.net_pnl for t in trades), D(0))
    for group in (rep.by_symbol, rep.by_exit_reason, rep.by_model, rep.by_day, rep.by_week, rep.by_month):
        assert sum((g.net for g in group.values()), D(0)) == total
        assert sum((g.fees for g in group.values()), D(0)) == rep.totals.fees
        assert sum((g.funding for g in group.values()), D(0)) == rep.totals.funding
        assert sum(g.trades for g in group.values()) == len(trades)
    assert sum((p.net for p in rep.daily), D(0)) == total
    assert rep.totals.wins + rep.totals.losses + rep.totals.flat == len(trades)
    assert rep.ending_equity == start + total
    if trades:
        assert rep.equity_curve[-1].equity == start + total
        assert len(rep.equity_curve) == len(rep.daily) + 1 == (rep.last_day - rep.first_day).days + 2
        for prev, nxt in zip(rep.daily, rep.daily[1:], strict=False):
            assert nxt.equity_start == prev.equity_end
    else:
        assert rep.equity_curve == []
    assert rep.risk.max_drawdown >= 0 and 0.0 <= rep.risk.max_drawdown_fraction < 1.0


@settings(max_examples=200, deadline=None)
@given(trade_lists)
def test_risk_ratios_match_empyrical(trades):
    rep = performance_report(trades, D(10_000))
    returns = np.array([p.daily_return for p in rep.daily], dtype=float)
    if len(returns) == 0:
        assert rep.risk.max_drawdown_fraction == 0.0  # empyrical: NaN for no returns
        return
    assert_close(rep.risk.max_drawdown_fraction, -empyrical.max_drawdown(returns))
    assert rep.risk.max_drawdown_fraction == pytest.approx(max_drawdown_fraction(list(returns)), abs=1e-12)
    theirs = empyrical.sharpe_ratio(returns, annualization=365)
    if rep.risk.sharpe is None:  # < 2 days or all returns equal: empyrical says NaN or ±inf
        assert not math.isfinite(theirs)
    else:
        assert_close(rep.risk.sharpe, theirs)
    theirs = empyrical.sortino_ratio(returns, annualization=365)
    if rep.risk.sortino is None:  # < 2 days or no losing day
        assert not math.isfinite(theirs)
    else:
        assert_close(rep.risk.sortino, theirs)


def test_a_year_of_trades_matches_empyrical():
    rng = random.Random(2024)
    trades = [
        trade(
            rng.choice(_SYMBOLS),
            rng.choice(list(ExitReason)),
            rng.choice([None, "v1", "v2"]),
            gross=str(round(rng.gauss(5, 60), 2)),
            fees=str(round(rng.uniform(0, 3), 4)),
            funding=str(round(rng.uniform(-1, 1), 4)),
            closed=_START + timedelta(seconds=rng.randrange(366 * 86_400)),
        )
        for _ in range(400)
    ]
    rep = performance_report(trades, D(5_000))
    returns = np.array([p.daily_return for p in rep.daily])
    assert len(returns) > 300 and (returns == 0).any()  # gap days are in, as zeros
    assert_close(rep.risk.sharpe, empyrical.sharpe_ratio(returns, annualization=365))
    assert_close(rep.risk.sortino, empyrical.sortino_ratio(returns, annualization=365))
    assert_close(rep.risk.max_drawdown_fraction, -empyrical.max_drawdown(returns))
    assert sum((g.net for g in rep.by_week.values()), D(0)) == rep.totals.net
