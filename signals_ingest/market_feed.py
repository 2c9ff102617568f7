"""Market feed: the exchange's prices, closed candles and funding rates into Redis, through ccxt.

- **Ticks** (every `tick_interval_s`): two calls for all symbols at once, `fetch_last_prices`
  (`/fapi/v2/ticker/price`) and `fetch_bids_asks` (`/fapi/v1/ticker/bookTicker`); one entry per
  symbol in `quantum:stream:market.tick` (`symbol price bid ask timestamp exchange`, capped at
  about `tick_maxlen`) and the latest price hash `quantum:market:price:{symbol}` (`price
  timestamp received_ms exchange`), all in one pipeline. With a second venue configured, each
  venue also writes `price:{venue}` / `timestamp:{venue}` there, and its ticks go to the stream
  with its own `exchange` name.
- **Candles** (every `kline_interval_s`): the exchange's clock (`fetch_time`) decides which 5m
  candles are closed (open time + 5 min <= exchange time; never the wall clock). Each closed
  candle is published once, oldest first, to `quantum:stream:market.klines`; the open time of
  the last one published per symbol lives in `quantum:feed:last_kline:{symbol}` and moves in the
  same Lua script as the XADDs, which skips any candle not newer than it. So a restarted feed,
  or two feeds side by side, never publish a candle twice. A symbol with nothing stored starts
  `backfill_candles` back; one with a stored position catches up every candle since, in pages
  of `kline_page_limit` (the feed was down, or the clock jumped).
- **Funding** (every `funding_interval_s`): `fetch_funding_rates` (`/fapi/v1/premiumIndex`) into
  the same hash (`funding_rate`, `funding_time` = the funding event it applies to).

Values are the exchange's own strings (ids like `NEARUSDT`, prices as it formats them). A failed
poll (ccxt NetworkError/ExchangeError, Redis down) is logged on one line and retried with
exponential backoff; each poll kind and venue has its own loop, so one failing never slows
another. Polling only: the paper exchange has no websockets, and one tested code path for paper,
testnet and live is worth more than ccxt.pro's lower latency here (the monitor, which needs
sub-second reaction, polls the exchange itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from exchange.client import LocalBinanceUsdm, create_exchange
from exchange.parse import funding_rates_of, ticks_of
from trading.features import CANDLE_MS
from common.redis_values import decoded
from common.settings import ExchangeSettings, StackSettings
from signals_ingest.feed_settings import FeedSettings
from common.redis_keys import FEED_LAST_KLINE_KEY, MARKET_KLINES_STREAM, MARKET_TICK_STREAM, latest_price_key

__all__ = ["FeedSymbol", "MarketFeed", "feed_symbols", "run_market_feed", "secondary_exchange"]

log = logging.getLogger(__name__)

INTERVAL = "5m"  # CANDLE_MS: the candles the features and the kill score use
KLINE_CONCURRENCY = 8  # symbols fetching klines at once after a close

TICKS = Counter("qt_feed_ticks_total", "Ticks written to market.tick", ["symbol", "exchange"])
CANDLES = Counter("qt_feed_candles_total", "Closed candles written to market.klines", ["symbol"])
FUNDING = Counter("qt_feed_funding_updates_total", "Funding rates written to the price hash", ["symbol"])
ERRORS = Counter("qt_feed_errors_total", "Failed polls (retried with backoff)", ["poll", "kind"])
LAST_CANDLE_AGE = Gauge("qt_feed_last_candle_age_seconds",
                        "Market time since the close of the last candle published", ["symbol"])

# KEYS[1]: open time of the last candle published; KEYS[2]: the klines stream.
# ARGV[1]: approximate MAXLEN; ARGV[2]: field/value items per candle; then per candle, oldest
# first: its open time and its field/value items. Only candles newer than the stored one are
# added, and the stored one moves with them: nothing is published twice, nothing out of order.
_PUBLISH_CANDLES_LUA = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
local width = tonumber(ARGV[2])
local newest = nil
local published = 0
for i = 3, #ARGV, width + 1 do
  local open_time = tonumber(ARGV[i])
  if open_time > last then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 1, i + width))
    last = open_time
    newest = ARGV[i]
    published = published + 1
  end
end
if newest then
  redis.call('SET', KEYS[1], newest)
end
return {published, redis.call('GET', KEYS[1]) or ''}
"""


@dataclass(frozen=True)
class FeedSymbol:
    symbol: str  # ccxt's unified symbol, NEAR/USDT:USDT
    id: str  # the exchange's id, NEARUSDT: what the streams and Redis keys carry


def _is_usdt_perpetual(market: dict) -> bool:
    return bool(market.get("swap") and market.get("linear") and market.get("settle") == "USDT"
                and market.get("active", True) is not False)


def feed_symbols(exchange: Any, wanted: list[str]) -> list[FeedSymbol]:
    """The symbols to feed, from ccxt's loaded markets. `wanted` empty: every USDT perpetual.
    An unlisted symbol is a configuration error (ValueError naming it)."""
    markets = exchange.markets or {}
    if not wanted:
        chosen = [m for m in markets.values() if _is_usdt_perpetual(m)]
        if not chosen:
            raise ValueError("the exchange lists no USDT perpetual to feed")
    else:
        by_id = exchange.markets_by_id or {}
        chosen, unknown = [], []
        for name in wanted:
            market = markets.get(name) or next(iter(by_id.get(name) or ()), None)
            (chosen if market else unknown).append(market or name)
        if unknown:
            listed = ", ".join(sorted(m["id"] for m in markets.values() if _is_usdt_perpetual(m)))
            raise ValueError(f"QT_FEED_SYMBOLS: {', '.join(unknown)} not listed by the exchange "
                             f"(USDT perpetuals: {listed})")
    seen: dict[str, FeedSymbol] = {}
    for m in chosen:
        seen.setdefault(m["id"], FeedSymbol(symbol=m["symbol"], id=m["id"]))
    return list(seen.values())


def default_venue(exchange: Any) -> str:
    return "paper" if isinstance(exchange, LocalBinanceUsdm) else str(exchange.id)


def secondary_exchange(url: str) -> Any:
    """A ccxt client (not loaded) for a second Binance-compatible paper exchange at `url`."""
    parts = urlsplit(url)
    return create_exchange(ExchangeSettings(mode="paper", paper_host=parts.hostname, paper_port=parts.port))


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _field(value: Any) -> str:
    """A hash/stream field: "" for an absent value; a Decimal as the exchange wrote it (never in
    exponent notation: "0.00000000", not "0E-8")."""
    if value is None:
        return ""
    return format(value, "f") if isinstance(value, Decimal) else str(value)



def error_kind(exc: BaseException) -> str:
    if isinstance(exc, RedisError):
        return "redis"
    if isinstance(exc, ccxt.NetworkError):
        return "network"
    if isinstance(exc, ccxt.BaseError):
        return "exchange"
    return "other"


async def _gather(*calls: Awaitable[Any]) -> list[Any]:
    """All results; the first failure raised only after every call has finished."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        pass
    return stop.is_set()


class MarketFeed:
    """One feed process's polls. The single steps (`poll_ticks`, `poll_klines`, `poll_funding`)
    raise on failure; `run` loops them with backoff until its `stop` event is set."""

    def __init__(self, redis: aioredis.Redis, exchange: Any, settings: FeedSettings | None = None,
                 secondary_exchange: Any | None = None) -> None:
        self.redis = redis
        self.exchange = exchange
        self.settings = settings or FeedSettings()
        self.secondary = secondary_exchange
        self.venue = self.settings.venue or default_venue(exchange)
        self.secondary_venue = self.settings.secondary_venue if secondary_exchange is not None else None
        if self.venue == self.secondary_venue:
            raise ValueError(f"both venues are named {self.venue!r}: set QT_FEED_SECONDARY_VENUE")
        # Resolved now when the markets are loaded (a bad symbol fails at once), else on first use.
        self.symbols: list[FeedSymbol] | None = (
            feed_symbols(exchange, self.settings.symbols) if exchange.markets else None)
        self._publish = redis.register_script(_PUBLISH_CANDLES_LUA)
        # Counters of this instance (the Prometheus ones add up every feed in the process).
        self.ticks_published = 0
        self.candles_published = 0
        self.funding_updates = 0
        self.errors = 0
        self.last_error: str | None = None
        self._behind: set[str] = set()  # symbols whose stored candle is ahead of the exchange

    async def ready(self) -> list[FeedSymbol]:
        """The symbols, loading the markets first if needed."""
        if self.symbols is None:
            await self.exchange.load_markets()
            self.symbols = feed_symbols(self.exchange, self.settings.symbols)
        return self.symbols

    # -- ticks -----------------------------------------------------------------------------------

    async def poll_ticks(self) -> int:
        """One price poll of every venue; returns the ticks written."""
        venues = [self._poll_venue_ticks(self.venue, self.exchange)]
        if self.secondary is not None:
            venues.append(self._poll_venue_ticks(self.secondary_venue, self.secondary))
        return sum(await _gather(*venues))

    async def _poll_venue_ticks(self, venue: str, exchange: Any) -> int:
        wanted = {s.id for s in await self.ready()}
        prices, books = await _gather(exchange.fetch_last_prices(), exchange.fetch_bids_asks())
        received_ms = str(_wall_ms())
        ticks, clock_ms = [], None
        for tick in ticks_of(prices, books, wanted):
            stamp = tick.time_ms
            if stamp is None:  # a ticker without its time: the exchange clock, asked once
                stamp = clock_ms = clock_ms or await exchange.fetch_time()
            ticks.append({"symbol": tick.symbol, "price": _field(tick.price), "bid": _field(tick.bid),
                          "ask": _field(tick.ask), "timestamp": str(int(stamp)), "exchange": venue})

        per_venue = self.secondary is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            for tick in ticks:
                pipe.xadd(MARKET_TICK_STREAM, tick, maxlen=self.settings.tick_maxlen, approximate=True)
                fields = {}
                if venue == self.venue:
                    fields = {"price": tick["price"], "timestamp": tick["timestamp"],
                              "received_ms": received_ms, "exchange": venue}
                if per_venue:
                    fields[f"price:{venue}"] = tick["price"]
                    fields[f"timestamp:{venue}"] = tick["timestamp"]
                pipe.hset(latest_price_key(tick["symbol"]), mapping=fields)
            if ticks:
                await pipe.execute()
        for tick in ticks:
            TICKS.labels(symbol=tick["symbol"], exchange=venue).inc()
        self.ticks_published += len(ticks)
        return len(ticks)

    # -- candles ---------------------------------------------------------------------------------

    async def poll_klines(self) -> int:
        """Publish every candle closed by now (exchange time) and not yet published; returns how
        many this call published."""
        symbols = await self.ready()
        now = int(await self.exchange.fetch_time())  # before the klines: what closed by now is served closed
        stored = await self.redis.mget([FEED_LAST_KLINE_KEY.format(symbol=s.id) for s in symbols])
        gate = asyncio.Semaphore(KLINE_CONCURRENCY)

        async def one(symbol: FeedSymbol, last: Any) -> int:
            async with gate:
                return await self._catch_up(symbol, int(last) if last is not None else None, now)

        return sum(await _gather(*(one(s, last) for s, last in zip(symbols, stored))))

    async def _catch_up(self, symbol: FeedSymbol, last: int | None, now: int) -> int:
        key = FEED_LAST_KLINE_KEY.format(symbol=symbol.id)
        newest_closed = (now // CANDLE_MS - 1) * CANDLE_MS  # open time of the last closed candle
        if last is None:
            if self.settings.backfill_candles == 0:
                await self.redis.set(key, newest_closed, nx=True)  # from the next close on
                return 0
            start = newest_closed - (self.settings.backfill_candles - 1) * CANDLE_MS
        else:
            start = last + CANDLE_MS
            if last > newest_closed and symbol.id not in self._behind:
                self._behind.add(symbol.id)  # once: it repeats every poll until the clock passes
                log.warning("market feed: %s: the exchange's clock (%d) is before the last candle "
                            "published (%d), so none is published until it passes it (a reset "
                            "exchange? delete %s to start over)", symbol.id, now, last, key)
        published, limit = 0, self.settings.kline_page_limit
        while start <= newest_closed:
            rows = await self.exchange.fapiPublicGetKlines(
                {"symbol": symbol.id, "interval": INTERVAL, "startTime": start, "limit": limit})
            closed = [r for r in rows if start <= int(r[0]) and int(r[0]) + CANDLE_MS <= now]
            if closed:
                count, stored = await self._publish_candles(symbol, closed)
                published += count
                last = int(stored) if stored else last
            if len(rows) < limit or not closed:
                break  # the exchange has nothing newer (or older: before its first candle)
            start = int(closed[-1][0]) + CANDLE_MS
        if last is not None:
            LAST_CANDLE_AGE.labels(symbol=symbol.id).set(max(0, now - last - CANDLE_MS) / 1000)
        return published

    async def _publish_candles(self, symbol: FeedSymbol, rows: list[list]) -> tuple[int, str]:
        args: list[Any] = [self.settings.klines_maxlen, 0]
        for row in rows:
            open_ms = int(row[0])
            fields = ("symbol", symbol.id, "interval", INTERVAL, "open_time", open_ms,
                      "close_time", open_ms + CANDLE_MS - 1, "open", row[1], "high", row[2],
                      "low", row[3], "close", row[4], "volume", row[5], "exchange", self.venue,
                      "closed", "1")
            args[1] = len(fields)
            args.append(open_ms)
            args.extend(str(v) for v in fields)
        key = FEED_LAST_KLINE_KEY.format(symbol=symbol.id)
        published, stored = await self._publish(keys=[key, MARKET_KLINES_STREAM], args=args)
        published = int(published)
        if published:
            CANDLES.labels(symbol=symbol.id).inc(published)
            self.candles_published += published
        return published, str(decoded(stored))

    # -- funding ---------------------------------------------------------------------------------

    async def poll_funding(self) -> int:
        """Funding rate of every symbol into its price hash; returns how many were written."""
        wanted = {s.id for s in await self.ready()}
        rates = await self.exchange.fetch_funding_rates()
        written = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for rate in funding_rates_of(rates, wanted):
                pipe.hset(latest_price_key(rate.symbol),
                          mapping={"funding_rate": _field(rate.rate), "funding_time": _field(rate.next_funding_ms)})
                written.append(rate.symbol)
            if written:
                await pipe.execute()
        for symbol in written:
            FUNDING.labels(symbol=symbol).inc()
        self.funding_updates += len(written)
        return len(written)

    # -- the loops -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. Markets are loaded first (retried while the exchange is
        unreachable); an unlisted symbol in the settings raises ValueError."""
        if not await self._start(stop):
            return
        s = self.settings
        loops: list[tuple[str, Callable[[], Awaitable[Any]], float]] = [
            ("ticks", lambda: self._poll_venue_ticks(self.venue, self.exchange), s.tick_interval_s),
            ("klines", self.poll_klines, s.kline_interval_s),
            ("funding", self.poll_funding, s.funding_interval_s),
        ]
        if self.secondary is not None:
            loops.append((f"ticks:{self.secondary_venue}",
                          lambda: self._poll_venue_ticks(self.secondary_venue, self.secondary),
                          s.tick_interval_s))
        tasks = [asyncio.create_task(self._loop(name, poll, interval), name=f"market-feed:{name}")
                 for name, poll, interval in loops]
        log.info("market feed: %d symbols from %s%s", len(self.symbols or ()), self.venue,
                 f" and {self.secondary_venue}" if self.secondary is not None else "")
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self, stop: asyncio.Event) -> bool:
        failures = 0
        while not stop.is_set():
            try:
                await self.ready()
                return True
            except ValueError:
                raise  # configuration: retrying cannot help
            except Exception as exc:  # noqa: BLE001: the exchange may come up later
                failures += 1
                delay = self._backoff(self.settings.tick_interval_s, failures)
                self._failed("markets", exc, delay)
                await _wait(stop, delay)
        return False

    async def _loop(self, name: str, poll: Callable[[], Awaitable[Any]], interval: float) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await poll()
                failures = 0
                delay = interval - (time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001: one failed poll never ends the feed
                failures += 1
                delay = self._backoff(interval, failures)
                self._failed(name, exc, delay)
            await asyncio.sleep(max(0.0, delay))

    def _backoff(self, interval: float, failures: int) -> float:
        return min(interval * 2 ** min(failures, 20), max(self.settings.max_backoff_s, interval))

    def _failed(self, poll: str, exc: Exception, retry_in_s: float) -> None:
        kind = error_kind(exc)
        self.errors += 1
        self.last_error = f"{poll}: {type(exc).__name__}: {exc}"
        ERRORS.labels(poll=poll, kind=kind).inc()
        message = " ".join(str(exc).split())[:300]
        log.warning("market feed: %s poll failed (%s, %s: %s); retrying in %.1f s",
                    poll, kind, type(exc).__name__, message, retry_in_s,
                    exc_info=kind == "other")  # an unexpected error: its traceback too


async def run_market_feed(settings: FeedSettings | None = None, *, redis: aioredis.Redis | None = None,
                          stop: asyncio.Event | None = None) -> None:
    """The feed with its own clients (`QT_EXCHANGE_*`/`QT_PAPER_*`, `QT_REDIS_URL`), until `stop`
    is set (or the task is cancelled). A `redis` passed in is left open."""
    settings = settings or FeedSettings()
    stop = stop or asyncio.Event()
    own_redis = redis is None
    if redis is None:
        redis = aioredis.from_url(StackSettings().effective_redis_url, decode_responses=True)
    exchange = create_exchange()
    secondary = secondary_exchange(settings.secondary_url) if settings.secondary_url else None
    try:
        await MarketFeed(redis, exchange, settings, secondary).run(stop)
    finally:
        await exchange.close()
        if secondary is not None:
            await secondary.close()
        if own_redis:
            await redis.aclose()
