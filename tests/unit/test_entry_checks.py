"""The price-deviation rule the gates and a late entry share (trading/entry_checks.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.entry_checks import EntryGuard, deviation_problem, late_entry_problems, price_deviation_pct
from trading.models import Side

D = Decimal


def test_deviation_is_a_percentage_of_the_intent_entry():
    assert price_deviation_pct(D("2.0000"), D("1.9500")) == D("2.5")
    assert price_deviation_pct(D("100"), D("101")) == D("1")


def test_the_limit_itself_passes_and_beyond_it_is_refused():
    assert deviation_problem(D("100"), D("101"), 1.0) is None
    assert deviation_problem(D("100"), D("101.01"), 1.0) == (
        "price moved 1.01 % from the intent's entry 100 to 101.01 (max 1 %)")


def test_reference_must_be_positive():
    with pytest.raises(ValueError):
        price_deviation_pct(D("0"), D("1"))


def guard(**change) -> EntryGuard:
    base = dict(side=Side.BUY, intent_entry_price=D("2.0000"), max_deviation_pct=1.0,
                planned_stop=D("1.9900"), gated_at_ms=1_000_000, recheck_after_s=3.0)
    base.update(change)
    return EntryGuard(**base)


@pytest.mark.parametrize(("now_ms", "attempt", "late"), [
    (1_002_000, 1, False),  # 2 s after the gates, first attempt: on time
    (1_003_000, 1, False),  # exactly the window
    (1_003_001, 1, True),   # past the window (a queue backlog)
    (1_000_500, 2, True),   # any retried attempt
])
def test_when_an_entry_is_late(now_ms, attempt, late):
    assert guard().is_late(now_ms, attempt) is late


def test_a_late_entry_is_refused_for_the_move_and_for_the_stop_side():
    assert late_entry_problems(guard(), D("2.0050")) == []
    assert late_entry_problems(guard(), D("1.9500")) == [
        "price moved 2.50 % from the intent's entry 2.0000 to 1.9500 (max 1 %)",
        "the price 1.9500 is already beyond the planned stop 1.9900"]
    sell = guard(side=Side.SELL, planned_stop=D("2.0100"))
    assert late_entry_problems(sell, D("2.0100")) == ["the price 2.0100 is already beyond the planned stop 2.0100"]
