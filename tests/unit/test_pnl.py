"""Realized PnL: exact, net of fees and funding, valued against the average entry, with R
multiple and holding time; rounding to cents only for display."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.models import Side
from trading.pnl import (
    Fill,
    FundingPayment,
    format_duration,
    initial_risk,
    r_multiple,
    realized_pnl,
    to_cents,
)

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(side, price, qty, fee="0", minutes=0):
    return Fill(side=side, price=D(price), qty=D(qty), fee=D(fee), at=T0 + timedelta(minutes=minutes))


def test_long_round_trip_without_fees():
    pnl = realized_pnl(Side.BUY, [fill(Side.BUY, "100", "2")], [fill(Side.SELL, "103.5", "2", minutes=90)])
    assert pnl.gross_pnl == pnl.net_pnl == D("7.0")
    assert pnl.avg_entry_price == 100 and pnl.avg_exit_price == D("103.5") and pnl.is_flat
    assert pnl.holding_s == 5400


def test_short_profits_when_price_falls():
    pnl = realized_pnl(Side.SELL, [fill(Side.SELL, "0.12433", "16086")], [fill(Side.BUY, "0.12000", "16086")])
    assert pnl.gross_pnl == D("16086") * (D("0.12433") - D("0.12000"))


def test_fees_and_funding_are_netted():
    pnl = realized_pnl(
        Side.BUY,
        [fill(Side.BUY, "100", "1", fee="0.05")],
        [fill(Side.SELL, "101", "1", fee="0.0505")],
        [FundingPayment(amount=D("-0.01")), FundingPayment(amount=D("0.004"))],
    )
    assert pnl.gross_pnl == 1 and pnl.fees == D("0.1005") and pnl.funding == D("-0.006")
    assert pnl.net_pnl == D("0.8935")
    assert pnl.display()["net_pnl"] == "0.89"


def test_maker_rebates_reduce_the_fees():
    pnl = realized_pnl(Side.BUY, [fill(Side.BUY, "100", "1", fee="-0.01")], [fill(Side.SELL, "100", "1", fee="0.05")])
    assert pnl.fees == D("0.04") and pnl.net_pnl == D("-0.04")


def test_partial_fills_and_partial_closes_use_the_average_entry():
    entries = [fill(Side.BUY, "100", "1"), fill(Side.BUY, "102", "3", minutes=1)]  # average 101.5
    exits = [fill(Side.SELL, "103", "1", minutes=30), fill(Side.SELL, "104", "1", minutes=60)]
    pnl = realized_pnl(Side.BUY, entries, exits)
    assert pnl.avg_entry_price == D("101.5") and pnl.closed_qty == 2 and not pnl.is_flat
    assert pnl.gross_pnl == D("4")  # (103 + 104) − 2 × 101.5
    assert pnl.avg_exit_price == D("103.5") and pnl.holding_s == 3600


def test_r_multiple_against_the_initial_stop():
    entries = [fill(Side.BUY, "100", "2")]
    stopped = realized_pnl(Side.BUY, entries, [fill(Side.SELL, "98", "2")], initial_stop=D("98"))
    assert stopped.initial_risk == 4 and stopped.r_multiple == -1
    winner = realized_pnl(Side.BUY, entries, [fill(Side.SELL, "105", "2")], initial_stop=D("98"))
    assert winner.r_multiple == D("2.5") and winner.display()["r_multiple"] == "2.50"
    assert realized_pnl(Side.BUY, entries, []).r_multiple is None
    assert r_multiple(D("5"), D("0")) is None
    assert initial_risk(Side.SELL, D("100"), D("102"), D("3")) == 6


def test_holding_time_can_be_given_explicitly():
    pnl = realized_pnl(
        Side.BUY, [Fill(side=Side.BUY, price=D(1), qty=D(1))], [Fill(side=Side.SELL, price=D(1), qty=D(1))],
        opened_at=T0, closed_at=T0 + timedelta(days=3, hours=4, minutes=5),
    )
    assert pnl.display()["holding_time"] == "3d 4h 05m"
    assert realized_pnl(Side.BUY, [Fill(side=Side.BUY, price=D(1), qty=D(1))], []).holding_s is None


@pytest.mark.parametrize(("seconds", "text"), [(45, "45s"), (125, "2m 05s"), (7200, "2h 00m"), (90061, "1d 1h 01m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_cents_only_for_display():
    pnl = realized_pnl(Side.BUY, [fill(Side.BUY, "0.12345", "1")], [fill(Side.SELL, "0.12350", "1")])
    assert pnl.net_pnl == D("0.00005")  # every digit kept
    assert pnl.display()["net_pnl"] == "0.00"
    assert to_cents(D("1.005")) == D("1.00") and to_cents(D("1.015")) == D("1.02")  # half-even


@pytest.mark.parametrize(
    ("entries", "exits", "message"),
    [
        ([], [], "at least one entry fill"),
        ([fill(Side.SELL, "1", "1")], [], "entry fill is a SELL, the position is a BUY"),
        ([fill(Side.BUY, "1", "1")], [fill(Side.BUY, "1", "1")], "closing a BUY needs SELL"),
        ([fill(Side.BUY, "1", "1")], [fill(Side.SELL, "1", "2")], "exits (2) exceed the position (1)"),
    ],
)
def test_inconsistent_fills_are_refused(entries, exits, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        realized_pnl(Side.BUY, entries, exits)


@pytest.mark.parametrize("bad", [dict(price=D("0")), dict(qty=D("-1")), dict(price=D("NaN")), dict(fee=D("Infinity"))])
def test_bad_fills_are_refused(bad):
    with pytest.raises(ValueError):
        Fill(**{"side": Side.BUY, "price": D("1"), "qty": D("1"), **bad})


prices = st.decimals(D("0.000001"), D("1000000"), places=6).filter(lambda x: x > 0)
quantities = st.decimals(D("0.001"), D("100000"), places=3).filter(lambda x: x > 0)


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(Side),
    entry=prices,
    exit_=prices,
    qty=quantities,
    split=st.lists(st.integers(1, 10), min_size=1, max_size=5),
)
def test_zero_fee_round_trip_is_qty_times_the_price_move(side, entry, exit_, qty, split):
    # The exit may come in several fills (on the 0.001 step grid); together they close it all.
    thousandths, total = int(qty * 1000), sum(split)
    parts = [D(thousandths * part // total) / 1000 for part in split[:-1]]
    parts.append(qty - sum(parts, D(0)))
    parts = [p for p in parts if p > 0]
    exits = [Fill(side=side.opposite, price=exit_, qty=p) for p in parts]
    pnl = realized_pnl(side, [Fill(side=side, price=entry, qty=qty)], exits)
    assert pnl.net_pnl == pnl.gross_pnl == side.sign * qty * (exit_ - entry)
    assert pnl.is_flat


def test_reported_averages_and_r_are_rounded_while_the_sums_stay_exact():
    # Three exits at prices whose average has no finite decimal form (thirds), risk of 3.
    entries = [fill(Side.BUY, "100", "3", "0")]
    exits = [fill(Side.SELL, "101", "1", "0"), fill(Side.SELL, "101", "1", "0"), fill(Side.SELL, "102", "1", "0")]
    pnl = realized_pnl(Side.BUY, entries, exits, initial_stop=D("99"))
    assert pnl.net_pnl == D("4") and pnl.gross_pnl == D("4")  # exact
    assert pnl.avg_exit_price == D("101.3333333333")  # 10 decimals, not 50 digits
    assert pnl.r_multiple == D("1.3333")  # 4 / 3, four decimals


def test_rounding_never_pads_an_exact_figure():
    pnl = realized_pnl(Side.BUY, [fill(Side.BUY, "63000.1", "1")], [fill(Side.SELL, "63002.1", "1")],
                       initial_stop=D("62999.1"))
    assert str(pnl.avg_entry_price) == "63000.1" and str(pnl.avg_exit_price) == "63002.1"
    assert str(pnl.r_multiple) == "2"  # 2 / 1, not 2.0000
