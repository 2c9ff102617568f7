"""The monitor decides exactly as `trading/exits.py` does (property tests, no I/O).

The monitor calls `decide_exit` only when the hub wakes it (the price left `wake_band`, or the
holding limit came) and then on the high/low since its previous wake-up; the reference calls
`decide_exit` on every single price of the path. Both act as the workflow does: keep
`decision.state`, end at a close, and start a new session after any other action (a new session
looks at the latest price once more, as the hub seeds it). For any path of exchange prices (on
the tick grid), market times and exit state, the two take the same decisions at the same prices.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from activities.monitor import MonitorSession
from activities.price_hub import Watch
from activities.schemas.monitor import WatchKind, WatchRequest
from local_stack.exit_states import exit_state
from trading.exits import ExitAction, ExitPolicy, PriceMove, decide_exit
from trading.market_time import utc_of_ms

D = Decimal
TICK = D("0.5")
START_MS = 1_700_000_000_000


def _record(decision, at: int) -> tuple:
    return (at, decision.action, decision.reason, decision.take_profits, decision.new_stop, decision.trigger_price)


def through_the_monitor(state, path, policy) -> list[tuple]:
    taken, session, watch, idle_evaluations = [], None, None, 0
    for at, (price, ms) in enumerate(path):
        if session is None:  # a new session: the hub seeds it with the latest price
            session = MonitorSession(WatchRequest(workflow_id="wf", symbol="X", exit=state, exit_policy=policy))
            watch = Watch(symbol="X")
            watch._observe(price, ms)
            session.arm(watch)
        else:
            watch._observe(price, ms)
        for _ in range(3):  # the activity loop evaluates while the event is set
            if not watch.event.is_set():
                break
            watch.event.clear()
            event = session.evaluate(watch)
            if event is None:
                idle_evaluations += 1
                session.arm(watch)
                continue
            assert event.kind is WatchKind.DECIDED and event.decision.action is not ExitAction.NONE
            taken.append(_record(event.decision, at))
            state = event.decision.state
            if event.decision.action is ExitAction.CLOSE_ALL:
                return taken
            session = MonitorSession(WatchRequest(workflow_id="wf", symbol="X", exit=state, exit_policy=policy))
            watch = Watch(symbol="X")
            watch._observe(price, ms)
            session.arm(watch)
        else:
            raise AssertionError("the monitor would busy-loop on one price")
    return taken


def calling_the_decider(state, path, policy) -> list[tuple]:
    taken = []
    for at, (price, ms) in enumerate(path):
        for _ in range(3):
            decision = decide_exit(state, PriceMove.at_price(price, utc_of_ms(ms)), policy)
            state = decision.state
            if decision.action is ExitAction.NONE:
                break
            taken.append(_record(decision, at))
            if decision.action is ExitAction.CLOSE_ALL:
                return taken
    return taken


@st.composite
def scenarios(draw):
    side = draw(st.sampled_from(["BUY", "SELL"]))
    sign = 1 if side == "BUY" else -1
    entry_ticks = 2000  # entry 1000
    stop_ticks = entry_ticks - sign * draw(st.integers(5, 60))
    gaps = draw(st.lists(st.integers(2, 40), min_size=0, max_size=3))
    tps, at = [], entry_ticks
    for gap in gaps:
        at += sign * gap
        tps.append(at * TICK)
    fractions = None
    if tps:
        shares = draw(st.lists(st.integers(1, 5), min_size=len(tps), max_size=len(tps)))
        fractions = [D(s) / sum(shares) for s in shares]
    policy = ExitPolicy(
        break_even_after_tp=draw(st.integers(0, 2)), trailing_after_tp=draw(st.integers(0, 3)),
        trail_min_step_pct=draw(st.sampled_from([D(0), D("0.001"), D("0.005"), D("0.02")])),
        max_hold_s=draw(st.sampled_from([None, 60.0, 600.0])))
    state = exit_state(side=side, stop=stop_ticks * TICK, take_profits=tps, fractions=fractions,
                       entry=entry_ticks * TICK, tick=str(TICK), callback=draw(st.sampled_from(["0.005", "0.01", "0.03"])),
                       opened_at_ms=START_MS)
    steps = draw(st.lists(st.tuples(st.integers(-12, 12), st.integers(0, 30_000)), min_size=1, max_size=80))
    path, price_ticks, ms = [], entry_ticks, START_MS
    for move, wait_ms in steps:
        price_ticks = max(1, price_ticks + move)
        ms += wait_ms
        path.append((price_ticks * TICK, ms))
    return state, path, policy


@settings(max_examples=1000, deadline=None)
@given(scenarios())
def test_the_monitor_takes_the_deciders_decisions(scenario):
    state, path, policy = scenario
    assert through_the_monitor(state, path, policy) == calling_the_decider(state, path, policy)


def test_a_quiet_path_wakes_nobody():
    """Inside the band the monitor is not even asked: 50 prices between the stop and TP1 of a
    position with no trailing yet wake it once (the session's first price)."""
    state = exit_state(side="BUY", stop=990, take_profits=[1010], entry=1000, tick="0.5")
    session = MonitorSession(WatchRequest(workflow_id="wf", symbol="X", exit=state,
                                          exit_policy=ExitPolicy(max_hold_s=None)))
    watch, wakes = Watch(symbol="X"), 0
    for i in range(50):
        watch._observe(D(1000) + D(i % 7) - 3, START_MS + i * 1000)
        if i == 0:
            session.arm(watch)
        if watch.event.is_set():
            wakes += 1
            watch.event.clear()
            assert session.evaluate(watch) is None
            session.arm(watch)
    assert wakes == 1
