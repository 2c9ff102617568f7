"""`watch_position` against the real paper exchange (speed 0: tests move price and clock).

Each test builds its own `PriceHub` on the `exchange` fixture's client with a short poll interval,
runs the activity through `ActivityEnvironment` and drives the market with `paper.set_price` /
`paper.advance`. The session decides with `trading/exits.py`; what it returns is that decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.market import candle_from_row
from activities.monitor import KillWatch, MonitorActivities, WatchKind, WatchRequest
from activities.price_hub import PriceHub
from local_stack.exit_states import exit_state
from trading.exits import ExitAction, ExitPolicy, kill_score
from trading.features import CANDLE_MS, TRENDING_DOWN, TRENDING_UP, compute_features
from trading.models import ExitReason

pytestmark = pytest.mark.timeout(60)

POLL_S = 0.05
D = Decimal
NO_TIME_LIMIT = ExitPolicy(max_hold_s=None)
TRAILING_AT_ONCE = ExitPolicy(max_hold_s=None, trailing_after_tp=0, break_even_after_tp=0)


@pytest_asyncio.fixture
async def hub(exchange):
    hub = PriceHub(exchange, poll_interval_s=POLL_S, position_interval_s=0.2, max_backoff_s=0.2)
    yield hub
    await hub.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def next_polls(hub: PriceHub, symbol: str, n: int = 2) -> None:
    """Wait until the hub has polled `symbol` n more times (the price it sees is current)."""
    start = hub.stats[symbol].polls
    await wait_until(lambda: hub.stats[symbol].polls >= start + n)


def request(paper, *, stop=62000, side="BUY", take_profits=(), tick="0.1", entry=None, extreme=None,
            exit_policy: ExitPolicy = NO_TIME_LIMIT, **fields) -> WatchRequest:
    state = exit_state(side=side, stop=stop, take_profits=take_profits, tick=tick, entry=entry, extreme=extreme,
                       opened_at_ms=paper.clock()["market_ms"])
    base = dict(workflow_id="trade-test", symbol="BTCUSDT", exit=state, exit_policy=exit_policy, session_cap_s=20)
    return WatchRequest(**{**base, **fields})


def start(hub: PriceHub, req: WatchRequest, env: ActivityEnvironment | None = None) -> asyncio.Task:
    env = env or ActivityEnvironment()
    return asyncio.create_task(env.run(MonitorActivities(hub).watch_position, req))


async def started(hub: PriceHub, symbol: str, task: asyncio.Task) -> None:
    await wait_until(lambda: hub.stats.get(symbol) and hub.stats[symbol].polls > 0)
    await next_polls(hub, symbol)
    assert not task.done(), task.result()


def decided(event, action: ExitAction, reason: ExitReason | None = None):
    assert event.kind is WatchKind.DECIDED, event
    assert (event.decision.action, event.decision.reason) == (action, reason), event.decision
    return event.decision


@pytest.mark.parametrize(("side", "symbol", "pin", "stop", "through"), [
    ("BUY", "BTCUSDT", 63000, 62000, "61900"),
    ("SELL", "ETHUSDT", 3400, 3450, "3460.5"),
])
async def test_stop_crossed(paper, hub, side, symbol, pin, stop, through):
    paper.set_price(symbol, pin)
    tp = D(pin) * (D("1.05") if side == "BUY" else D("0.95"))
    task = start(hub, request(paper, symbol=symbol, side=side, stop=stop, take_profits=[tp], tick="0.01"))
    await started(hub, symbol, task)
    paper.set_price(symbol, through)
    event = await asyncio.wait_for(task, 5)
    decision = decided(event, ExitAction.CLOSE_ALL, ExitReason.SL)
    assert decision.trigger_price == D(stop) and decision.state.closed
    assert event.price == D(through) and event.state.stop == D(stop)


async def test_take_profit_crossed_says_which(paper, hub):
    """Two TPs crossed in one move are harvested together; the stop moves to break-even."""
    paper.set_price("BTCUSDT", 63000)
    req = request(paper, take_profits=[64000, 65000, 66000], entry=63000)
    task = start(hub, req)
    await started(hub, "BTCUSDT", task)
    paper.set_price("BTCUSDT", 65500)
    decision = decided(await asyncio.wait_for(task, 5), ExitAction.TAKE_PROFIT)
    assert decision.take_profits == (1, 2) and decision.trigger_price == D(65000)
    assert decision.state.tps_done == 2 and decision.new_stop == decision.state.stop > D(63000)


async def test_trailing_from_the_first_price(paper, hub):
    """Trailing active from the start: the first price is the extreme, and a stop 2 % above it
    is worth moving at once (SELL: 1.500 × 1.02 = 1.530, from 1.600)."""
    paper.set_price("NEARUSDT", "1.500")
    req = request(paper, symbol="NEARUSDT", side="SELL", stop="1.600", tick="0.001", exit_policy=TRAILING_AT_ONCE)
    req = req.model_copy(update={"exit": req.exit.model_copy(update={"levels": req.exit.levels.model_copy(
        update={"trailing_callback_pct": D("0.02")})})})
    decision = decided(await asyncio.wait_for(start(hub, req), 5), ExitAction.MOVE_STOP)
    assert (decision.new_stop, decision.state.extreme) == (D("1.530"), D("1.5"))


async def test_time_limit_by_market_time(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    req = request(paper, exit_policy=ExitPolicy(max_hold_s=3600))
    task = start(hub, req)
    await started(hub, "BTCUSDT", task)
    paper.advance(3_599_000)
    await next_polls(hub, "BTCUSDT")
    assert not task.done()
    paper.advance(1_000)
    event = await asyncio.wait_for(task, 5)
    decided(event, ExitAction.CLOSE_ALL, ExitReason.TIME_LIMIT)
    assert event.market_ms >= req.exit.opened_at.timestamp() * 1000 + 3_600_000


async def test_session_cap_after_wall_clock(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    started_at = time.monotonic()
    req = request(paper, session_cap_s=0.5)
    event = await asyncio.wait_for(start(hub, req), 5)
    elapsed = time.monotonic() - started_at
    assert event.kind is WatchKind.SESSION_CAP and event.price == D(63000) and event.decision is None
    assert event.state == req.exit
    assert 0.5 <= elapsed < 1.5
    assert hub.subscriber_count() == 0


async def test_paused_applies_no_rule(paper, hub):
    """Paused by the operator: a crossed stop and TP decide nothing (the exchange stop protects)."""
    paper.set_price("BTCUSDT", 63000)
    task = start(hub, request(paper, take_profits=[64000], paused=True, session_cap_s=1.0))
    await started(hub, "BTCUSDT", task)
    for price in (64500, 61000):
        paper.set_price("BTCUSDT", price)
        await next_polls(hub, "BTCUSDT")
    assert (await asyncio.wait_for(task, 5)).kind is WatchKind.SESSION_CAP


async def test_cancellation_unsubscribes_and_stops_the_poller(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    env = ActivityEnvironment()
    task = start(hub, request(paper), env)
    await started(hub, "BTCUSDT", task)
    poller = hub.poll_task("BTCUSDT")
    assert hub.subscriber_count("BTCUSDT") == 1
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.subscriber_count() == 0 and hub.polling_symbols() == []
    await asyncio.sleep(0.05)
    assert poller.done()


async def test_exchange_fill_detected_by_position_poll(paper, hub, exchange):
    paper.set_price("BTCUSDT", 63000)
    await exchange.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
    task = start(hub, request(paper, position_qty=D("0.01")))
    await started(hub, "BTCUSDT", task)
    await wait_until(lambda: hub.stats["BTCUSDT"].position_fetches >= 2)
    assert not task.done()
    # The resting stop firing looks the same to the monitor: the size changed on the exchange.
    await exchange.create_order("BTC/USDT:USDT", "market", "sell", 0.01, None, {"reduceOnly": True})
    event = await asyncio.wait_for(task, 5)
    assert event.kind is WatchKind.EXCHANGE_FILL and event.exchange_position_qty == 0


async def test_poll_errors_are_retried_not_raised(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    task = start(hub, request(paper))
    await started(hub, "BTCUSDT", task)
    paper.add_fault(path="/fapi/v1/ticker/price", status=503, count=3)
    await wait_until(lambda: hub.stats["BTCUSDT"].errors >= 3)
    paper.set_price("BTCUSDT", 61000)
    decided(await asyncio.wait_for(task, 5), ExitAction.CLOSE_ALL, ExitReason.SL)


async def test_trailing_extreme_in_heartbeats_and_resumed_after_retry(paper, hub):
    """New extremes not yet worth a stop move (the minimum step is 50 % here) are heartbeated; a
    retried attempt (worker crash) resumes from the last one."""
    paper.set_price("BTCUSDT", 63000)
    beats: list = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    policy = TRAILING_AT_ONCE.model_copy(update={"trail_min_step_pct": D("0.5")})
    req = request(paper, take_profits=[70000], exit_policy=policy, session_cap_s=3)
    task = start(hub, req, env)
    await started(hub, "BTCUSDT", task)
    for price in (64000, 64500):
        paper.set_price("BTCUSDT", price)
        await wait_until(lambda p=price: beats[-1]["extreme"] is not None and D(beats[-1]["extreme"]) == p)
    paper.set_price("BTCUSDT", 63800)  # a lower price keeps the extreme
    event = await asyncio.wait_for(task, 6)
    assert event.kind is WatchKind.SESSION_CAP and event.state.extreme == D(64500)
    assert event.state.stop == D(62000)  # never worth moving at a 50 % step

    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=[beats[-1]], attempt=2)
    event = await asyncio.wait_for(start(hub, req.model_copy(update={"session_cap_s": 0.5}), retry), 5)
    assert event.state.extreme == D(64500)


async def test_thousand_watchers_share_three_pollers(paper, hub):
    symbols = {"BTCUSDT": 63000, "ETHUSDT": 3400, "XRPUSDT": 2}
    for symbol, price in symbols.items():
        paper.set_price(symbol, price)
    env = ActivityEnvironment()
    tasks = []
    for i in range(1000):
        symbol = list(symbols)[i % 3]
        pin = D(symbols[symbol])
        stop = pin * (D("0.95") - D(i % 7) / 100)  # different levels, all below 0.95 × pin
        tasks.append(start(hub, request(paper, workflow_id=f"trade-{i}", symbol=symbol, stop=stop,
                                        tick="0.0001", take_profits=[pin * D("1.1")]), env))
    await wait_until(lambda: hub.subscriber_count() == 1000, timeout=15)
    assert sorted(hub.polling_symbols()) == sorted(symbols)
    before = {s: hub.stats[s].requests for s in symbols}
    await asyncio.sleep(1.0)
    for s in symbols:  # ≈ 1 s / POLL_S requests per symbol, not per watcher
        grown = hub.stats[s].requests - before[s]
        assert 0 < grown <= 1.0 / POLL_S + 3, (s, grown)
    assert not any(t.done() for t in tasks)
    for symbol, price in symbols.items():
        paper.set_price(symbol, D(price) * D("0.8"))
    events = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for event in events:
        decided(event, ExitAction.CLOSE_ALL, ExitReason.SL)
    assert hub.subscriber_count() == 0


# --- trailing stop moves -----------------------------------------------------------------------


@pytest.mark.parametrize(("side", "symbol", "entry", "pin", "stop", "small", "big", "tick", "new_stop"), [
    # BUY, 1 % behind the high, a minimum step of 0.8 % × 62500 = 500: 63000 → 62370 and
    # 63100 → 62469 move the stop less than 500 beyond 62000; 63500 → 62865 does.
    ("BUY", "BTCUSDT", "62500", "63000", "62000", "63100", "63500", "0.1", "62865"),
    # SELL, 1 % above the low, a step of 0.8 % × 2500 = 20: 3400 → 3434 and 3398 → 3431.98 are
    # less than 20 below 3450; 3380 → 3413.8 is not.
    ("SELL", "ETHUSDT", "2500", "3400", "3450", "3398", "3380", "0.01", "3413.8"),
])
async def test_trailing_stop_moves_by_the_minimum_step(paper, hub, side, symbol, entry, pin, stop, small, big,
                                                       tick, new_stop):
    paper.set_price(symbol, pin)
    policy = TRAILING_AT_ONCE.model_copy(update={"trail_min_step_pct": D("0.008")})
    task = start(hub, request(paper, symbol=symbol, side=side, entry=entry, stop=stop, tick=tick,
                              exit_policy=policy))
    await started(hub, symbol, task)
    paper.set_price(symbol, small)  # a new extreme, but the stop would move less than the step
    await next_polls(hub, symbol, 3)
    assert not task.done(), task.result()
    paper.set_price(symbol, big)
    event = await asyncio.wait_for(task, 5)
    decision = decided(event, ExitAction.MOVE_STOP)
    assert (decision.new_stop, decision.state.extreme, event.price) == (D(new_stop), D(big), D(big))
    assert event.state.extreme == D(small)  # the state it decided on


async def test_carried_over_extreme_moves_at_once_or_closes(paper, hub):
    """A session started with the previous one's extreme: worth moving the stop → MOVE_STOP at
    once (no new price needed); the last price already through the new stop → a trailing close."""
    policy = TRAILING_AT_ONCE.model_copy(update={"trail_min_step_pct": D("0.008")})
    paper.set_price("BTCUSDT", 64000)
    req = request(paper, entry=62500, extreme=64500, exit_policy=policy)  # 1 % behind: 63855
    decision = decided(await asyncio.wait_for(start(hub, req), 5), ExitAction.MOVE_STOP)
    assert (decision.new_stop, decision.state.extreme) == (D(63855), D(64500))
    paper.set_price("BTCUSDT", 63800)
    decision = decided(await asyncio.wait_for(start(hub, req), 5), ExitAction.CLOSE_ALL, ExitReason.TRAILING)
    assert decision.trigger_price == D(63800)


# --- kill score on candle closes -----------------------------------------------------------------

WINDOW = 30  # closed candles per feature computation in these tests (fewer to replay than 48)


def ensure_history(paper, candles: int) -> int:
    """Move the session's (forward-only) market clock until `candles` candles have closed since
    the replay start, then to the middle of the next candle; returns the last closed open time."""
    clock = paper.clock()
    paper.advance(max(0, clock["epoch_ms"] + candles * CANDLE_MS - clock["market_ms"]))
    now = paper.clock()["market_ms"]
    now = paper.advance(CANDLE_MS // 2 - now % CANDLE_MS + CANDLE_MS)["market_ms"]
    return (now // CANDLE_MS - 1) * CANDLE_MS


async def features_at(exchange, symbol: str, last_open_ms: int, window: int = WINDOW):
    """The reference: features over klines fetched by time range, outside the hub."""
    rows = await exchange.fetch_ohlcv(symbol, "5m", since=last_open_ms - (window - 1) * CANDLE_MS, limit=window)
    assert rows[-1][0] == last_open_ms and len(rows) == window
    return compute_features([candle_from_row(r) for r in rows])


def expected_score(kill: KillWatch, now, last_open_ms: int, req: WatchRequest):
    opened_at_ms = req.exit.opened_at.timestamp() * 1000
    entry = kill.entry
    return kill_score(
        regime_at_entry=entry.regime, regime_now=now.regime, sigma_at_entry=entry.sigma, sigma_now=now.sigma,
        trend_at_entry=entry.trend_strength, trend_now=now.trend_strength,
        age_s=(last_open_ms + CANDLE_MS - opened_at_ms) / 1000, age_horizon_s=kill.age_horizon_s,
        weights=kill.weights, threshold=kill.threshold,
    )


async def close_candle(paper, hub: PriceHub, symbols: list[str], watchers: int = 1) -> int:
    """Advance one candle and wait until the hub fetched it and every kill watcher evaluated it
    (each computation is counted once per symbol; evaluations show as cache reads)."""
    fetches = {s: hub.stats[s].candle_fetches for s in symbols}
    computed = {s: hub.stats[s].features_computed for s in symbols}
    now = paper.advance(CANDLE_MS)["market_ms"]
    await wait_until(lambda: all(hub.stats[s].candle_fetches > fetches[s] for s in symbols), 10)
    await wait_until(lambda: all(hub.stats[s].features_computed > computed[s] for s in symbols), 10)
    polls = {s: hub.stats[s].polls for s in symbols}
    # Every watcher woken by the candle has run its evaluation (or returned: no watcher left).
    await wait_until(lambda: all(hub.stats[s].polls >= polls[s] + 3 or not hub.subscriber_count(s) for s in symbols))
    return (now // CANDLE_MS - 1) * CANDLE_MS


async def test_kill_score_fires_when_the_regime_is_not_the_entry_one(paper, hub, exchange):
    """The entry said 'strong trend, calm' in another regime than the market's: on the next
    candle close whose score passes 0.7 (the market decides; pins do not move klines, so the
    candle is found by computing the reference alongside), the monitor returns it."""
    last = ensure_history(paper, WINDOW + 5)
    paper.set_price("BTCUSDT", 63000)
    now = await features_at(exchange, "BTC/USDT:USDT", last)
    flipped = TRENDING_DOWN if now.regime == TRENDING_UP else TRENDING_UP
    entry = now.model_copy(update={"regime": flipped, "trend_strength": 1.0, "sigma": 1e-6})
    kill = KillWatch(entry=entry, window=WINDOW)
    req = request(paper, stop=50000, kill=kill, session_cap_s=60)
    task = start(hub, req)
    await started(hub, "BTCUSDT", task)
    await wait_until(lambda: hub.stats["BTCUSDT"].candle_fetches >= 1)  # the history, loaded once
    for _ in range(20):
        closed = await close_candle(paper, hub, ["BTCUSDT"])
        reference = await features_at(exchange, "BTC/USDT:USDT", closed)
        score = expected_score(kill, reference, closed, req)
        if score.should_close:
            break
        assert not task.done(), task.result()
    else:
        pytest.fail("no candle in 20 passed the threshold")
    event = await asyncio.wait_for(task, 5)
    decision = decided(event, ExitAction.CLOSE_ALL, ExitReason.KILL_SCORE)
    assert event.candle.open_ms == closed and decision.trigger_price == event.price
    assert event.features == reference and event.kill_score == score
    assert event.kill_score.regime_flip == 1.0 and event.kill_score.sigma_spike == 1.0


async def test_kill_score_silent_on_a_quiet_market(paper, hub, exchange):
    """Entry regime unknown (no flip can count): the score is at most 0.34 whatever the market
    does, so 30 kill watchers over 3 symbols stay silent through 3 closes. Per symbol: one
    history load, then one klines fetch and one feature computation per close."""
    symbols = {"BTCUSDT": 63000, "ETHUSDT": 3400, "XRPUSDT": 2}
    last = ensure_history(paper, WINDOW + 5)
    entries = {}
    for symbol, price in symbols.items():
        paper.set_price(symbol, price)
        entry = await features_at(exchange, exchange.markets_by_id[symbol][0]["symbol"], last)
        entries[symbol] = entry.model_copy(update={"regime": "unknown"})
    env, tasks = ActivityEnvironment(), []
    for i in range(30):
        symbol = list(symbols)[i % 3]
        kill = KillWatch(entry=entries[symbol], window=WINDOW)
        tasks.append(start(hub, request(paper, workflow_id=f"trade-{i}", symbol=symbol, side="BUY", tick="0.0001",
                                        stop=D(symbols[symbol]) / 2, kill=kill, session_cap_s=60), env))
    await wait_until(lambda: hub.subscriber_count() == 30, 15)
    await wait_until(lambda: all(hub.stats[s].candle_fetches == 1 for s in symbols), 10)  # the history load
    for _ in range(3):
        await close_candle(paper, hub, list(symbols))
        assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]
    for symbol in symbols:
        assert (hub.stats[symbol].candle_fetches, hub.stats[symbol].features_computed) == (4, 3), symbol
    assert sorted(hub.polling_symbols()) == sorted(symbols)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_kill_watcher_restarted_after_a_close_evaluates_it(paper, hub, exchange):
    """A new session (empty history: the first kill watcher loads it) that processed the candle
    before the last closed one evaluates the last one at once."""
    last = ensure_history(paper, WINDOW + 5)
    paper.set_price("ETHUSDT", 3400)
    now = await features_at(exchange, "ETH/USDT:USDT", last)
    entry = now.model_copy(update={"regime": TRENDING_DOWN if now.regime == TRENDING_UP else TRENDING_UP,
                                   "trend_strength": 1.0, "sigma": 1e-6})
    kill = KillWatch(entry=entry, window=WINDOW)
    req = request(paper, symbol="ETHUSDT", stop=3000, kill=kill, candles_after_ms=last - CANDLE_MS)
    score = expected_score(kill, now, last, req)
    assert score.should_close  # a flip (0.66) and a sigma spike (0.1) alone pass 0.7
    event = await asyncio.wait_for(start(hub, req), 10)
    decided(event, ExitAction.CLOSE_ALL, ExitReason.KILL_SCORE)
    assert (event.candle.open_ms, event.features, event.kill_score) == (last, now, score)
    assert hub.stats["ETHUSDT"].candle_fetches == 1
    # Up to date (it processed `last`): nothing to catch up, the session runs out.
    quiet = req.model_copy(update={"candles_after_ms": last, "session_cap_s": 0.5})
    assert (await asyncio.wait_for(start(hub, quiet), 5)).kind is WatchKind.SESSION_CAP
