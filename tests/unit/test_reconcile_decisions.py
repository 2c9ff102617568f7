"""`trading/reconcile.py`: what a snapshot's disagreements are and what is done about each, and
`trading/client_ids.owner_key_of`, which decides which orders are ours to touch."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.client_ids import client_order_id, owner_key, owner_key_of
from trading.models import TradeStatus
from trading.reconcile import (
    AccountSnapshot, Action, ExchangePosition, FindingKind, LiveTrade, OpenOrder, OrphanMode, PositionHash, RedisLock,
    actionable, confirmed, find_discrepancies,
)

D = Decimal
TAG = "a1b2c3"


def trade(wf="trade-1", symbol="BTCUSDT", status=TradeStatus.OPEN, qty="0.01", stop="sl-1", side="BUY"):
    return LiveTrade(workflow_id=wf, owner_key=owner_key(wf, TAG), symbol=symbol, status=status,
                     open_qty=D(qty) if qty is not None else None, side=side,
                     stop_client_id=client_order_id(wf, stop, TAG) if stop else None)


def stop_of(wf="trade-1", symbol="BTCUSDT", step="sl-1"):
    return OpenOrder(symbol=symbol, client_order_id=client_order_id(wf, step, TAG), conditional=True,
                     reduce_only=True, side="SELL", type="STOP_MARKET")


def snap(**parts) -> AccountSnapshot:
    return AccountSnapshot(taken_at_ms=0, **parts)


def found(s: AccountSnapshot, orphans=OrphanMode.ADOPT) -> set[tuple[str, str, str]]:
    return {(f.kind.value, f.action.value, f.symbol) for f in find_discrepancies(s, orphans)}


@pytest.mark.parametrize("workflow_id", ["trade-abc", "trade-" + "x" * 40, "odd id/with:chars", "t"])
@pytest.mark.parametrize("step", ["entry", "sl-12", "tp2", "close-3", "flatten"])
def test_every_client_id_we_make_maps_back_to_its_trade(workflow_id, step):
    assert owner_key_of(client_order_id(workflow_id, step, TAG)) == owner_key(workflow_id, TAG)


@pytest.mark.parametrize("foreign", ["x-xcKtGhcu1234", "trade-abc-entry", "web_12345", "", "a" * 40,
                                     "ios_0123456789abcdef", "trade-abc.1a2b3-entry", "trade-abc.1A2B3C-entry"])
def test_other_bots_and_untagged_ids_are_never_ours(foreign):
    assert owner_key_of(foreign) is None


def test_an_account_that_agrees_finds_nothing():
    s = snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("0.01"))], orders=[stop_of()],
             trades=[trade()], locks=[RedisLock(symbol="BTCUSDT", owner="trade-1")],
             position_hashes=[PositionHash(symbol="BTCUSDT", workflow_id="trade-1")])
    assert find_discrepancies(s) == []


@pytest.mark.parametrize(("mode", "action"), [(OrphanMode.ADOPT, "adopt"), (OrphanMode.FLATTEN, "flatten"),
                                              (OrphanMode.REPORT, "report")])
def test_an_orphan_position_gets_the_configured_action(mode, action):
    s = snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("-2"), entry_price=D("3400"))])
    assert found(s, mode) == {("orphan_position", action, "ETHUSDT")}


def test_a_symbol_any_running_trade_holds_is_never_orphaned_whatever_its_status():
    for status in (TradeStatus.PENDING, TradeStatus.OPENING, TradeStatus.CLOSING, None):
        s = snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("0.01"))],
                 trades=[trade(status=status, qty=None)])
        assert find_discrepancies(s) == [], status


def test_a_running_trade_visibility_has_no_symbol_for_yet_blocks_orphan_decisions():
    s = snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("1"))], orders=[stop_of("trade-gone")],
             trades=[trade(symbol=None, status=None, qty=None)])
    assert find_discrepancies(s) == []


def test_a_trade_without_a_known_run_blocks_orphan_order_decisions():
    unknown = trade().model_copy(update={"owner_key": None})
    s = snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("0.01"))],
             orders=[stop_of(), stop_of("trade-gone", "ETHUSDT")], trades=[unknown])
    assert found(s) == set()


def test_open_trade_checks_vanished_size_and_stop():
    assert found(snap(orders=[stop_of()], trades=[trade()])) == {("vanished_position", "tell_workflow", "BTCUSDT")}
    assert found(snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("0.004"))], orders=[stop_of()],
                      trades=[trade()])) == {("size_mismatch", "tell_workflow", "BTCUSDT")}
    assert found(snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("0.01"))],
                      trades=[trade()])) == {("missing_stop", "tell_workflow", "BTCUSDT")}


def test_a_position_on_the_other_side_is_reported_not_told():
    s = snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("-0.01"))], orders=[stop_of()], trades=[trade()])
    assert found(s) == {("size_mismatch", "report", "BTCUSDT")}


def test_trades_in_transition_or_unanswered_are_not_checked():
    for t in (trade(status=TradeStatus.CLOSING), trade(qty=None)):
        assert find_discrepancies(snap(trades=[t])) == []


def test_orphan_orders_are_cancelled_except_a_stop_that_protects_an_unmanaged_position():
    protecting = snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("1"))],
                      orders=[stop_of("trade-gone", "ETHUSDT"), stop_of("trade-gone", "XRPUSDT")])
    assert found(protecting, OrphanMode.ADOPT) == {("orphan_position", "adopt", "ETHUSDT"),
                                                   ("orphan_order", "report", "ETHUSDT"),
                                                   ("orphan_order", "cancel", "XRPUSDT")}
    # when flattening, the stop goes with the flatten, once flat (never before, never alone)
    flatten = find_discrepancies(protecting, OrphanMode.FLATTEN)
    assert ("orphan_order", "report", "ETHUSDT") in found(protecting, OrphanMode.FLATTEN)
    assert next(f for f in flatten if f.kind is FindingKind.ORPHAN_POSITION).stops == [
        client_order_id("trade-gone", "sl-1", TAG)]


def test_a_dead_trades_stop_stays_until_the_new_holder_has_its_own_stop_resting():
    position = [ExchangePosition(symbol="BTCUSDT", quantity=D("0.01"))]
    old_stop = stop_of("trade-old")
    for holder in (trade(status=TradeStatus.PENDING, qty=None), trade(status=TradeStatus.CLOSING, qty=None),
                   trade(stop="sl-9")):  # an adopter still placing its stop, one closing, one whose stop is gone
        findings = {(f.kind, f.action) for f in find_discrepancies(snap(positions=position, orders=[old_stop],
                                                                        trades=[holder]))}
        assert (FindingKind.ORPHAN_ORDER, Action.REPORT) in findings, holder


def test_a_dead_trades_lock_stays_while_its_position_is_open():
    s = snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("1"), entry_price=D("3400"))],
             locks=[RedisLock(symbol="ETHUSDT", owner="trade-dead")])
    assert ("orphan_lock", "report", "ETHUSDT") in found(s, OrphanMode.REPORT)
    for mode in (OrphanMode.ADOPT, OrphanMode.FLATTEN):  # it passes with the position
        findings = find_discrepancies(s, mode)
        assert next(f for f in findings if f.kind is FindingKind.ORPHAN_POSITION).lock_owner == "trade-dead"
        assert not [f for f in findings if f.action is Action.RELEASE]


def test_a_dead_trades_order_on_a_symbol_a_new_trade_holds_is_cancelled_and_the_new_ones_kept():
    s = snap(positions=[ExchangePosition(symbol="BTCUSDT", quantity=D("0.01"))],
             orders=[stop_of(), stop_of("trade-old")], trades=[trade()])
    findings = find_discrepancies(s)
    assert [(f.kind, f.action, f.client_order_id) for f in findings] == [
        (FindingKind.ORPHAN_ORDER, Action.CANCEL, client_order_id("trade-old", "sl-1", TAG))]


def test_locks_and_hashes_of_ended_workflows():
    s = snap(trades=[trade(status=TradeStatus.PENDING, qty=None)],
             locks=[RedisLock(symbol="BTCUSDT", owner="trade-1"), RedisLock(symbol="ETHUSDT", owner="trade-dead")],
             position_hashes=[PositionHash(symbol="ETHUSDT", workflow_id="trade-dead"),
                              PositionHash(symbol="XRPUSDT", workflow_id=None),
                              PositionHash(symbol="BTCUSDT", workflow_id=None)])
    assert found(s) == {("orphan_lock", "release", "ETHUSDT"), ("stale_position_hash", "remove", "ETHUSDT"),
                        ("stale_position_hash", "report", "XRPUSDT")}


def test_only_what_both_looks_saw_is_confirmed():
    first = find_discrepancies(snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("1"))],
                                    locks=[RedisLock(symbol="XRPUSDT", owner="trade-dead")]))
    # a moment later the lock is gone and the position has another size (a trade caught mid-step)
    second = find_discrepancies(snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("2"))]))
    assert confirmed(first, second) == []
    again = find_discrepancies(snap(positions=[ExchangePosition(symbol="ETHUSDT", quantity=D("1"))]))
    assert [f.kind for f in confirmed(first, again)] == [FindingKind.ORPHAN_POSITION]
    assert actionable(confirmed(first, again))
