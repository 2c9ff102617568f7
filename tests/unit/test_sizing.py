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
