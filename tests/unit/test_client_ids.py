"""Client order ids are deterministic, valid for Binance, and distinct per step."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading.client_ids import MAX_LEN, client_order_id, is_valid_client_order_id, run_tag

STEPS = ["entry", "sl-1", "sl-2", "tp1", "tp2", "tp3", "close"]


def test_short_ids_stay_readable():
    assert client_order_id("trade-x1", "entry") == "trade-x1-entry"
    assert client_order_id("trade-x1", "sl-2") == "trade-x1-sl-2"


@given(workflow_id=st.text(min_size=1, max_size=200), step=st.sampled_from(STEPS))
def test_any_workflow_id_gives_a_valid_stable_id(workflow_id, step):
    cid = client_order_id(workflow_id, step)
    assert is_valid_client_order_id(cid) and len(cid) <= MAX_LEN
    assert cid.endswith(step)
    assert cid == client_order_id(workflow_id, step)


@given(workflow_id=st.text(min_size=1, max_size=200))
def test_steps_of_one_trade_never_collide(workflow_id):
    ids = {client_order_id(workflow_id, step) for step in STEPS}
    assert len(ids) == len(STEPS)


def test_long_ids_of_different_trades_differ():
    a = client_order_id("trade-" + "a" * 60, "entry")
    b = client_order_id("trade-" + "a" * 59 + "b", "entry")
    assert a != b


@pytest.mark.parametrize("step", ["", "Entry", "x" * 17, "sl_2"])
def test_bad_steps_are_refused(step):
    with pytest.raises(ValueError):
        client_order_id("trade-x1", step)


def test_run_tag_is_stable_short_and_differs_between_runs():
    a, b = run_tag("0195e6c2-aaaa-7000-8000-000000000001"), run_tag("0195e6c2-aaaa-7000-8000-000000000002")
    assert a == run_tag("0195e6c2-aaaa-7000-8000-000000000001") and len(a) == 6 and a != b


def test_tagged_ids_tell_two_runs_of_one_workflow_id_apart():
    one, two = run_tag("run-1"), run_tag("run-2")
    assert client_order_id("trade-x1", "entry", one) == f"trade-x1.{one}-entry"
    assert client_order_id("trade-x1", "entry", one) != client_order_id("trade-x1", "entry", two)
    long_id = "trade-sig-BTCUSDT-1735689600000"
    a, b = client_order_id(long_id, "sl-2", one), client_order_id(long_id, "sl-2", two)
    assert a != b and a.endswith("-sl-2") and len(a) <= MAX_LEN and is_valid_client_order_id(a)


def test_a_bad_tag_is_refused():
    with pytest.raises(ValueError):
        client_order_id("trade-x1", "entry", "NOT-HEX")
