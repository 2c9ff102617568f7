"""Sizing: the loss at the stop stays within the risk budget, no cap is ever exceeded, the
quantity is a step multiple, and a size below the market minimum is refused with a reason."""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.models import Side
from trading.sizing import MarketRules, SizingPolicy, floor_to_step, loss_per_contract, size_position

D = Decimal
NEAR_MARKET = MarketRules(step_size=D("1"), min_qty=D("1"), min_notional=D("5"), max_leverage=50)


def size(**changes):
    args = dict(
        side=Side.BUY,
        entry_price=D("1.465"),
        stop_price=D("1.4357"),
        confidence=0.72,
        equity=D("10000"),
        free_margin=D("8000"),
        intent_size_usd=D("200"),
        intent_leverage=1,
        market=NEAR_MARKET,
    )
    return size_position(**{**args, **changes})


def test_near_seed_is_capped_by_the_intents_size():
    result = size()
    assert result.ok and result.binding_cap == "intent_size"
    assert result.quantity == D("136")  # floor(200 / 1.465)
    assert result.notional == D("199.240") and result.margin == D("199.240") and result.leverage == 1
    assert result.loss_at_stop <= result.risk_budget


def test_intent_size_is_margin_by_default_as_the_old_producers_meant():
    result = size(side=Side.SELL, entry_price=D("0.12433"), stop_price=D("0.12511"), intent_leverage=10)
    assert result.binding_cap == "intent_size" and result.leverage == 10
    assert D("1999") < result.notional <= D("2000")  # "$200 margin ($2000 notional)"
    as_notional = size(
        side=Side.SELL, entry_price=D("0.12433"), stop_price=D("0.12511"), intent_leverage=10,
        policy=SizingPolicy(intent_size_is_margin=False),
    )
    assert D("199") < as_notional.notional <= D("200")


def test_risk_binds_on_a_small_account_and_scales_with_confidence():
    # equity 1000 × 1 % × confidence scale; stop 2 % away → roughly 0.5 × notional at stake
    low = size(equity=D("1000"), confidence=0.0, intent_size_usd=D("100000"))
    high = size(equity=D("1000"), confidence=1.0, intent_size_usd=D("100000"))
    assert low.binding_cap == high.binding_cap == "risk"
    assert low.risk_budget == D("2.5") and high.risk_budget == D("10")
    assert high.quantity > low.quantity
    assert high.loss_at_stop <= D("10") < high.loss_at_stop + loss_per_contract(D("1.465"), D("1.4357"), D("0.0005"))


def test_leverage_is_capped_by_policy_and_market():
    assert size(intent_leverage=100).leverage == 20  # policy
    assert size(intent_leverage=100, market=NEAR_MARKET.model_copy(update={"max_leverage": 8})).leverage == 8
    result = size(intent_leverage=100)
    assert result.margin == result.notional / 20


def test_other_caps_bind_when_they_are_smallest():
    assert size(intent_size_usd=D("1e6"), intent_leverage=20, equity=D("1e9")).binding_cap == "max_notional"
    assert size(free_margin=D("50")).binding_cap == "free_margin"
    assert size(market=NEAR_MARKET.model_copy(update={"max_qty": D("10")})).binding_cap == "max_qty"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(intent_size_usd=D("4")), "notional 2.93 USDT is below the market's minimum 5 USDT (binding cap: intent_size)"),
        (dict(intent_size_usd=D("1")), "quantity rounds to 0 at step 1 (binding cap: intent_size)"),
        (dict(free_margin=D("0")), "quantity rounds to 0 at step 1 (binding cap: free_margin)"),
        (dict(equity=D("-5")), "quantity rounds to 0 at step 1 (binding cap: risk)"),
        (dict(market=NEAR_MARKET.model_copy(update={"min_qty": D("500")})), "quantity 136 is below the market's minimum 500 (binding cap: intent_size)"),
    ],
)
def test_too_small_is_rejected_with_a_reason(changes, expected):
    result = size(**changes)
    assert not result.ok and result.rejected_reason == expected


@pytest.mark.parametrize(
    "changes",
    [dict(stop_price=D("1.5")), dict(side=Side.SELL), dict(entry_price=D("0")),
     dict(market=MarketRules(step_size=D("0"))), dict(intent_leverage=0)],
)
def test_impossible_requests_raise(changes):
    with pytest.raises(ValueError):
        size(**changes)


def test_floor_to_step():
    assert floor_to_step(D("1.239"), D("0.01")) == D("1.23")
    assert floor_to_step(D("7"), D("2.5")) == D("5.0")
    assert floor_to_step(D("-1"), D("0.1")) == 0


# --- properties ------------------------------------------------------------------------------

money = st.decimals(D("0"), D("1e6"), places=2)


@settings(max_examples=400, deadline=None)
@given(
    side=st.sampled_from(Side),
    entry=st.decimals(D("0.0001"), D("100000"), places=4).filter(lambda x: x > 0),
    stop_pct=st.decimals(D("0.001"), D("0.5"), places=4),
    confidence=st.floats(0, 1),
    equity=money,
    free_margin=money,
    intent_size=money,
    leverage=st.integers(1, 125),
    step=st.builds(lambda k, e: D(k).scaleb(e), st.sampled_from([1, 2, 5]), st.integers(-6, 2)),
    max_qty=st.none() | st.decimals(D("0.001"), D("1e6"), places=3),
    max_notional=st.none() | st.decimals(D("1"), D("1e6"), places=2),
    min_notional=st.decimals(D("0"), D("100"), places=0),
)
def test_sizing_never_exceeds_any_cap(
    side, entry, stop_pct, confidence, equity, free_margin, intent_size, leverage, step, max_qty, max_notional, min_notional
):
    stop = entry * (1 - side.sign * stop_pct)
    policy = SizingPolicy(max_notional_usd=max_notional)
    market = MarketRules(step_size=step, max_qty=max_qty, min_notional=min_notional, max_leverage=75)
    result = size_position(
        side=side, entry_price=entry, stop_price=stop, confidence=confidence, equity=equity,
        free_margin=free_margin, intent_size_usd=intent_size, intent_leverage=leverage, market=market, policy=policy,
    )
    q = result.quantity
    with localcontext(Context(prec=80)):
        assert q >= 0 and (q / step) == (q / step).to_integral_value()
        assert result.leverage == min(leverage, policy.max_leverage, 75)
        assert q * loss_per_contract(entry, stop, policy.fee_rate) <= result.risk_budget
        assert result.risk_budget <= max(equity, 0) * policy.risk_per_trade
        assert q * entry <= intent_size * result.leverage
        assert q * entry / result.leverage <= free_margin * policy.margin_usage
        if max_notional is not None:
            assert q * entry <= max_notional
        if max_qty is not None:
            assert q <= max_qty
        # Tight: one more step would break the binding cap.
        binding = result.binding_cap
        assert q + step > {
            "risk": result.risk_budget / loss_per_contract(entry, stop, policy.fee_rate),
            "intent_size": intent_size * result.leverage / entry,
            "free_margin": free_margin * policy.margin_usage * result.leverage / entry,
            "max_notional": (max_notional or 0) / entry,
            "max_qty": max_qty or 0,
        }[binding]
    if result.ok:
        assert q > 0 and q * entry >= min_notional
    else:
        assert result.rejected_reason


# --- hand-computed sizes ---------------------------------------------------------------------
# The expectations below are literal numbers worked out in the comments, not computed with
# `loss_per_contract` or any other function under test: leaving the fees out of the loss at
# the stop (or charging them on one leg only) changes the risk-capped quantity, and these fail.


def test_hand_computed_long_capped_by_risk_with_fees_on_both_legs():
    # risk budget: equity 20000 × 1 % × (0.25 + 0.75 × confidence 0.6 = 0.70)       = 140
    # loss per contract: |100 − 98| = 2, fees 0.0005 × (100 + 98) = 0.099            = 2.099
    # risk cap: 140 / 2.099 = 66.698…, floored to the step 0.01                     = 66.69
    #   (66.69 × 2.099 = 139.98231 ≤ 140; 66.70 × 2.099 = 140.0033 > 140)
    #   without fees 140 / 2 = 70; one leg only 140 / 2.05 = 68.29; entry × 2 140 / 2.1 = 66.66
    # other caps: intent 1000 × 10 / 100 = 100; free margin 5000 × 0.95 × 10 / 100 = 475;
    #   max notional 10000 / 100 = 100
    result = size_position(
        side=Side.BUY, entry_price=D("100"), stop_price=D("98"), confidence=0.6, equity=D("20000"),
        free_margin=D("5000"), intent_size_usd=D("1000"), intent_leverage=10,
        market=MarketRules(step_size=D("0.01")), policy=SizingPolicy(max_notional_usd=D("10000")),
    )
    assert result.ok and result.binding_cap == "risk" and result.leverage == 10
    assert result.risk_budget == D("140")
    assert result.quantity == D("66.69")
    assert result.notional == D("6669") and result.margin == D("666.9")
    assert result.loss_at_stop == D("139.98231")
    assert result.cap_quantities == {"risk": D("66.69"), "intent_size": D("100"), "free_margin": D("475"),
                                     "max_notional": D("100")}


def test_hand_computed_short_at_zero_confidence_capped_by_risk():
    # risk budget: equity 40000 × 1 % × confidence floor 0.25                         = 100
    # loss per contract: |50 − 51| = 1, fees 0.0005 × (50 + 51) = 0.0505              = 1.0505
    # risk cap: 100 / 1.0505 = 95.19…, step 1                                       = 95
    #   (95 × 1.0505 = 99.7975; 96 × 1.0505 = 100.848 > 100)
    #   without fees 100; one leg only 100 / 1.025 = 97.56 → 97
    # other caps: intent 1000 × 10 / 50 = 200; free margin 10000 × 0.95 × 10 / 50 = 1900;
    #   max notional (default 5000) / 50 = 100
    result = size_position(
        side=Side.SELL, entry_price=D("50"), stop_price=D("51"), confidence=0, equity=D("40000"),
        free_margin=D("10000"), intent_size_usd=D("1000"), intent_leverage=10,
        market=MarketRules(step_size=D("1")),
    )
    assert result.ok and result.binding_cap == "risk"
    assert result.risk_budget == D("100")
    assert result.quantity == D("95")
    assert result.notional == D("4750") and result.margin == D("475")
    assert result.loss_at_stop == D("99.7975")
    assert result.cap_quantities == {"risk": D("95"), "intent_size": D("200"), "free_margin": D("1900"),
                                     "max_notional": D("100")}


def test_hand_computed_intent_margin_cap_with_step_rounding():
    # intent: 301 USDT margin × leverage 10 = 3010 notional / 2.5 = 1204, step 10       = 1200
    # risk: 100000 × 1 % × 1.0 = 1000; loss per contract 0.05 + 0.0005 × 4.95 = 0.052475;
    #   1000 / 0.052475 = 19056.7 → 19050 (without fees 20000: the cap itself is pinned too)
    # free margin 1000 × 0.95 × 10 / 2.5 = 3800; max notional 5000 / 2.5 = 2000
    # loss at the stop: 1200 × 0.052475                                             = 62.97
    result = size_position(
        side=Side.BUY, entry_price=D("2.5"), stop_price=D("2.45"), confidence=1.0, equity=D("100000"),
        free_margin=D("1000"), intent_size_usd=D("301"), intent_leverage=10,
        market=MarketRules(step_size=D("10")),
    )
    assert result.ok and result.binding_cap == "intent_size"
    assert result.quantity == D("1200")
    assert result.notional == D("3000") and result.margin == D("300")
    assert result.risk_budget == D("1000") and result.loss_at_stop == D("62.97")
    assert result.cap_quantities == {"risk": D("19050"), "intent_size": D("1200"), "free_margin": D("3800"),
                                     "max_notional": D("2000")}


def test_hand_computed_free_margin_cap_at_the_markets_leverage():
    # leverage: min(intent 50, policy 20, market 15)                                  = 15
    # free margin: 240 × 0.95 × 15 / 4 = 855 (step 1); notional 855 × 4 = 3420, margin 3420 / 15 = 228
    # risk: 1000 / (0.1 + 0.0005 × 7.9 = 0.10395) = 9620.009… → 9620
    #   (9620 × 0.10395 = 999.999; without fees 1000 / 0.1 = 10000)
    # intent: 1000 × 15 / 4 = 3750; max notional 5000 / 4 = 1250
    # loss at the stop: 855 × 0.10395                                               = 88.87725
    result = size_position(
        side=Side.BUY, entry_price=D("4"), stop_price=D("3.9"), confidence=1.0, equity=D("100000"),
        free_margin=D("240"), intent_size_usd=D("1000"), intent_leverage=50,
        market=MarketRules(step_size=D("1"), max_leverage=15),
    )
    assert result.ok and result.binding_cap == "free_margin" and result.leverage == 15
    assert result.quantity == D("855")
    assert result.notional == D("3420") and result.margin == D("228")
    assert result.loss_at_stop == D("88.87725")
    assert result.cap_quantities == {"risk": D("9620"), "intent_size": D("3750"), "free_margin": D("855"),
                                     "max_notional": D("1250")}
    capped = size_position(
        side=Side.BUY, entry_price=D("4"), stop_price=D("3.9"), confidence=1.0, equity=D("100000"),
        free_margin=D("240"), intent_size_usd=D("1000"), intent_leverage=50,
        market=MarketRules(step_size=D("1"), max_leverage=15, max_qty=D("800")),
    )
    assert capped.binding_cap == "max_qty" and capped.quantity == D("800") and capped.notional == D("3200")


def test_hand_computed_risk_cap_below_the_minimum_quantity_is_rejected():
    # risk budget: 100 × 1 % × 0.25 = 0.25; loss per contract 2 + 0.0005 × 202 = 2.101
    # risk cap: 0.25 / 2.101 = 0.11899…, step 0.001 = 0.118 (without fees 0.125) < min 0.2
    result = size_position(
        side=Side.SELL, entry_price=D("100"), stop_price=D("102"), confidence=0.0, equity=D("100"),
        free_margin=D("240"), intent_size_usd=D("1000"), intent_leverage=5,
        market=MarketRules(step_size=D("0.001"), min_qty=D("0.2")),
    )
    assert result.binding_cap == "risk" and result.quantity == D("0.118")
    assert result.loss_at_stop == D("0.247918")  # 0.118 × 2.101
    assert result.rejected_reason == "quantity 0.118 is below the market's minimum 0.2 (binding cap: risk)"


def test_loss_per_contract_by_hand():
    assert loss_per_contract(D("100"), D("98"), D("0.0005")) == D("2.099")
    assert loss_per_contract(D("50"), D("51"), D("0.0005")) == D("1.0505")
    assert loss_per_contract(D("4"), D("3.9"), D("0")) == D("0.1")
