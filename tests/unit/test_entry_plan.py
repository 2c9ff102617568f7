"""The one entry plan (trading/entry_plan.py): the adaptive levels at the price, then the size those
levels allow; what the gates check and what the workflow opens are this one value."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from trading.entry_plan import plan_entry
from trading.intent import TradeIntent
from trading.levels import DEFAULT_POLICY, levels_for_intent
from trading.models import Side
from trading.sizing import DEFAULT_SIZING_POLICY, MarketRules, size_position

NEAR = MarketRules(step_size=D("1"), min_qty=D("1"), min_notional=D("5"), max_leverage=50)
T = datetime(2026, 12, 1, tzinfo=UTC)


def intent(**changes) -> TradeIntent:
    fields = dict(intent_id="p1", symbol="NEARUSDT", side=Side.BUY, confidence=0.8, entry_price=D("1.465"),
                  position_size_usd=D("100"), leverage=10, timestamp=T)
    return TradeIntent(**{**fields, **changes})


def test_the_plan_sizes_with_the_adaptive_stop_not_a_guessed_one():
    plan = plan_entry(intent(), D("1.470"), tick_size=D("0.001"), market=NEAR, equity=D("10000"),
                      free_margin=D("10000"), levels=DEFAULT_POLICY, sizing=DEFAULT_SIZING_POLICY)
    levels = levels_for_intent(intent(), tick_size=D("0.001"), entry_price=D("1.470"), policy=DEFAULT_POLICY)
    assert plan.levels == levels and plan.price == D("1.470")
    assert plan.sizing == size_position(
        side=Side.BUY, entry_price=D("1.470"), stop_price=levels.stop_loss, confidence=0.8, equity=D("10000"),
        free_margin=D("10000"), intent_size_usd=D("100"), intent_leverage=10, market=NEAR,
        policy=DEFAULT_SIZING_POLICY)
    assert plan.ok and plan.sizing.quantity > 0 and plan.levels.stop_loss < D("1.470")


def test_a_capped_leverage_and_a_plan_that_cannot_open():
    capped = plan_entry(intent(), D("1.470"), tick_size=D("0.001"), market=NEAR, equity=D("10000"),
                        free_margin=D("10000"), levels=DEFAULT_POLICY, sizing=DEFAULT_SIZING_POLICY, leverage=3)
    assert capped.sizing.leverage == 3
    broke = plan_entry(intent(), D("1.470"), tick_size=D("0.001"), market=NEAR, equity=D("0.5"),
                       free_margin=D("0.5"), levels=DEFAULT_POLICY, sizing=DEFAULT_SIZING_POLICY)
    assert not broke.ok and broke.sizing.rejected_reason
    with pytest.raises(ValueError):
        plan_entry(intent(), D("0"), tick_size=D("0.001"), market=NEAR, equity=D("1"), free_margin=D("1"),
                   levels=DEFAULT_POLICY, sizing=DEFAULT_SIZING_POLICY)
