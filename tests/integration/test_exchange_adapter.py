"""The production exchange wiring on the real paper exchange, throttles ON: orders have their own
client, so they never queue behind the market-data client's price polls, and the PriceHub asks
for the account's positions once per poll for every symbol.

The market client gets a small budget (10 weight/s) so that four quiet monitored positions
saturate it for sure; production's is larger, but any budget is saturated by enough polls.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from temporalio.testing import ActivityEnvironment

from exchange.weights import WeightBudget
from exchange.client import close_shared_exchange, create_exchange, shared_market_exchange, shared_order_exchange
from activities.monitor import MonitorActivities, WatchKind, WatchRequest
from activities.orders import ClosePositionRequest, OrderType, PlaceOrderRequest
from activities.price_hub import PriceHub
from local_stack.exit_states import exit_state
from trading.models import Side
from common.task_queues import TRADE_EXECUTION
from workers.registry import Dependencies, activities_for

pytestmark = pytest.mark.timeout(120)
D = Decimal

# symbol: (pinned price, quantity, stop far below, take-profit far above): quiet positions.
POSITIONS = {
    "BTCUSDT": (63000, D("0.002"), D(50000), D(80000)),
    "ETHUSDT": (3400, D("0.05"), D(2500), D(4500)),
    "XRPUSDT": (2, D("60"), D("1.5"), D("3")),
    "NEARUSDT": (5, D("25"), D("3.5"), D("7")),
}


def _activity(acts: list, name: str):
    return next(a for a in acts if getattr(a, "__temporal_activity_definition").name == name)


async def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _count_requests(client, counts: dict) -> None:
    """Count every request the client sends, by (api, path), on its way into ccxt's fetch2."""
    original = client.request

    async def counted(path, api=None, method="GET", params=None, config=None):
        key = (api[0] if isinstance(api, (list, tuple)) else api, path)
        counts[key] = counts.get(key, 0) + 1
        return await original(path, api, method, params or {}, config or {})
    client.request = counted


async def test_production_sources_are_two_clients_each_loaded_once(paper, monkeypatch):
    monkeypatch.setenv("QT_PAPER_HOST", paper.settings.host)
    monkeypatch.setenv("QT_PAPER_PORT", str(paper.settings.port))
    deps = Dependencies()
    assert deps.exchange_source() is shared_market_exchange
    assert deps.order_exchange_source() is shared_order_exchange
    try:
        market, orders = await shared_market_exchange(), await shared_order_exchange()
        assert market is not orders and market.budget is not orders.budget
        assert (market.purpose, orders.purpose) == ("market", "orders")
        assert market.markets and orders.markets
        assert await shared_market_exchange() is market and await shared_order_exchange() is orders
        assert market.enableRateLimit and orders.enableRateLimit  # throttles on
    finally:
        await close_shared_exchange()


async def test_orders_do_not_wait_behind_saturated_market_polls(paper):
    settings = paper.settings.client_settings()
    market = create_exchange(settings, purpose="market",
                             budget=WeightBudget(per_minute=600, burst=0))
    orders = create_exchange(settings, purpose="orders")
    hub = PriceHub(market, poll_interval_s=0.05, position_interval_s=0.5, max_backoff_s=0.2)
    deps = Dependencies(exchange=market, order_exchange=orders, hub=hub)
    env = ActivityEnvironment()
    watchers: list[asyncio.Task] = []
    try:
        await market.load_markets()
        await orders.load_markets()
        market_requests = market.budget.requests  # its exchangeInfo
        acts = activities_for(TRADE_EXECUTION, deps)
        place, close = _activity(acts, "place_order"), _activity(acts, "close_position")
        for symbol, (price, qty, _, _) in POSITIONS.items():
            paper.set_price(symbol, price)
            await env.run(place, PlaceOrderRequest(symbol=symbol, side=Side.BUY, type=OrderType.MARKET,
                                                   quantity=qty, client_order_id=f"adapter-{symbol}-entry"))
        # The wiring: the execution queue's activities use the order client only.
        assert orders.budget.requests > 0 and market.budget.requests == market_requests
        counts: dict = {}
        _count_requests(market, counts)
        clock = paper.clock()["market_ms"]
        monitor = MonitorActivities(hub)
        for symbol, (_, qty, stop, tp) in POSITIONS.items():
            req = WatchRequest(workflow_id=f"trade-{symbol}", symbol=symbol, session_cap_s=60, position_qty=qty,
                               exit=exit_state(side="BUY", stop=stop, take_profits=[tp], tick="0.0001",
                                               opened_at_ms=clock))
            watchers.append(asyncio.create_task(env.run(monitor.watch_position, req)))

        # The polls saturate the market client: requests keep queuing in its throttle.
        await _wait_until(lambda: market.budget.queued >= 2 and market.budget.delayed >= 10)
        polls0, positions0 = hub.position_polls, dict(counts)
        fetched0 = {s: hub.stats[s].position_fetches for s in POSITIONS}
        await _wait_until(lambda: hub.position_polls >= polls0 + 3)
        await asyncio.sleep(0.05)  # let the last poll's dispatch finish

        # One positionRisk request per poll, whatever the number of symbols, and each poll's
        # answer reached every symbol's watchers.
        risk = counts.get(("fapiPrivateV3", "positionRisk"), 0) - positions0.get(("fapiPrivateV3", "positionRisk"), 0)
        polls = hub.position_polls - polls0
        assert risk == polls >= 3
        for symbol in POSITIONS:
            assert hub.stats[symbol].position_fetches - fetched0[symbol] in (polls - 1, polls, polls + 1)
        assert not any(t.done() for t in watchers)  # quiet positions

        # A reduce-only close through the order client while the market client is saturated:
        # none of its requests waited in a throttle.
        delayed_before = orders.budget.delayed
        queued_market = market.budget.queued
        started = time.monotonic()
        result = await env.run(close, ClosePositionRequest(symbol="BTCUSDT", client_order_id="adapter-BTC-close"))
        via_orders = time.monotonic() - started
        assert result.remaining_quantity == 0 and result.order is not None and result.order.reduce_only
        assert orders.budget.delayed == delayed_before and orders.budget.queued == 0
        assert queued_market >= 1 and market.budget.queued >= 1  # saturated before and after

        # The previous wiring, for contrast: the same close through the market-data client waits
        # behind the polls (its requests queue in the saturated throttle).
        from activities.orders import OrderActivities
        shared = OrderActivities(market)
        delayed_before = market.budget.delayed
        started = time.monotonic()
        result = await env.run(shared.close_position, ClosePositionRequest(symbol="ETHUSDT",
                                                                           client_order_id="adapter-ETH-close"))
        via_market = time.monotonic() - started
        assert result.remaining_quantity == 0
        assert market.budget.delayed > delayed_before
        assert via_market > via_orders, (via_market, via_orders)

        events = await asyncio.wait_for(asyncio.gather(watchers[0], watchers[1]), 10)
        assert all(e.kind is WatchKind.EXCHANGE_FILL for e in events)  # the closes were seen
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await hub.close()
        await market.close()
        await orders.close()


async def test_a_429_holds_every_request_of_the_client_for_its_retry_after(paper, exchange):
    import ccxt.async_support as ccxt_async
    paper.add_fault(path="/fapi/v1/openOrders", status=429, code=-1003, retry_after_s=1)
    with pytest.raises(ccxt_async.DDoSProtection):  # (ccxt's class for a 429)
        await exchange.fetch_open_orders("BTC/USDT:USDT")
    started = time.monotonic()
    await asyncio.gather(exchange.fetch_time(), exchange.fetch_ticker("ETH/USDT:USDT"))  # other endpoints
    held = time.monotonic() - started
    assert 0.8 <= held < 3, held  # both waited out the Retry-After together, then went
    started = time.monotonic()
    await exchange.fetch_time()
    assert time.monotonic() - started < 0.5  # the hold is over


async def test_5xx_in_a_row_back_off_doubling_and_a_good_answer_ends_the_streak(paper, exchange):
    import ccxt.async_support as ccxt_async
    paper.add_fault(path="/fapi/v1/time", status=503, code=-1001, count=2)
    for expected in (0.5, 1.0):
        with pytest.raises(ccxt_async.BaseError):
            await exchange.fetch_time()
        assert exchange.hold_until - time.monotonic() == pytest.approx(expected, abs=0.2)
    started = time.monotonic()
    await exchange.fetch_time()  # waits the 1 s hold, then succeeds
    assert time.monotonic() - started >= 0.7 and exchange._backoff_streak == 0
