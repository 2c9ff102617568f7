"""SIGKILL the worker (a real `qt worker --queue all` subprocess) in the middle of a trade,
start a fresh one, and the trade still finishes correctly.

Kill points: during the entry order, while the protective stop is being placed, the moment
the entry filled (before or while its stop goes out: the entry-to-stop gap is bounded by one
short retry), while monitoring (the price runs through a level while no worker lives), while a
stop is moved, during the close, and twice in one trade. The order in flight at the kill is held by a latency fault on the paper
exchange; two variants each:

- `accepted`: the exchange executes the held request after the worker died (the answer is
  lost, the order exists): the retried activity must find it by client id, not place it again;
- `never`: the held request ends in an error nobody reads (the order never existed): the
  retried activity must place it.

The entry and its protective stop `sl-1` are one heartbeating activity (`open_position`,
activities/entry.py): after a kill Temporal notices the dead attempt after its 3 s heartbeat
timeout, and the retry finds the entry by client id and places the stop at once (an entry it does
not find is sent only after the exchange's recvWindow has passed for any request still in
flight). Other order steps are retried after their start-to-close timeout (13 s), the monitor
after its heartbeat timeout (5 s with these settings); workflow tasks move on after the sticky
timeout. Client order ids are run-tagged (`{workflow id}.{tag}-{step}`, `trade_cid`). Every test
prints the entry-to-stop gap (exchange wall clock, audit log) and then checks, against the
exchange itself:
- the workflow's status and exit reason;
- flat: no position, no open order, no resting stop;
- every client order id of the trade accepted/filled exactly once (audit log);
- from the first stop accepted until flat, at every event at least one stop of this trade
  rests on the exchange (a stop is cancelled only after its replacement rests or the position
  is flat);
- realized PnL = the change of the account's wallet balance.
"""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal

import pytest
from temporalio.client import WorkflowHandle

from activities.entry import ENTRY_RECV_WINDOW_MS
from tests.crash.harness import GAPS, CrashRig, Protection, placements, trade_audit
from tests.fixtures.client_ids import trade_cid
from trading.exits import StopKind
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import TradeResult

pytestmark = [pytest.mark.timeout(240), pytest.mark.integration]

D = Decimal
LATENCY_MS = 3000  # below the exchange's 5 s recvWindow: a held request is still valid
# The entry is signed with its attempt's start and a 2 s window (activities/entry.py): a held
# entry still executes when it reaches the exchange within that.
ENTRY_LATENCY_MS = 1000
VARIANTS = ["accepted", "never"]
# The bound on the entry-to-stop gap when the worker dies between the entry fill and the stop:
# one short retry = the 3 s heartbeat timeout + the retry's back-off + a worker restart + the
# exchange round trips, with margin for 2 shared cores. Before `open_position` the gap was
# 10-17 s (the order step's start-to-close timeout, 13 s, then a new workflow task).
MAX_GAP_AFTER_A_KILL_MS = 12_000


def wallet(paper) -> Decimal:
    return D(paper.state()["balance"]["walletBalance"])


def held_order_fault(path: str, variant: str, latency_ms: int = LATENCY_MS) -> dict:
    """The next POST to `path` is held `latency_ms`, then executed (`accepted`) or answered with
    an error without being executed (`never`)."""
    rule = {"path": path, "method": "POST", "latency_ms": latency_ms}
    if variant == "never":
        rule.update(status=503, code=-1001)
    return rule


async def wait_until(check, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout} s")


def current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]


def entry_filled(paper, handle: WorkflowHandle) -> bool:
    return any(r["result"] == "filled" for r in paper.audit(client_id=trade_cid(handle, "entry")))


def assert_finished_correctly(rig: CrashRig, handle: WorkflowHandle, result: TradeResult,
                              wallet_before: Decimal, status: TradeStatus,
                              reason: ExitReason) -> Protection:
    paper = rig.paper
    records = trade_audit(paper, handle.id)
    protection = Protection.replay(records)
    GAPS[current_test()] = protection.entry_to_stop_ms
    print(f"audit of {handle.id}:\n{protection.describe()}\n"
          f"entry-to-stop gap: {protection.entry_to_stop_ms} ms (worker restarts: {rig.restart_s} s)")
    assert (result.status, result.exit_reason) == (status, reason), result

    state = paper.state()
    assert state["positions"] == []
    assert state["open_algo_orders"] == []
    assert state["open_orders"] == []

    placed = placements(records)
    order_ids = result.details["orders"]
    assert trade_cid(handle, "entry") in order_ids and trade_cid(handle, "sl-1") in order_ids
    tagged = trade_cid(handle, "entry").removesuffix("entry")  # `{workflow id}.{run tag}-`
    assert [cid for cid in order_ids if not cid.startswith(tagged)] == [], "an order id not of this run"
    assert {cid: placed[cid] for cid in order_ids} == {cid: 1 for cid in order_ids}
    assert {cid: n for cid, n in placed.items() if n != 1} == {}, "a client order id was placed twice"
    assert set(placed) == set(order_ids), "the exchange has orders the workflow does not know"

    assert protection.final_position == 0
    assert protection.first_stop_wall_ms is not None
    assert protection.unprotected == [], "a position without a resting stop after the first stop"

    assert result.realized_pnl is not None
    assert wallet(paper) - wallet_before == result.realized_pnl.quantize(D("0.00000001"))
    return protection


# ================================================================================ the entry


@pytest.mark.parametrize("variant", VARIANTS)
async def test_kill_during_entry(crash_rig: CrashRig, variant):
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("BTCUSDT", 63000)
    before = wallet(paper)
    rig.add_fault(**held_order_fault("/fapi/v1/order", variant, ENTRY_LATENCY_MS))
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))

    await rig.wait_fault_taken()  # the entry order is held by the exchange right now
    killed_ms = paper.clock()["wall_ms"]
    await rig.crash()
    if variant == "accepted":  # executed after the worker died: its answer is lost
        await wait_until(lambda: placements(trade_audit(paper, handle.id))[trade_cid(handle, "entry")] == 1,
                         what="the held entry executed")
        [entry] = [r for r in trade_audit(paper, handle.id) if r["result"] == "filled"]
        assert entry["wall_ms"] >= killed_ms

    state = await rig.wait_status(handle, "OPEN", timeout=150)
    assert state.entry_qty > 0 and state.stop_client_id == trade_cid(handle, "sl-1")
    assert (await rig.attempts(handle, "open_position"))[0] >= 2  # the entry was retried
    if variant == "never":  # the retry sent the entry only once the held request had expired
        [entry] = [r for r in trade_audit(paper, handle.id) if r["result"] == "filled"]
        print(f"entry resent {entry['wall_ms'] - killed_ms} ms after the kill")
        assert entry["wall_ms"] - killed_ms > ENTRY_RECV_WINDOW_MS  # the held request's window

    paper.set_price("BTCUSDT", state.exit.stop - 50)  # the exchange stop closes it
    result = await rig.result(handle)
    assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, ExitReason.SL)
    assert result.realized_pnl < 0


# ==================================================================== the protective stop


@pytest.mark.parametrize("variant", VARIANTS)
async def test_kill_while_placing_the_stop(crash_rig: CrashRig, variant):
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("ETHUSDT", 3400)
    before = wallet(paper)
    rig.add_fault(**held_order_fault("/fapi/v1/algoOrder", variant))
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))

    await rig.wait_fault_taken()  # the entry filled; sl-1 is held by the exchange
    assert paper.state()["positions"] != []
    await rig.crash()

    state = await rig.wait_status(handle, "OPEN", timeout=150)
    assert state.stop_client_id == trade_cid(handle, "sl-1") and state.stop_seq == 1
    # sl-1 is placed inside open_position: that activity was retried, no place_order placed it.
    assert (await rig.attempts(handle, "open_position"))[0] >= 2
    assert await rig.attempts(handle, "place_order") == []
    assert [o["clientAlgoId"] for o in paper.state()["open_algo_orders"]] == [trade_cid(handle, "sl-1")]

    # Beyond the last take-profit: the workflow closes everything at market (TP).
    last_tp = state.exit.levels.take_profits[-1].price
    paper.set_price("ETHUSDT", last_tp + 5)
    result = await rig.result(handle)
    protection = assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, ExitReason.TP)
    assert result.realized_pnl > 0
    assert protection.entry_to_stop_ms is not None
    assert protection.entry_to_stop_ms <= MAX_GAP_AFTER_A_KILL_MS, protection.entry_to_stop_ms


# The worker dies the moment the entry filled, before or while its stop goes out:
# - `unsent`: the stop's look-up by client id (the request before the create) is held, the
#   worker dies there: no stop request ever reached the exchange;
# - `accepted` / `never`: the stop's create is held SHORT_LATENCY_MS and the worker is killed as
#   soon as the audit log shows the entry filled; the held create then executes (its answer
#   lost) or fails unread.
SHORT_LATENCY_MS = 1000
FILL_VARIANTS = ["unsent", "accepted", "never"]


@pytest.mark.parametrize("variant", FILL_VARIANTS)
async def test_kill_right_after_the_entry_fill(crash_rig: CrashRig, variant):
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("BTCUSDT", 63000)
    before = wallet(paper)
    if variant == "unsent":
        rig.add_fault(path="/fapi/v1/algoOrder", method="GET", latency_ms=LATENCY_MS, status=503, code=-1001)
    else:
        rule = {"path": "/fapi/v1/algoOrder", "method": "POST", "latency_ms": SHORT_LATENCY_MS}
        rig.add_fault(**rule, **({"status": 503, "code": -1001} if variant == "never" else {}))
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))

    if variant == "unsent":
        await rig.wait_fault_taken()  # the entry filled; the stop's look-up is held
    else:
        await wait_until(lambda: entry_filled(paper, handle), timeout=60, what="the entry filled")
    killed_ms = paper.clock()["wall_ms"]
    assert entry_filled(paper, handle) and paper.state()["positions"] != []
    killed = time.monotonic()
    rig.worker.kill()
    stop_sent = paper.http.get("/_paper/faults").json() == []  # the stop's create reached the exchange
    if not stop_sent:
        paper.clear_faults()  # killed before the create went out: the retry must not meet the fault
    print(f"killed {killed_ms}: the stop's create {'was in flight' if stop_sent else 'was never sent'}")
    if variant == "unsent":
        assert [r for r in trade_audit(paper, handle.id) if r["path"] == "/fapi/v1/algoOrder"
                and r["method"] == "POST"] == []
    rig.crashes += 1
    await rig.worker.start()
    rig.restart_s.append(round(time.monotonic() - killed, 2))

    state = await rig.wait_status(handle, "OPEN", timeout=150)
    assert state.stop_client_id == trade_cid(handle, "sl-1") and state.stop_seq == 1
    attempts = await rig.attempts(handle, "open_position")
    assert attempts and attempts[0] >= 2, attempts  # the same activity was retried
    [retry_ms] = await rig.last_attempt_started_ms(handle, "open_position")
    print(f"open_position attempt {attempts[0]} started {retry_ms - killed_ms} ms after the kill")
    assert await rig.attempts(handle, "place_order") == []
    assert [o["clientAlgoId"] for o in paper.state()["open_algo_orders"]] == [trade_cid(handle, "sl-1")]

    paper.set_price("BTCUSDT", state.exit.stop - 50)  # the exchange stop closes it
    result = await rig.result(handle)
    protection = assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, ExitReason.SL)
    assert result.realized_pnl < 0
    # One short retry, not a start-to-close timeout: the position waited for its stop at most this.
    assert protection.entry_to_stop_ms is not None
    assert protection.entry_to_stop_ms <= MAX_GAP_AFTER_A_KILL_MS, protection.entry_to_stop_ms


# ========================================================================== monitoring


async def test_kill_while_monitoring_stop_fires_while_down(crash_rig: CrashRig):
    """No worker lives while the price runs through the stop: the exchange's stop closes the
    position; the new worker's monitor finds it flat and ends the trade as SL."""
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("NEARUSDT", "5.000")
    before = wallet(paper)
    handle = await rig.start(rig.intent("NEARUSDT", "SELL", "5.000"))
    state = await rig.wait_status(handle, "OPEN")
    await asyncio.sleep(1)  # the monitor session is running

    rig.worker.kill()
    paper.set_price("NEARUSDT", state.exit.stop + D("0.05"))
    await wait_until(lambda: paper.state()["positions"] == [], what="the exchange stop fired")
    await rig.worker.start()

    result = await rig.result(handle)
    assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, ExitReason.SL)
    assert result.realized_pnl < 0
    [trigger] = [r for r in trade_audit(paper, handle.id) if r["result"] == "triggered"]
    assert trigger["client_id"] == trade_cid(handle, "sl-1")


async def test_kill_while_monitoring_take_profit_while_down(crash_rig: CrashRig):
    """The price passes TP1 while no worker lives: the new worker harvests TP1, replaces the
    stop (new one first), and the moved stop later closes the rest on the exchange."""
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("ETHUSDT", 3400)
    before = wallet(paper)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    state = await rig.wait_status(handle, "OPEN")
    tp1, tp2 = state.exit.levels.take_profits[0].price, state.exit.levels.take_profits[1].price
    await asyncio.sleep(1)

    rig.worker.kill()
    paper.set_price("ETHUSDT", tp1 + (tp2 - tp1) / 4)
    await asyncio.sleep(1)
    await rig.worker.start()

    state = await rig.wait_for(handle, lambda s: s.exit.tps_done == 1 and s.stop_seq >= 2, timeout=120,
                               what="TP1 harvested and the stop moved")
    assert state.open_qty < state.entry_qty
    assert state.exit.stop >= state.entry_price
    expected = ExitReason.TRAILING if state.exit.stop_kind is StopKind.TRAILING else ExitReason.SL
    paper.set_price("ETHUSDT", (state.exit.stop - 1).quantize(D("0.01")))
    result = await rig.result(handle)
    assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, expected)
    assert result.realized_pnl > 0


@pytest.mark.parametrize("variant", VARIANTS)
async def test_kill_while_moving_the_stop(crash_rig: CrashRig, variant):
    """TP1 is harvested and the replacement stop `sl-2` is in flight when the worker dies (one
    `amend_position`): the retry finds tp1 by its client id and does not send it again, the old
    stop keeps resting until the new one is on the exchange, then it is cancelled."""
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("ETHUSDT", 3400)
    before = wallet(paper)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    state = await rig.wait_status(handle, "OPEN")
    tp1, tp2 = state.exit.levels.take_profits[0].price, state.exit.levels.take_profits[1].price

    rig.add_fault(**held_order_fault("/fapi/v1/algoOrder", variant))
    paper.set_price("ETHUSDT", tp1 + (tp2 - tp1) / 4)
    await rig.wait_fault_taken()  # tp1 filled; sl-2 is held by the exchange
    assert placements(trade_audit(paper, handle.id))[trade_cid(handle, "tp1")] == 1
    await rig.crash()

    state = await rig.wait_for(handle, lambda s: s.exit.tps_done == 1 and s.stop_seq >= 2, timeout=150,
                               what="the stop moved after TP1")
    assert state.stop_client_id == trade_cid(handle, "sl-2")
    await wait_until(lambda: [o["clientAlgoId"] for o in paper.state()["open_algo_orders"]]
                     == [trade_cid(handle, "sl-2")], what="sl-1 cancelled once sl-2 rests")
    assert max(await rig.attempts(handle, "amend_position")) >= 2  # tp1 + sl-2 (one activity) was retried
    expected = ExitReason.TRAILING if state.exit.stop_kind is StopKind.TRAILING else ExitReason.SL
    paper.set_price("ETHUSDT", (state.exit.stop - 1).quantize(D("0.01")))
    result = await rig.result(handle)
    assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, expected)
    assert result.realized_pnl > 0


# ============================================================================== the close


@pytest.mark.parametrize("variant", VARIANTS)
async def test_kill_during_close(crash_rig: CrashRig, variant):
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("XRPUSDT", "2.0000")
    before = wallet(paper)
    handle = await rig.start(rig.intent("XRPUSDT", "BUY", "2.0000"))
    await rig.wait_status(handle, "OPEN")

    rig.add_fault(**held_order_fault("/fapi/v1/order", variant))
    update = asyncio.create_task(handle.execute_update("close", {"reason": "crash-test"},
                                                       result_type=TradeResult))
    try:
        await rig.wait_fault_taken()  # the close order is held by the exchange right now
        await rig.crash()
        result = await asyncio.wait_for(update, 150)
    finally:
        update.cancel()
    assert (await rig.result(handle)).status is TradeStatus.CLOSED
    assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, ExitReason.MANUAL)
    assert max(await rig.attempts(handle, "close_position")) >= 2  # the close was retried


# ================================================================= two crashes, one trade


async def test_two_crashes_in_one_trade(crash_rig: CrashRig):
    """Killed during the entry (the order executes after the kill), then again while
    monitoring with the stop firing while no worker lives."""
    rig, paper = crash_rig, crash_rig.paper
    paper.set_price("BTCUSDT", 63000)
    before = wallet(paper)
    rig.add_fault(**held_order_fault("/fapi/v1/order", "accepted", ENTRY_LATENCY_MS))
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
    await rig.wait_fault_taken()
    await rig.crash()

    state = await rig.wait_status(handle, "OPEN", timeout=150)
    await asyncio.sleep(1)
    rig.worker.kill()
    paper.set_price("BTCUSDT", state.exit.stop - 50)
    await wait_until(lambda: paper.state()["positions"] == [], what="the exchange stop fired")
    await rig.worker.start()

    result = await rig.result(handle)
    assert_finished_correctly(rig, handle, result, before, TradeStatus.CLOSED, ExitReason.SL)
    assert (await rig.attempts(handle, "open_position"))[0] >= 2  # the entry was retried
