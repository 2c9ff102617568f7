"""Adaptive levels: whatever the inputs, every level is > 0, on the tick, on the correct side and
in order; the stop stays inside its clamps; the old ExitBrain's tendencies hold."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trading.intent import parse_stream_fields
from trading.levels import (
    DEFAULT_POLICY,
    LevelPolicy,
    LevelsError,
    atr_fraction,
    classify_against_market,
    compute_adaptive_levels,
    is_tick_multiple,
    levels_for_intent,
    rebase_levels,
    round_to_tick,
    tick_above,
    tick_below,
    validate_manual_levels,
)
from trading.models import Side

D = Decimal
P = DEFAULT_POLICY


def near_levels(**changes):
    args = dict(
        entry_price=D("1.465"),
        side=Side.BUY,
        leverage=1,
        tick_size=D("0.0001"),
        volatility_factor=0.5513439007580968,
        atr_value=D("0.02"),
        confidence=0.72,
    )
    return compute_adaptive_levels(**{**args, **changes})


def assert_valid(levels, *, entry=None, tick=None):
    """The invariants every set of levels must satisfy."""
    entry = levels.entry_price if entry is None else entry
    tick = levels.tick_size if tick is None else tick
    prices = [levels.stop_loss, *(tp.price for tp in levels.take_profits)]
    assert all(p > 0 for p in prices), prices
    assert all(is_tick_multiple(p, tick) for p in prices), prices
    tps = [tp.price for tp in levels.take_profits]
    if levels.side is Side.BUY:
        assert levels.stop_loss < entry < tps[0]
        assert all(a < b for a, b in zip(tps, tps[1:]))
    else:
        assert levels.stop_loss > entry > tps[0]
        assert all(a > b for a, b in zip(tps, tps[1:]))
    assert sum(tp.fraction for tp in levels.take_profits) == 1


def expected_stop(side, entry, tick, sl_pct):
    """The stop by the rule, in exact fractions (none of levels.py's rounding helpers): the
    planned stop entry × (1 ∓ sl_pct) rounded to the tick TOWARD the entry (BUY: up, SELL:
    down), so it is never farther than planned; only when that lands on or beyond the entry
    (the planned distance is under a tick) the nearest tick strictly on the losing side."""
    e, t, pct = Fraction(entry), Fraction(tick), Fraction(sl_pct)
    if side is Side.BUY:
        stop = math.ceil(e * (1 - pct) / t) * t
        return stop if stop < e else (math.ceil(e / t) - 1) * t
    stop = math.floor(e * (1 + pct) / t) * t
    return stop if stop > e else (math.floor(e / t) + 1) * t


def assert_stop_within_plan(levels):
    """The stop is exactly the rule's stop: no farther from the entry than the planned
    distance (no tick of slack), and less than one tick nearer."""
    entry, tick = Fraction(levels.entry_price), Fraction(levels.tick_size)
    stop, planned = Fraction(levels.stop_loss), Fraction(levels.entry_price) * Fraction(levels.sl_distance_pct)
    assert stop == expected_stop(levels.side, levels.entry_price, levels.tick_size, levels.sl_distance_pct), (
        levels.side, levels.entry_price, levels.tick_size, levels.sl_distance_pct, levels.stop_loss)
    distance = abs(entry - stop)
    if planned >= tick:
        assert distance <= planned, (levels.stop_loss, float(distance), float(planned))  # no slack
        assert planned - distance < tick  # the tick nearest the plan on the entry's side
    else:
        assert distance <= tick  # the plan is under a tick: the nearest valid stop


# --- the seeds -------------------------------------------------------------------------------


def test_near_seed_reproduces_the_old_2_percent_stop():
    levels = near_levels()
    assert levels.stop_loss == D("1.4357")  # what the old producer sent: entry − 2 %
    assert [tp.price for tp in levels.take_profits] == [D("1.5028"), D("1.5406"), D("1.5784")]
    assert [tp.fraction for tp in levels.take_profits] == [D("0.3"), D("0.3"), D("0.4")]
    assert levels.trailing_callback_pct == D("0.008")
    assert levels.factors.unclamped_sl_pct > P.max_sl_pct  # 2.05 %, clamped to 2 %
    assert_valid(levels)


def test_fhe_seed_short_at_10x_gets_a_tighter_stop_above_entry():
    intent = parse_stream_fields({"payload": '{"symbol":"FHEUSDT","side":"SELL","confidence":0.56116,'
                                  '"entry_price":0.12433,"position_size_usd":200.0,"leverage":10.0,'
                                  '"timestamp":"2026-02-03T22:45:36.933921","model":"fallback-trend-following"}'})
    levels = levels_for_intent(intent, tick_size=D("0.00001"))
    assert levels.side is Side.SELL
    assert levels.stop_loss == D("0.12511")  # 0.63 % above: 1 % default × leverage damping at 10×
    assert levels.sl_distance_pct < D("0.01")
    assert_valid(levels)
    assert levels_for_intent(intent, tick_size=D("0.00001"), entry_price=D("0.125")).entry_price == D("0.125")


# --- the old ExitBrain's tendencies ----------------------------------------------------------


def test_fail_safe_clamps():
    assert near_levels(atr_value=D("0.5")).sl_distance_pct == P.max_sl_pct
    assert near_levels(atr_value=D("0.0001"), volatility_factor=0).sl_distance_pct == P.min_sl_pct
    assert near_levels(leverage=125, atr_value=D("0.5")).sl_distance_pct == D("0.004")  # half the margin
    tight = near_levels(atr_value=D("0.0001"), confidence=0)
    assert tight.take_profits[0].distance_pct >= P.min_tp_pct


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 124), st.integers(1, 124))
def test_higher_leverage_never_widens_the_stop(a, b):
    low, high = sorted((a, b))
    assert near_levels(leverage=high).sl_distance_pct <= near_levels(leverage=low).sl_distance_pct


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 10), st.floats(0, 10), st.decimals(D("0.001"), D("0.1"), places=4), st.decimals(D("0.001"), D("0.1"), places=4))
def test_more_volatility_or_atr_never_tightens_the_stop(v1, v2, a1, a2):
    v_low, v_high = sorted((v1, v2))
    a_low, a_high = sorted((a1, a2))
    assert near_levels(volatility_factor=v_high).sl_distance_pct >= near_levels(volatility_factor=v_low).sl_distance_pct
    assert near_levels(atr_value=a_high).sl_distance_pct >= near_levels(atr_value=a_low).sl_distance_pct


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_more_confidence_never_shrinks_the_targets(c1, c2):
    low, high = sorted((c1, c2))
    for a, b in zip(near_levels(confidence=low).take_profits, near_levels(confidence=high).take_profits):
        assert b.distance_pct >= a.distance_pct


# --- properties over any input ---------------------------------------------------------------

entries = st.builds(
    lambda mantissa, exponent: D(mantissa).scaleb(exponent - 6),
    st.integers(1_000_000, 9_999_999),
    st.integers(-6, 5),
)  # 1e-6 .. 1e6, seven significant digits
ticks = st.builds(lambda k, e: D(k).scaleb(e), st.sampled_from([1, 2, 5, 10, 25, 3, 7]), st.integers(-12, 3))
inputs = dict(
    side=st.sampled_from(Side),
    leverage=st.integers(1, 125),
    volatility_factor=st.none() | st.floats(0, 10),
    atr_value=st.none() | st.decimals(D(0), D("0.99"), places=5),
    confidence=st.floats(0, 1),
)


@settings(max_examples=300, deadline=None)
@given(entry=entries, tick_mantissa=st.sampled_from([1, 2, 5, 25]), tick_digits=st.integers(3, 10), **inputs)
def test_any_input_gives_valid_levels_within_the_clamps(entry, tick_mantissa, tick_digits, **kwargs):
    tick = D(tick_mantissa).scaleb(entry.adjusted() - tick_digits)  # the price is at least 40 ticks
    levels = compute_adaptive_levels(entry_price=entry, tick_size=tick, **kwargs)
    assert_valid(levels, entry=entry, tick=tick)
    assert_stop_within_plan(levels)
    if levels.sl_distance_pct * entry >= tick:  # the planned stop is at least a tick away
        assert levels.actual_sl_distance_pct <= levels.sl_distance_pct  # exactly: never farther
    one_tick = tick / entry
    distance = levels.actual_sl_distance_pct
    assert P.min_sl_pct - one_tick <= distance <= P.max_sl_pct + one_tick
    assert P.min_sl_pct <= levels.sl_distance_pct <= P.max_sl_pct
    tp1_distance = abs(levels.take_profits[0].price - entry) / entry
    assert tp1_distance >= P.min_tp_pct  # take-profits are rounded away from the entry


@settings(max_examples=300, deadline=None)
@given(entry=entries, tick=ticks, **inputs)
def test_any_tick_gives_valid_levels_or_a_clear_error(entry, tick, **kwargs):
    try:
        levels = compute_adaptive_levels(entry_price=entry, tick_size=tick, **kwargs)
    except LevelsError as err:
        assert entry < 100 * tick, err  # only when the tick is coarse for the price
        return
    assert_valid(levels, entry=entry, tick=tick)
    assert_stop_within_plan(levels)


@settings(max_examples=200, deadline=None)
@given(entry=entries, move=st.decimals(D("0.5"), D("2"), places=3), **inputs)
def test_rebased_levels_keep_distances_and_stay_valid(entry, move, **kwargs):
    tick = D(1).scaleb(entry.adjusted() - 5)
    levels = compute_adaptive_levels(entry_price=entry, tick_size=tick, **kwargs)
    fill = round_to_tick(entry * move, tick, "ROUND_FLOOR")
    assume(fill > 100 * tick)
    rebased = rebase_levels(levels, fill)
    assert_valid(rebased, entry=fill)
    assert_stop_within_plan(rebased)
    assert rebased.sl_distance_pct == levels.sl_distance_pct
    assert [t.distance_pct for t in rebased.take_profits] == [t.distance_pct for t in levels.take_profits]
    assert rebase_levels(levels, entry) == levels


# --- hand-computed stops: rounded toward the entry ------------------------------------------
# No ATR, neutral volatility, leverage 1, confidence 0.5: sl = default 1 %, tp_scale = 0.75 +
# 0.75 × 0.5 = 1.125, so TP distances 1.125 % / 2.25 % / 3.375 %. The planned stops below are
# off the tick, so rounding the stop the wrong way changes the price.


@pytest.mark.parametrize(
    ("side", "entry", "tick", "atr", "stop", "takes"),
    [
        # 101.23 × 0.99 = 100.2177 → up to 100.3 (not 100.2): 0.93 from the entry ≤ planned 1.0123
        # TPs 101.23 × 1.01125 = 102.3688… → 102.4; × 1.0225 = 103.5077 → 103.6; × 1.03375 = 104.6465 → 104.7
        (Side.BUY, "101.23", "0.1", None, "100.3", ["102.4", "103.6", "104.7"]),
        # 101.23 × 1.01 = 102.2423 → down to 102.2 (not 102.3): 0.97 ≤ 1.0123
        # TPs × 0.98875 = 100.0912 → 100.0; × 0.9775 = 98.9523 → 98.9; × 0.96625 = 97.8135 → 97.8
        (Side.SELL, "101.23", "0.1", None, "102.2", ["100.0", "98.9", "97.8"]),
        # ATR 0.04 % clamped up to the 0.1 % minimum: 3.3333 × 0.999 = 3.3299667 → 3.330 (not 3.329)
        # TP unit max(0.1 % × 1.125, 0.3 %) = 0.3 %: 3.3433 → 3.344, 3.3533 → 3.354, 3.3633 → 3.364
        (Side.BUY, "3.3333", "0.001", "0.0004", "3.330", ["3.344", "3.354", "3.364"]),
        # 3.3333 × 1.001 = 3.3366333 → 3.336 (not 3.337); TPs 3.3233001 → 3.323, 3.3133 → 3.313, 3.3033 → 3.303
        (Side.SELL, "3.3333", "0.001", "0.0004", "3.336", ["3.323", "3.313", "3.303"]),
        # planned 1 % of 10 = 0.10 is under the 0.5 tick: the nearest valid stop, one tick away
        # TPs 10.1125 → 10.5, then strictly beyond the previous: 11.0, 11.5
        (Side.BUY, "10.00", "0.5", None, "9.5", ["10.5", "11.0", "11.5"]),
        (Side.SELL, "10.00", "0.5", None, "10.5", ["9.5", "9.0", "8.5"]),
    ],
)
def test_hand_computed_stops_are_rounded_toward_the_entry(side, entry, tick, atr, stop, takes):
    levels = compute_adaptive_levels(entry_price=D(entry), side=side, leverage=1, tick_size=D(tick),
                                     atr_value=None if atr is None else D(atr), confidence=0.5)
    assert levels.stop_loss == D(stop)
    assert [tp.price for tp in levels.take_profits] == [D(t) for t in takes]
    assert_valid(levels)
    assert_stop_within_plan(levels)


def test_rebased_stop_is_rounded_toward_the_new_fill():
    # planned 1 % kept; fill 101.23 → BUY stop 100.2177 up to 100.3; fill 99.99 → 98.9901 up to 99.0
    levels = compute_adaptive_levels(entry_price=D("100"), side=Side.BUY, leverage=1, tick_size=D("0.1"),
                                     confidence=0.5)
    assert levels.stop_loss == D("99.0")
    assert rebase_levels(levels, D("101.23")).stop_loss == D("100.3")
    assert rebase_levels(levels, D("99.99")).stop_loss == D("99.0")
    short = compute_adaptive_levels(entry_price=D("100"), side=Side.SELL, leverage=1, tick_size=D("0.1"),
                                    confidence=0.5)
    assert rebase_levels(short, D("101.23")).stop_loss == D("102.2")  # 102.2423 down


# --- the market has moved --------------------------------------------------------------------


def test_classify_against_market_for_a_long():
    levels = near_levels()  # stop 1.4357, TPs 1.5028 / 1.5406 / 1.5784
    assert not classify_against_market(levels, Side.BUY, D("1.47")).any
    assert classify_against_market(levels, Side.BUY, D("1.4357")).stop_crossed  # equal triggers (-2021)
    assert classify_against_market(levels, Side.BUY, D("1.40")).take_profits_crossed == ()
    assert classify_against_market(levels, Side.BUY, D("1.55")).take_profits_crossed == (1, 2)


def test_classify_against_market_for_a_short():
    levels = near_levels(side=Side.SELL)
    assert classify_against_market(levels, Side.SELL, levels.stop_loss + D("0.01")).stop_crossed
    assert classify_against_market(levels, Side.SELL, D("1")).take_profits_crossed == (1, 2, 3)


def test_classify_refuses_the_wrong_side():
    with pytest.raises(LevelsError, match="levels are for a BUY"):
        classify_against_market(near_levels(), Side.SELL, D("1.47"))


# --- operator adjustments --------------------------------------------------------------------


def test_valid_manual_levels_have_no_problems():
    assert validate_manual_levels(Side.BUY, D("100"), D("95"), [D("105"), D("110")], liquidation_price=D("80")) == []
    assert validate_manual_levels(Side.SELL, D("100"), D("105"), [D("95"), D("90")], liquidation_price=D("120")) == []
    assert validate_manual_levels(Side.BUY, D("100"), take_profits=[D("101")]) == []


@pytest.mark.parametrize(
    ("side", "stop", "takes", "liquidation", "expected"),
    [
        (Side.BUY, D("101"), [], None, "stop_loss 101 must be below the current price 100 for a BUY"),
        (Side.SELL, D("99"), [], None, "stop_loss 99 must be above the current price 100 for a SELL"),
        (Side.BUY, D("-5"), [], None, "stop_loss must be a finite number > 0, got -5"),
        (Side.BUY, D("0"), [], None, "stop_loss must be a finite number > 0, got 0"),
        (Side.BUY, D("NaN"), [], None, "stop_loss must be a finite number > 0, got NaN"),
        (Side.BUY, D("80"), [], D("85"), "stop_loss 80 is at or beyond the liquidation price 85"),
        (Side.SELL, D("130"), [], D("120"), "stop_loss 130 is at or beyond the liquidation price 120"),
        (Side.BUY, None, [D("99")], None, "take_profit 1 (99) must be above the current price 100 for a BUY"),
        (Side.SELL, None, [D("95"), D("97")], None, "take_profit 2 (97) must be further below than take_profit 1 (95)"),
        (Side.BUY, None, [D("-1")], None, "take_profit 1 must be a finite number > 0, got -1"),
    ],
)
def test_bad_manual_levels_are_refused_clearly(side, stop, takes, liquidation, expected):
    problems = validate_manual_levels(side, D("100"), stop, takes, liquidation_price=liquidation)
    assert any(expected in problem for problem in problems), problems


# --- tick arithmetic and edge cases ----------------------------------------------------------


@pytest.mark.parametrize("tick", [D("0.01"), D("0.025"), D("0.5"), D("5"), D("0.00000001")])
def test_tick_helpers(tick):
    price = D("123.4567891")
    floor, ceil = round_to_tick(price, tick, "ROUND_FLOOR"), round_to_tick(price, tick, "ROUND_CEILING")
    assert floor <= price <= ceil and ceil - floor <= tick
    assert tick_below(floor, tick) == floor - tick and tick_above(ceil, tick) == ceil + tick
    assert tick_below(price, tick) < price < tick_above(price, tick)
    assert all(is_tick_multiple(x, tick) for x in (floor, ceil, tick_below(price, tick)))


def test_levels_keep_the_tick_precision():
    assert str(near_levels().stop_loss) == "1.4357"
    assert str(near_levels(entry_price=D("2"), tick_size=D("0.0010")).stop_loss) == "1.9600"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(entry_price=D("0"), side=Side.BUY), "entry_price must be a finite number > 0"),
        (dict(entry_price=D("NaN"), side=Side.BUY), "entry_price must be a finite number > 0"),
        (dict(entry_price=D("1"), side=Side.BUY, tick_size=D("0")), "tick_size must be a finite number > 0"),
        (dict(entry_price=D("1"), side=Side.BUY, leverage=0), "leverage must be >= 1"),
        (dict(entry_price=D("1"), side=Side.BUY, confidence=float("nan")), "confidence must be a finite number"),
        (dict(entry_price=D("0.5"), side=Side.BUY, tick_size=D("1")), "no stop price fits"),
        (dict(entry_price=D("3"), side=Side.SELL, tick_size=D("1")), "take-profit 3 does not fit above 0"),
    ],
)
def test_impossible_levels_raise_levels_error(kwargs, message):
    with pytest.raises(LevelsError, match=message):
        compute_adaptive_levels(**{"leverage": 1, "tick_size": D("0.01"), **kwargs})


def test_atr_is_read_as_a_fraction_unless_it_cannot_be_one():
    assert atr_fraction(D("0.02"), D("1.465")) == D("0.02")
    assert atr_fraction(D("500"), D("100000")) == D("0.005")
    assert atr_fraction(None, D("1")) is None and atr_fraction(D("0"), D("1")) is None
    assert atr_fraction(float("nan"), D("1")) is None


@pytest.mark.parametrize(
    "changes",
    [
        dict(harvest_fractions=(D("0.5"), D("0.4"), D("0.4"))),
        dict(tp_r_multiples=(D("2"), D("1"), D("3"))),
        dict(min_sl_pct=D("0.03")),
        dict(tp_r_multiples=(D("1"), D("2"))),
    ],
)
def test_inconsistent_policies_are_refused(changes):
    with pytest.raises(ValueError):
        LevelPolicy(**changes)


def test_levels_survive_a_json_round_trip():
    levels = near_levels()
    assert type(levels).model_validate_json(levels.model_dump_json()) == levels
