"""Exit rules: the kill score reproduces the old ExitBrain, the trailing stop only ever tightens,
and the exit decision walks a trade through SL / TP1..TP3 / trailing / time limit deterministically."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.exits import (
    ExitAction,
    ExitPolicy,
    ExitState,
    PriceMove,
    StopKind,
    break_even_stop,
    decide_exit,
    kill_score,
    trail_stop,
)
from trading.levels import compute_adaptive_levels, is_tick_multiple
from trading.models import ExitReason, Side

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def levels(side=Side.BUY, entry="100", tick="0.01"):
    # BUY at 100 (5×, confidence 0.6): stop 99.29, TPs 100.86 / 101.72 / 102.57
    return compute_adaptive_levels(entry_price=D(entry), side=side, leverage=5, tick_size=D(tick), confidence=0.6)


def bar(price, high=None, low=None, minutes=5):
    price = D(price)
    return PriceMove(
        price=price, high=D(high) if high else price, low=D(low) if low else price, at=T0 + timedelta(minutes=minutes)
    )


def start(side=Side.BUY):
    return ExitState.start(levels(side), opened_at=T0)


# --- kill score ------------------------------------------------------------------------------

OLD_SAMPLE = dict(
    regime_at_entry="trending",
    regime_now="ranging",
    sigma_at_entry=0.02,
    sigma_now=0.02,
    trend_at_entry=1.0,
    trend_now=1 - 0.24159399999999998,
    age_s=3600,
)


def test_kill_score_reproduces_the_old_exitbrain_sample():
    score = kill_score(**OLD_SAMPLE)
    assert score.regime_flip == 1.0 and score.sigma_spike == 0.0
    assert math.isclose(score.trend_drop, 0.241594) and math.isclose(score.age_penalty, 0.041666666666666664)
    assert abs(score.score - 0.7119699587849092) < 2e-5
    assert score.should_close and score.threshold == 0.7


def test_a_regime_flip_alone_does_not_close():
    score = kill_score(**{**OLD_SAMPLE, "trend_now": 1.0, "age_s": 0})
    assert score.score == pytest.approx(0.66) and not score.should_close


@pytest.mark.parametrize(("entry", "now"), [("unknown", "ranging"), (None, "ranging"), ("Trending", "trending ")])
def test_unknown_or_equal_regimes_are_no_flip(entry, now):
    assert kill_score(**{**OLD_SAMPLE, "regime_at_entry": entry, "regime_now": now}).regime_flip == 0.0


def test_volatility_spike_and_threshold_equality():
    assert kill_score(**{**OLD_SAMPLE, "sigma_now": 0.03}).sigma_spike == pytest.approx(0.5)
    assert kill_score(**{**OLD_SAMPLE, "sigma_now": 0.08}).sigma_spike == 1.0
    exactly = kill_score(**{**OLD_SAMPLE, "regime_now": "trending", "trend_now": 1.0, "age_s": 0}, threshold=0.0)
    assert exactly.score == 0.0 and exactly.should_close  # ">= threshold"


def test_missing_data_never_closes():
    score = kill_score(
        regime_at_entry=None, regime_now=None, sigma_at_entry=None, sigma_now=float("nan"),
        trend_at_entry=0.0, trend_now=float("inf"), age_s=float("nan"),
    )
    assert score.score == 0.0 and not score.should_close


finite_or_none = st.none() | st.floats(allow_nan=True, allow_infinity=True)


@given(
    st.none() | st.text(max_size=8), st.none() | st.text(max_size=8), finite_or_none, finite_or_none,
    finite_or_none, finite_or_none, st.floats(allow_nan=True, allow_infinity=True),
)
def test_kill_components_stay_in_the_unit_interval(r0, r1, s0, s1, t0, t1, age):
    score = kill_score(
        regime_at_entry=r0, regime_now=r1, sigma_at_entry=s0, sigma_now=s1, trend_at_entry=t0, trend_now=t1, age_s=age
    )
    parts = (score.regime_flip, score.sigma_spike, score.trend_drop, score.age_penalty)
    assert all(0.0 <= p <= 1.0 for p in parts)
    assert 0.0 <= score.score <= 1.0 + 1e-12


# --- trailing and break-even -----------------------------------------------------------------


def test_trailing_stop_follows_the_extreme_and_rounds_toward_the_market():
    assert trail_stop(Side.BUY, D("110"), D("0.008"), D("99"), D("0.01")) == D("109.12")
    assert trail_stop(Side.BUY, D("100.005"), D("0.008"), D("99"), D("0.01")) == D("99.21")  # 99.20496 → up
    assert trail_stop(Side.SELL, D("90"), D("0.008"), D("101"), D("0.01")) == D("90.72")
    assert trail_stop(Side.BUY, D("105"), D("0.008"), D("104.5"), D("0.01")) == D("104.5")  # never looser


def test_trailing_stop_stays_strictly_beyond_the_extreme_with_coarse_ticks():
    assert trail_stop(Side.BUY, D("100"), D("0.001"), D("90"), D("1")) == D("99")
    assert trail_stop(Side.SELL, D("100"), D("0.001"), D("110"), D("1")) == D("101")


@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from(Side),
    path=st.lists(st.decimals(D("0.01"), D("1000"), places=2), min_size=1, max_size=30),
    callback=st.decimals(D("0.001"), D("0.1"), places=3),
    tick=st.sampled_from([D("0.01"), D("0.05"), D("1")]),
)
def test_trailing_stop_never_moves_against_the_trade(side, path, callback, tick):
    stop = D("0.01") if side is Side.BUY else D("100000")
    extreme = None
    for price in path:
        extreme = price if extreme is None else (max(extreme, price) if side is Side.BUY else min(extreme, price))
        new = trail_stop(side, extreme, callback, stop, tick)
        assert (new >= stop) if side is Side.BUY else (new <= stop)
        assert new > 0
        if new != stop:
            assert is_tick_multiple(new, tick)
            assert (new < extreme) if side is Side.BUY else (new > extreme)
        stop = new


def test_break_even_covers_the_fee_buffer():
    assert break_even_stop(Side.BUY, D("100"), D("0.01"), D("0.001")) == D("100.10")
    assert break_even_stop(Side.BUY, D("100.001"), D("0.01"), D("0.001")) == D("100.11")  # rounded in favour
    assert break_even_stop(Side.SELL, D("100.001"), D("0.01"), D("0.001")) == D("99.90")


# --- the exit decision -----------------------------------------------------------------------


def test_nothing_happens_between_the_levels():
    state = start()
    decision = decide_exit(state, bar("100.5", high="100.8", low="99.5"))
    assert decision.action is ExitAction.NONE and decision.state == state


def test_stop_loss_hit_by_the_low_of_the_interval():
    decision = decide_exit(start(), bar("99.6", low="99.29"))
    assert decision.action is ExitAction.CLOSE_ALL and decision.reason is ExitReason.SL
    assert decision.trigger_price == D("99.29") and decision.close_fraction == 1
    assert decision.state.closed
    assert decide_exit(decision.state, bar("50")).action is ExitAction.NONE  # closed stays closed


def test_short_stop_is_hit_by_the_high():
    state = start(Side.SELL)
    decision = decide_exit(state, bar("100.2", high=str(state.stop)))
    assert decision.reason is ExitReason.SL


def test_tp1_harvests_and_moves_the_stop_into_profit():
    decision = decide_exit(start(), bar("100.9"))
    assert decision.action is ExitAction.TAKE_PROFIT and decision.take_profits == (1,)
    assert decision.close_fraction == D("0.3") and decision.trigger_price == D("100.86")
    assert decision.new_stop is not None and decision.new_stop >= D("100.10")  # at least break-even + fees
    assert decision.state.tps_done == 1 and decision.state.stop == decision.new_stop


def test_break_even_without_trailing():
    policy = ExitPolicy(trailing_after_tp=9)
    decision = decide_exit(start(), bar("100.9"), policy)
    assert decision.state.stop == D("100.10") and decision.state.stop_kind is StopKind.BREAK_EVEN
    assert decide_exit(decision.state, bar("100.1", low="100.05"), policy).reason is ExitReason.SL


def test_two_targets_in_one_interval_are_harvested_together():
    decision = decide_exit(start(), bar("101.8"))
    assert decision.take_profits == (1, 2) and decision.close_fraction == D("0.6")


def test_the_last_target_closes_the_rest():
    state = decide_exit(start(), bar("101.8")).state
    decision = decide_exit(state, bar("102.6"))
    assert decision.action is ExitAction.CLOSE_ALL and decision.reason is ExitReason.TP
    assert decision.take_profits == (3,) and decision.close_fraction == D("0.4")
    everything = decide_exit(start(), bar("103"))
    assert everything.take_profits == (1, 2, 3) and everything.close_fraction == 1


def test_stop_and_target_in_one_interval_counts_as_stopped():
    decision = decide_exit(start(), bar("100", high="101", low="99"))
    assert decision.reason is ExitReason.SL


def test_trailing_ratchets_then_exits_as_trailing():
    state = decide_exit(start(), bar("100.9")).state
    moved = decide_exit(state, bar("101.5"))
    assert moved.action is ExitAction.MOVE_STOP and moved.new_stop == D("100.69")  # 101.5 × 0.992
    assert moved.state.stop_kind is StopKind.TRAILING
    small = decide_exit(moved.state, bar("101.55"))  # 5 cents better: below the 0.1 % step
    assert small.action is ExitAction.NONE and small.state.extreme == D("101.55")
    exit_ = decide_exit(small.state, bar("100.69"))
    assert exit_.action is ExitAction.CLOSE_ALL and exit_.reason is ExitReason.TRAILING
    assert exit_.close_fraction == D("0.7")


def test_price_already_through_a_new_trailing_stop_closes_at_market():
    state = decide_exit(start(), bar("100.9")).state
    decision = decide_exit(state, bar("100.7", high="101.6"))
    assert decision.action is ExitAction.CLOSE_ALL and decision.reason is ExitReason.TRAILING
    assert decision.trigger_price == D("100.7")


def test_time_limit():
    policy = ExitPolicy(max_hold_s=3600)
    assert decide_exit(start(), bar("100.2", minutes=59), policy).action is ExitAction.NONE
    decision = decide_exit(start(), bar("100.2", minutes=60), policy)
    assert decision.reason is ExitReason.TIME_LIMIT and decision.trigger_price == D("100.2")
    assert decide_exit(start(), bar("100.2", minutes=10**6), ExitPolicy(max_hold_s=None)).action is ExitAction.NONE


def test_price_move_must_be_ordered():
    with pytest.raises(ValueError):
        PriceMove(price=D("1"), high=D("0.9"), low=D("0.8"), at=T0)
    with pytest.raises(ValueError):
        PriceMove(price=D("0"), high=D("0"), low=D("0"), at=T0)


def test_exit_state_survives_continue_as_new():
    state = decide_exit(start(), bar("100.9")).state
    assert ExitState.model_validate_json(state.model_dump_json()) == state
    naive = ExitState.start(levels(), opened_at=T0.replace(tzinfo=None))
    assert naive.opened_at == T0


@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from(Side),
    steps=st.lists(st.tuples(st.integers(-150, 150), st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=40),
)
def test_any_price_path_is_handled_consistently(side, steps):
    """Stops never loosen, harvested fractions never exceed the position, and a closed trade
    stays closed; replaying the same path gives the same decisions (determinism)."""

    def run():
        state, out = start(side), []
        price = D("100")
        for minute, (move_cents, up, down) in enumerate(steps, start=1):
            price = max(D("50"), price + D(move_cents) / 100)
            move = PriceMove(price=price, high=price + D(up) / 100, low=price - D(down) / 100, at=T0 + timedelta(minutes=minute))
            decision = decide_exit(state, move)
            out.append(decision)
            if not state.closed:
                tighter = (decision.state.stop >= state.stop) if side is Side.BUY else (decision.state.stop <= state.stop)
                assert tighter
            state = decision.state
        return out

    decisions = run()
    harvested = sum((d.close_fraction for d in decisions), D(0))
    assert harvested <= 1
    closes = [i for i, d in enumerate(decisions) if d.action is ExitAction.CLOSE_ALL]
    assert len(closes) <= 1
    if closes:
        assert harvested == 1
        assert all(d.action is ExitAction.NONE for d in decisions[closes[0] + 1 :])
    assert decisions == run()
