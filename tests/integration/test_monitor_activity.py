"""`watch_position` against the real paper exchange (speed 0: tests move price and clock).

Each test builds its own `PriceHub` on the `exchange` fixture's client with a short poll interval,
runs the activity through `ActivityEnvironment` and drives the market with `paper.set_price` /
`paper.advance`.
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

from activities.monitor import CrossedLevel, MonitorActivities, TrailingSpec, WatchKind, WatchRequest
from activities.price_hub import CANDLE_MS, PriceHub

pytestmark = pytest.mark.timeout(60)

POLL_S = 0.05
D = Decimal


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


def request(paper, **fields) -> WatchRequest:
    base = dict(workflow_id="trade-test", symbol="BTCUSDT", side="BUY", stop_price=D(62000),
                opened_at_ms=paper.clock()["market_ms"], session_cap_s=20)
    return WatchRequest(**{**base, **fields})


def start(hub: PriceHub, req: WatchRequest, env: ActivityEnvironment | None = None) -> asyncio.Task:
    env = env or ActivityEnvironment()
    return asyncio.create_task(env.run(MonitorActivities(hub).watch_position, req))


async def started(hub: PriceHub, symbol: str, task: asyncio.Task) -> None:
    await wait_until(lambda: hub.stats.get(symbol) and hub.stats[symbol].polls > 0)
    await next_polls(hub, symbol)
    assert not task.done(), task.result()


@pytest.mark.parametrize(("side", "symbol", "pin", "stop", "through"), [
    ("BUY", "BTCUSDT", 63000, 62000, "61900"),
    ("SELL", "ETHUSDT", 3400, 3450, "3460.5"),
])
async def test_stop_crossed(paper, hub, side, symbol, pin, stop, through):
    paper.set_price(symbol, pin)
    tp = D(pin) * (D("1.05") if side == "BUY" else D("0.95"))
    task = start(hub, request(paper, symbol=symbol, side=side, stop_price=D(stop), take_profit_prices=[tp]))
    await started(hub, symbol, task)
    paper.set_price(symbol, through)
    event = await asyncio.wait_for(task, 5)
    assert event.kind is WatchKind.LEVEL_CROSSED and event.level is CrossedLevel.STOP
    assert event.level_price == D(stop)
    assert event.price == D(through)


async def test_take_profit_crossed_says_which(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    req = request(paper, take_profit_prices=[D(64000), D(65000), D(66000)])
    task = start(hub, req)
    await started(hub, "BTCUSDT", task)
    paper.set_price("BTCUSDT", 65500)
    event = await asyncio.wait_for(task, 5)
    assert (event.kind, event.level, event.take_profit_index) == (
        WatchKind.LEVEL_CROSSED, CrossedLevel.TAKE_PROFIT, 2)
    assert event.level_price == D(65000) and event.price == D(65500)


async def test_candle_close_delivered_once_with_spike_in_high_low(paper, hub):
    """A spike that woke nobody (inside the band) still shows in high/low at the next wake-up,
    and the closed candle is fetched once for all watchers of the symbol."""
    paper.set_price("BTCUSDT", 63000)
    req = request(paper, stop_price=D(60000), take_profit_prices=[D(66000)], want_candles=True)
    first, second = start(hub, req), start(hub, req)
    # A third watcher keeps the feed alive after the first two return.
    keeper = start(hub, req.model_copy(update={"want_candles": False}))
    await started(hub, "BTCUSDT", first)
    for spike in (62500, 63700, 63000):
        paper.set_price("BTCUSDT", spike)
        await next_polls(hub, "BTCUSDT")
    now = paper.advance(CANDLE_MS)["market_ms"]
    a, b = await asyncio.wait_for(asyncio.gather(first, second), 5)
    for event in (a, b):
        assert event.kind is WatchKind.CANDLE_CLOSED
        assert event.candle.open_ms == (now // CANDLE_MS - 1) * CANDLE_MS
        assert (event.low, event.high, event.price) == (D(62500), D(63700), D(63000))
    await next_polls(hub, "BTCUSDT", 4)
    assert hub.stats["BTCUSDT"].candle_fetches == 1
    # A fresh watcher on the same feed does not get the same candle again.
    again = await asyncio.wait_for(start(hub, req.model_copy(update={"session_cap_s": 0.4})), 5)
    assert again.kind is WatchKind.SESSION_CAP
    # One restarted after the close, saying which candle it processed last, gets it from the cache.
    older = req.model_copy(update={"candles_after_ms": a.candle.open_ms - CANDLE_MS})
    caught = await asyncio.wait_for(start(hub, older), 5)
    assert caught.kind is WatchKind.CANDLE_CLOSED and caught.candle == a.candle
    assert hub.stats["BTCUSDT"].candle_fetches == 1
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)


async def test_candle_closed_between_sessions_is_caught_up(paper, hub):
    """A new session (no candle cached) asks for candles after an older one: fetched at once."""
    paper.set_price("BTCUSDT", 63000)
    now = paper.advance(CANDLE_MS)["market_ms"]
    last_closed = (now // CANDLE_MS - 1) * CANDLE_MS
    req = request(paper, stop_price=D(60000), want_candles=True, candles_after_ms=last_closed - CANDLE_MS)
    event = await asyncio.wait_for(start(hub, req), 5)
    assert event.kind is WatchKind.CANDLE_CLOSED and event.candle.open_ms == last_closed
    up_to_date = req.model_copy(update={"candles_after_ms": last_closed, "session_cap_s": 0.3})
    assert (await asyncio.wait_for(start(hub, up_to_date), 5)).kind is WatchKind.SESSION_CAP


async def test_trailing_active_at_once_starts_from_first_price(paper, hub):
    paper.set_price("NEARUSDT", "1.500")
    trailing = TrailingSpec(callback_pct=D("0.02"))  # no activation price: trails from the start
    task = start(hub, request(paper, symbol="NEARUSDT", side="SELL", stop_price=D("1.600"), trailing=trailing))
    await started(hub, "NEARUSDT", task)
    paper.set_price("NEARUSDT", "1.531")  # through 1.500 × 1.02 = 1.530
    event = await asyncio.wait_for(task, 5)
    assert (event.level, event.level_price, event.trailing_extreme) == (CrossedLevel.TRAILING, D("1.530"), D("1.5"))


async def test_time_limit_by_market_time(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    req = request(paper, max_holding_ms=3_600_000)
    task = start(hub, req)
    await started(hub, "BTCUSDT", task)
    paper.advance(3_599_000)
    await next_polls(hub, "BTCUSDT")
    assert not task.done()
    paper.advance(1_000)
    event = await asyncio.wait_for(task, 5)
    assert event.kind is WatchKind.TIME_LIMIT
    assert event.market_ms >= req.opened_at_ms + 3_600_000


async def test_session_cap_after_wall_clock(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    started_at = time.monotonic()
    event = await asyncio.wait_for(start(hub, request(paper, session_cap_s=0.5)), 5)
    elapsed = time.monotonic() - started_at
    assert event.kind is WatchKind.SESSION_CAP and event.price == D(63000)
    assert 0.5 <= elapsed < 1.5
    assert hub.subscriber_count() == 0


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
    event = await asyncio.wait_for(task, 5)
    assert event.level is CrossedLevel.STOP


async def test_trailing_extreme_in_heartbeats_and_resumed_after_retry(paper, hub):
    paper.set_price("BTCUSDT", 63000)
    beats: list = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    trailing = TrailingSpec(callback_pct=D("0.01"), activation_price=D(63500))
    task = start(hub, request(paper, trailing=trailing, take_profit_prices=[D(70000)]), env)
    await started(hub, "BTCUSDT", task)
    assert beats and beats[-1] == {"extreme": None}
    for price in (64000, 64500):
        paper.set_price("BTCUSDT", price)
        await wait_until(lambda p=price: beats[-1]["extreme"] is not None and D(beats[-1]["extreme"]) == p)
    paper.set_price("BTCUSDT", 63800)  # through 64500 × 0.99 = 63855
    event = await asyncio.wait_for(task, 5)
    assert (event.kind, event.level) == (WatchKind.LEVEL_CROSSED, CrossedLevel.TRAILING)
    assert event.level_price == D(63855) and D(event.trailing_extreme) == D(64500)

    # A retry (worker crash) resumes from the heartbeated extreme: the price is already through.
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, heartbeat_details=[beats[-1]], attempt=2)
    event = await asyncio.wait_for(start(hub, request(paper, trailing=trailing), retry), 5)
    assert event.level is CrossedLevel.TRAILING and D(event.trailing_extreme) == D(64500)


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
        tasks.append(start(hub, request(paper, workflow_id=f"trade-{i}", symbol=symbol, stop_price=stop,
                                        take_profit_prices=[pin * D("1.1")]), env))
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
    assert all(e.kind is WatchKind.LEVEL_CROSSED and e.level is CrossedLevel.STOP for e in events)
    assert hub.subscriber_count() == 0
