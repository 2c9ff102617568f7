"""Market activities: the exchange's filters, its market clock and features of closed candles, through ccxt."""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.market import FEATURE_CANDLES, MarketActivities, candle_from_row
from trading.features import CANDLE_MS, REGIMES, compute_features
from local_stack.paper_server import PaperServer, paper_exchange_client

pytestmark = pytest.mark.integration


async def test_market_rules_from_the_loaded_market(exchange):
    market = MarketActivities(exchange)
    env = ActivityEnvironment()
    rules = await env.run(market.rules, "BTCUSDT")
    assert (rules.symbol, rules.ccxt_symbol) == ("BTCUSDT", "BTC/USDT:USDT")
    assert (rules.tick_size, rules.step_size, rules.min_qty) == (Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))
    assert (rules.min_notional, rules.max_qty, rules.max_leverage) == (Decimal("100"), Decimal("1000"), 125)
    same = await env.run(market.rules, "BTC/USDT:USDT")
    assert same == rules and rules.sizing_rules().step_size == Decimal("0.001")


async def test_price_carries_the_market_clock(exchange, paper):
    paper.set_price("ETHUSDT", "3412.57")
    price = await ActivityEnvironment().run(MarketActivities(exchange).price, "ETHUSDT")
    assert price.price == Decimal("3412.57")
    assert price.time_ms == paper.clock()["market_ms"]


async def test_unknown_symbol_is_not_retryable(exchange):
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(MarketActivities(exchange).price, "DOGEUSDT")
    assert failed.value.type == "bad_symbol" and failed.value.non_retryable


async def test_factory_is_resolved_once(exchange):
    calls = []

    async def factory():
        calls.append(1)
        return exchange

    market = MarketActivities(factory)
    for _ in range(2):
        await ActivityEnvironment().run(market.rules, "XRPUSDT")
    assert calls == [1]


# --- features ---------------------------------------------------------------------------------


def ensure_history(paper, candles: int) -> int:
    """Move the (session-wide, forward-only) market clock until `candles` candles have closed
    since the replay start, then into the middle of a candle; returns market now."""
    clock = paper.clock()
    needed = clock["epoch_ms"] + candles * CANDLE_MS - clock["market_ms"]
    now = paper.advance(max(0, needed))["market_ms"]
    return paper.advance(CANDLE_MS // 2 - now % CANDLE_MS + CANDLE_MS)["market_ms"]  # mid-candle


async def test_features_from_the_last_closed_candles(exchange, paper):
    now = ensure_history(paper, FEATURE_CANDLES + 5)
    features = await ActivityEnvironment().run(MarketActivities(exchange).features, "ETHUSDT")
    last_closed = (now // CANDLE_MS - 1) * CANDLE_MS  # the candle open at `now` is left out
    assert (features.candle_open_ms, features.candles) == (last_closed, FEATURE_CANDLES)
    # The same numbers from klines fetched independently by time range.
    rows = await exchange.fetch_ohlcv("ETH/USDT:USDT", "5m", since=last_closed - (FEATURE_CANDLES - 1) * CANDLE_MS,
                                      limit=FEATURE_CANDLES)
    assert [r[0] for r in rows][-1] == last_closed and len(rows) == FEATURE_CANDLES
    assert features == compute_features([candle_from_row(r) for r in rows])
    assert features.regime in REGIMES and 0 <= features.rsi <= 100


@pytest.fixture
def fresh_paper(tmp_path):
    """A paper exchange of its own: its replay starts now, so it has no closed candle yet."""
    server = PaperServer(tmp_path / "paper")
    server.start()
    yield server
    server.close()


async def test_no_features_without_twenty_closed_candles(fresh_paper):
    client = paper_exchange_client(fresh_paper.settings)
    try:
        await client.load_markets()
        env, market = ActivityEnvironment(), MarketActivities(client)
        request = "BTCUSDT"
        assert await env.run(market.features, request) is None
        fresh_paper.advance(19 * CANDLE_MS + CANDLE_MS // 2)  # 19 closed, the 20th still open
        assert await env.run(market.features, request) is None
        fresh_paper.advance(CANDLE_MS)
        features = await env.run(market.features, request)
        assert features is not None and features.candles == 20
        assert features.candle_open_ms == fresh_paper.clock()["epoch_ms"] + 19 * CANDLE_MS
    finally:
        await client.close()
