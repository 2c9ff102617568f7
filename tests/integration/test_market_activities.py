"""Market activities: the exchange's filters and its market clock, through ccxt."""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.market import MarketActivities, SymbolRequest

pytestmark = pytest.mark.integration


async def test_market_rules_from_the_loaded_market(exchange):
    market = MarketActivities(exchange)
    env = ActivityEnvironment()
    rules = await env.run(market.get_market_rules, SymbolRequest(symbol="BTCUSDT"))
    assert (rules.symbol, rules.ccxt_symbol) == ("BTCUSDT", "BTC/USDT:USDT")
    assert (rules.tick_size, rules.step_size, rules.min_qty) == (Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))
    assert (rules.min_notional, rules.max_qty, rules.max_leverage) == (Decimal("100"), Decimal("1000"), 125)
    same = await env.run(market.get_market_rules, SymbolRequest(symbol="BTC/USDT:USDT"))
    assert same == rules and rules.sizing_rules().step_size == Decimal("0.001")


async def test_price_carries_the_market_clock(exchange, paper):
    paper.set_price("ETHUSDT", "3412.57")
    price = await ActivityEnvironment().run(MarketActivities(exchange).get_price, SymbolRequest(symbol="ETHUSDT"))
    assert price.price == Decimal("3412.57")
    assert price.time_ms == paper.clock()["market_ms"]


async def test_unknown_symbol_is_not_retryable(exchange):
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(MarketActivities(exchange).get_price, SymbolRequest(symbol="DOGEUSDT"))
    assert failed.value.type == "bad_symbol" and failed.value.non_retryable


async def test_factory_is_resolved_once(exchange):
    calls = []

    async def factory():
        calls.append(1)
        return exchange

    market = MarketActivities(factory)
    for _ in range(2):
        await ActivityEnvironment().run(market.get_market_rules, SymbolRequest(symbol="XRPUSDT"))
    assert calls == [1]
