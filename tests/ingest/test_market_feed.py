"""Market feed against the real paper exchange (ccxt over HTTP) and the real redis-server.

The paper exchange's clock is session-wide and only moves forward (`advance`), so every test
reads it and states its expectations relative to it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import ccxt.async_support as ccxt
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pydantic import ValidationError

from trading.features import CANDLE_MS
from signals_ingest.feed_settings import FeedSettings
from signals_ingest.market_feed import MarketFeed, run_market_feed, secondary_exchange
from common.redis_keys import FEED_LAST_KLINE_KEY, MARKET_KLINES_STREAM, MARKET_TICK_STREAM, latest_price_key
from local_stack.paper_server import PaperServer, paper_exchange_client
from local_stack.ports import free_port

pytestmark = pytest.mark.integration

SEVEN = {"BTCUSDT", "ETHUSDT", "NEARUSDT", "XRPUSDT", "FHEUSDT", "XLMUSDT", "DASHUSDT"}


def ensure_history(paper: PaperServer, candles: int) -> int:
    """Move the market clock until `candles` candles have closed since the replay start, then
    into the middle of a candle; returns market now."""
    clock = paper.clock()
    needed = clock["epoch_ms"] + (candles + 1) * CANDLE_MS - clock["market_ms"]
    now = paper.advance(max(0, needed))["market_ms"]
    return paper.advance(CANDLE_MS // 2 - now % CANDLE_MS + CANDLE_MS)["market_ms"]


def newest_closed(now_ms: int) -> int:
    return (now_ms // CANDLE_MS - 1) * CANDLE_MS


async def published_candles(redis) -> dict[str, list[dict]]:
    by_symbol: dict[str, list[dict]] = defaultdict(list)
    for _, fields in await redis.xrange(MARKET_KLINES_STREAM):
        by_symbol[fields["symbol"]].append(fields)
    return by_symbol


def open_times(candles: list[dict]) -> list[int]:
    return [int(c["open_time"]) for c in candles]


def consecutive(first: int, last: int) -> list[int]:
    return list(range(first, last + 1, CANDLE_MS))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition, timeout: float = 8.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- ticks ------------------------------------------------------------------------------------


async def test_ticks_carry_every_symbols_exchange_price(exchange, paper, redis_client):
    paper.set_price("NEARUSDT", "1.512")
    paper.set_price("BTCUSDT", "61234.5")
    feed = MarketFeed(redis_client, exchange, FeedSettings())  # no symbols: every USDT perpetual
    near_before = metric("qt_feed_ticks_total", symbol="NEARUSDT", exchange="paper")
    before = int(time.time() * 1000)
    assert await feed.poll_ticks() == 7
    after = int(time.time() * 1000)

    state = paper.state()
    market_ms = str(state["clock"]["market_ms"])
    entries = [fields for _, fields in await redis_client.xrange(MARKET_TICK_STREAM)]
    assert len(entries) == 7 and {e["symbol"] for e in entries} == SEVEN == set(state["prices"])
    for tick in entries:
        price = state["prices"][tick["symbol"]]
        assert tick == {"symbol": tick["symbol"], "price": price, "bid": price, "ask": price,
                        "timestamp": market_ms, "exchange": "paper"}
    near = next(e for e in entries if e["symbol"] == "NEARUSDT")
    btc = next(e for e in entries if e["symbol"] == "BTCUSDT")
    assert (near["price"], btc["price"]) == ("1.512", "61234.50")  # the exchange's own digits

    latest = await redis_client.hgetall(latest_price_key("NEARUSDT"))
    assert {k: latest[k] for k in ("price", "timestamp", "exchange")} == {
        "price": "1.512", "timestamp": market_ms, "exchange": "paper"}
    assert before <= int(latest["received_ms"]) <= after
    assert not any(k.startswith("price:") for k in latest)  # one venue: no per-venue fields

    paper.set_price("NEARUSDT", "1.498")
    assert await feed.poll_ticks() == 7
    assert (await redis_client.hget(latest_price_key("NEARUSDT"), "price")) == "1.498"
    assert await redis_client.xlen(MARKET_TICK_STREAM) == 14 and feed.ticks_published == 14
    assert metric("qt_feed_ticks_total", symbol="NEARUSDT", exchange="paper") == near_before + 2


async def test_second_venue_price_beside_the_first(exchange, paper, redis_client, tmp_path):
    second = PaperServer(tmp_path / "second")
    await asyncio.to_thread(second.start)
    other = secondary_exchange(FeedSettings(secondary_url=second.base_url).secondary_url)
    try:
        paper.set_price("NEARUSDT", "1.500")
        second.set_price("NEARUSDT", "1.530")
        settings = FeedSettings(symbols=["NEARUSDT"], secondary_url=second.base_url)
        feed = MarketFeed(redis_client, exchange, settings, secondary_exchange=other)
        assert await feed.poll_ticks() == 2

        latest = await redis_client.hgetall(latest_price_key("NEARUSDT"))
        assert (latest["price"], latest["exchange"]) == ("1.500", "paper")  # the primary's
        assert (latest["price:paper"], latest["price:secondary"]) == ("1.500", "1.530")
        assert latest["timestamp:paper"] == str(paper.clock()["market_ms"])
        assert latest["timestamp:secondary"] == str(second.clock()["market_ms"])
        ticks = {(f["exchange"], f["price"]) for _, f in await redis_client.xrange(MARKET_TICK_STREAM)}
        assert ticks == {("paper", "1.500"), ("secondary", "1.530")}
    finally:
        await other.close()
        await asyncio.to_thread(second.close)


# --- candles ----------------------------------------------------------------------------------


async def test_each_closed_candle_once_in_order_with_the_exchanges_values(exchange, paper, redis_client):
    now = ensure_history(paper, 40)
    settings = FeedSettings(symbols=["BTCUSDT", "NEAR/USDT:USDT"], backfill_candles=30)
    feed = MarketFeed(redis_client, exchange, settings)
    assert await feed.poll_klines() == 60
    for _ in range(3):
        assert await feed.poll_klines() == 0  # nothing closed since

    last = newest_closed(now)
    candles = await published_candles(redis_client)
    assert set(candles) == {"BTCUSDT", "NEARUSDT"}
    for symbol, published in candles.items():
        assert open_times(published) == consecutive(last - 29 * CANDLE_MS, last)
        rows = await exchange.fapiPublicGetKlines(
            {"symbol": symbol, "interval": "5m", "startTime": last - 29 * CANDLE_MS, "limit": 31})
        assert int(rows[-1][0]) == now // CANDLE_MS * CANDLE_MS  # the open candle: served, not published
        for candle, row in zip(published, rows[:30]):
            assert candle == {
                "symbol": symbol, "interval": "5m", "open_time": str(row[0]),
                "close_time": str(int(row[0]) + 299_999), "open": row[1], "high": row[2],
                "low": row[3], "close": row[4], "volume": row[5], "exchange": "paper", "closed": "1"}
            assert candle["close_time"] == str(row[6])
        assert await redis_client.get(FEED_LAST_KLINE_KEY.format(symbol=symbol)) == str(last)
        assert metric("qt_feed_last_candle_age_seconds", symbol=symbol) == (now - last - CANDLE_MS) / 1000

    # Exactly at its close time (exchange clock) the open candle is closed: published once, final.
    now = paper.advance(CANDLE_MS - now % CANDLE_MS)["market_ms"]
    assert await feed.poll_klines() == 2
    assert await feed.poll_klines() == 0
    candles = await published_candles(redis_client)
    closed_now = newest_closed(now)
    for symbol in ("BTCUSDT", "NEARUSDT"):
        assert open_times(candles[symbol]) == consecutive(last - 29 * CANDLE_MS, closed_now)
        row = (await exchange.fapiPublicGetKlines(
            {"symbol": symbol, "interval": "5m", "startTime": closed_now, "limit": 1}))[0]
        assert [candles[symbol][-1][k] for k in ("open", "high", "low", "close", "volume")] == row[1:6]
    assert feed.candles_published == 62


async def test_a_restarted_feed_and_two_feeds_side_by_side_never_repeat_a_candle(exchange, paper, redis_client):
    ensure_history(paper, 12)
    settings = FeedSettings(symbols=["ETHUSDT", "XRPUSDT", "DASHUSDT"], backfill_candles=10)
    assert await MarketFeed(redis_client, exchange, settings).poll_klines() == 30
    restarted = MarketFeed(redis_client, exchange, settings)  # same Redis: knows what was published
    assert await restarted.poll_klines() == 0

    now = paper.advance(5 * CANDLE_MS)["market_ms"]
    twin_client = paper_exchange_client(paper.settings)
    try:
        await twin_client.load_markets()
        twin = MarketFeed(redis_client, twin_client, settings)
        # Both read the stored positions before either publishes: a real race.
        results = await asyncio.gather(*(f.poll_klines() for f in (restarted, twin, restarted, twin)))
    finally:
        await twin_client.close()
    assert sum(results) == 15 and restarted.candles_published + twin.candles_published == 15

    last = newest_closed(now)
    for symbol, published in (await published_candles(redis_client)).items():
        assert open_times(published) == consecutive(last - 14 * CANDLE_MS, last), symbol


async def test_a_clock_jump_is_fetched_in_pages(exchange, paper, redis_client):
    ensure_history(paper, 30)
    settings = FeedSettings(symbols=["XLMUSDT"], backfill_candles=25, kline_page_limit=10)
    feed = MarketFeed(redis_client, exchange, settings)
    assert await feed.poll_klines() == 25  # first start: bounded by backfill, in 3 pages
    first = open_times((await published_candles(redis_client))["XLMUSDT"])[0]

    now = paper.advance(37 * CANDLE_MS)["market_ms"]  # more than a page: none may be skipped
    assert await feed.poll_klines() == 37
    published = open_times((await published_candles(redis_client))["XLMUSDT"])
    assert published == consecutive(first, newest_closed(now)) and len(published) == 62


async def test_backfill_zero_starts_with_the_next_close(exchange, paper, redis_client):
    now = ensure_history(paper, 3)
    feed = MarketFeed(redis_client, exchange, FeedSettings(symbols=["FHEUSDT"], backfill_candles=0))
    assert await feed.poll_klines() == 0 and await redis_client.xlen(MARKET_KLINES_STREAM) == 0
    now = paper.advance(CANDLE_MS)["market_ms"]
    assert await feed.poll_klines() == 1
    assert open_times((await published_candles(redis_client))["FHEUSDT"]) == [newest_closed(now)]


async def test_streams_stay_capped(exchange, paper, redis_client):
    ensure_history(paper, 3)
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(3_000):
            pipe.xadd(MARKET_TICK_STREAM, {"old": str(i)})
            pipe.xadd(MARKET_KLINES_STREAM, {"old": str(i)})
        await pipe.execute()
    settings = FeedSettings(symbols=["BTCUSDT"], tick_maxlen=1_000, klines_maxlen=1_000, backfill_candles=2)
    feed = MarketFeed(redis_client, exchange, settings)
    await feed.poll_ticks()
    assert await feed.poll_klines() == 2
    # MAXLEN ~: trimmed by whole stream nodes (100 entries each), so a little above the cap.
    for stream in (MARKET_TICK_STREAM, MARKET_KLINES_STREAM):
        assert 1_000 <= await redis_client.xlen(stream) <= 1_100, stream
    newest = (await redis_client.xrevrange(MARKET_KLINES_STREAM, count=1))[0][1]
    assert newest["symbol"] == "BTCUSDT"  # trimming takes the oldest


# --- funding ----------------------------------------------------------------------------------


async def test_funding_rate_in_the_price_hash(exchange, paper, redis_client):
    feed = MarketFeed(redis_client, exchange, FeedSettings(symbols=["XRPUSDT", "BTCUSDT"]))
    assert await feed.poll_funding() == 2
    for symbol in ("XRPUSDT", "BTCUSDT"):
        premium = await exchange.fapiPublicGetPremiumIndex({"symbol": symbol})
        assert await redis_client.hgetall(latest_price_key(symbol)) == {
            "funding_rate": premium["lastFundingRate"], "funding_time": str(premium["nextFundingTime"])}
    assert not await redis_client.exists(latest_price_key("ETHUSDT"))  # not fed


# --- failures ---------------------------------------------------------------------------------


async def test_a_failed_klines_call_costs_one_symbol_one_poll(exchange, paper, redis_client):
    now = ensure_history(paper, 4)
    feed = MarketFeed(redis_client, exchange, FeedSettings(symbols=["BTCUSDT", "ETHUSDT"], backfill_candles=4))
    paper.add_fault(path="/fapi/v1/klines", status=500, code=-1000, count=1)
    with pytest.raises(ccxt.OperationFailed):  # -1000, as ccxt maps it
        await feed.poll_klines()  # one symbol failed; the other was published all the same
    assert sorted(len(c) for c in (await published_candles(redis_client)).values()) == [4]
    assert await feed.poll_klines() == 4
    for published in (await published_candles(redis_client)).values():
        assert open_times(published) == consecutive(newest_closed(now) - 3 * CANDLE_MS, newest_closed(now))


async def test_an_exchange_outage_does_not_stop_the_feed_and_the_missed_candles_follow(paper, redis_client):
    now = ensure_history(paper, 3)
    client = paper_exchange_client(paper.settings, timeout=1_000)
    await client.load_markets()
    settings = FeedSettings(symbols=["BTCUSDT", "XRPUSDT"], backfill_candles=3, tick_interval_s=0.05,
                            kline_interval_s=0.05, funding_interval_s=0.1, max_backoff_s=0.2)
    feed = MarketFeed(redis_client, client, settings)
    network_errors = metric("qt_feed_errors_total", poll="klines", kind="network")
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        await until(lambda: feed.candles_published == 6 and feed.funding_updates >= 2, what="backfill")
        await asyncio.to_thread(paper.stop)
        errors = feed.errors
        await until(lambda: feed.errors >= errors + 6, what="failed polls")
        ticks = feed.ticks_published
        await asyncio.sleep(0.1)
        assert feed.ticks_published == ticks and not task.done()

        await asyncio.to_thread(paper.start)  # same data dir: same market clock
        now = (await asyncio.to_thread(paper.advance, 4 * CANDLE_MS))["market_ms"]
        await until(lambda: feed.candles_published == 6 + 8, what="catch-up")
        await until(lambda: feed.ticks_published > ticks, what="ticks again")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await client.close()
    assert metric("qt_feed_errors_total", poll="klines", kind="network") > network_errors
    assert "klines" in feed.last_error or "ticks" in feed.last_error or "funding" in feed.last_error
    for published in (await published_candles(redis_client)).values():
        assert open_times(published) == consecutive(newest_closed(now) - 6 * CANDLE_MS, newest_closed(now))


async def test_redis_down_is_retried_like_the_exchange(exchange, paper):
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    settings = FeedSettings(symbols=["BTCUSDT"], tick_interval_s=0.05, kline_interval_s=0.05, max_backoff_s=0.1)
    feed = MarketFeed(dead, exchange, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        await until(lambda: feed.errors >= 4, what="failed polls")
        assert not task.done() and metric("qt_feed_errors_total", poll="ticks", kind="redis") >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await dead.aclose()


async def test_a_stored_candle_ahead_of_the_exchange_clock_is_kept_and_reported(exchange, paper, redis_client, caplog):
    now = ensure_history(paper, 2)
    ahead = str(now + 100 * CANDLE_MS)  # say the exchange was reset to an earlier time
    await redis_client.set(FEED_LAST_KLINE_KEY.format(symbol="ETHUSDT"), ahead)
    feed = MarketFeed(redis_client, exchange, FeedSettings(symbols=["ETHUSDT"]))
    assert await feed.poll_klines() == 0 and await feed.poll_klines() == 0
    assert await redis_client.get(FEED_LAST_KLINE_KEY.format(symbol="ETHUSDT")) == ahead
    warnings = [r.getMessage() for r in caplog.records if "before the last candle published" in r.getMessage()]
    assert len(warnings) == 1 and "ETHUSDT" in warnings[0]  # once, not every poll


# --- settings and the process entry point -----------------------------------------------------


def test_bad_settings_are_refused_naming_the_setting(monkeypatch):
    for bad, field in ((dict(tick_interval_s=-1), "tick_interval_s"), (dict(kline_interval_s=0), "kline_interval_s"),
                       (dict(tick_maxlen=10), "tick_maxlen"), (dict(backfill_candles=-1), "backfill_candles"),
                       (dict(secondary_url="ftp://somewhere"), "secondary_url"),
                       (dict(secondary_url="http://127.0.0.1:9", secondary_venue="paper", venue="paper"),
                        "both 'paper'")):
        with pytest.raises(ValidationError, match=field):
            FeedSettings(**bad)
    monkeypatch.setenv("QT_FEED_FUNDING_INTERVAL_S", "-5")
    with pytest.raises(ValidationError, match="funding_interval_s"):
        FeedSettings()
    monkeypatch.delenv("QT_FEED_FUNDING_INTERVAL_S")
    monkeypatch.setenv("QT_FEED_SYMBOLS", " nearusdt, BTC/USDT:USDT ,")
    assert FeedSettings().symbols == ["NEARUSDT", "BTC/USDT:USDT"]
    monkeypatch.setenv("QT_FEED_SYMBOLS", '["XRPUSDT"]')
    assert FeedSettings().symbols == ["XRPUSDT"]


async def test_an_unlisted_symbol_is_a_clear_error(exchange, redis_client, monkeypatch):
    monkeypatch.setenv("QT_FEED_SYMBOLS", "BTCUSDT,DOGEUSDT")
    with pytest.raises(ValueError, match="DOGEUSDT not listed by the exchange"):
        MarketFeed(redis_client, exchange, FeedSettings())


async def test_run_market_feed_builds_its_clients_and_stops(paper, redis_client, monkeypatch):
    for name, value in (("QT_EXCHANGE_MODE", "paper"), ("QT_PAPER_HOST", "127.0.0.1"),
                        ("QT_PAPER_PORT", str(paper.port))):
        monkeypatch.setenv(name, value)
    stop = asyncio.Event()
    settings = FeedSettings(symbols=["DASHUSDT"], tick_interval_s=0.05, backfill_candles=1)
    task = asyncio.create_task(run_market_feed(settings, redis=redis_client, stop=stop))
    try:
        deadline = time.monotonic() + 8
        while await redis_client.xlen(MARKET_TICK_STREAM) < 2 or not await redis_client.xlen(MARKET_KLINES_STREAM):
            assert time.monotonic() < deadline and not task.done(), "the feed wrote nothing"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await redis_client.ping()  # a client passed in is left open

    with pytest.raises(ValueError, match="DOGEUSDT"):  # fails at once, does not retry
        await asyncio.wait_for(run_market_feed(FeedSettings(symbols=["DOGEUSDT"]), redis=redis_client), 5)
