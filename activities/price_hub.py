"""One price subscription per symbol per process, shared by every position watching it.

A monitor worker holds up to thousands of open positions. Polling the exchange per position
would cost one request per position per interval (and trip the exchange's rate limit); the hub
polls each symbol ONCE per interval and fans the result out in memory:

- `subscribe(symbol, ...)` returns a `Watch`. The first watcher of a symbol starts its poll task,
  the last one leaving (`unsubscribe`) stops it.
- Each poll (`fapiPublicGetTickerPrice`: the lightest public price call, weight 1) updates every
  watch's last price, market time and the high/low since that watch last `take()`-ed them, so a
  spike seen by one poll is not lost if the watcher is woken later (by a candle, say).
- A watch is woken (its `asyncio.Event` set) only when something it cares about happened: the
  price left its wake band (`wake_low`/`wake_high`, set by the watcher from its levels), market
  time reached `wake_at_ms`, a candle closed, or the position size changed. Idle watchers cost a
  few comparisons per poll, no task wake-ups.
- When market time crosses a candle boundary the hub fetches the just-closed candle once and
  hands it to every watch that wants candles.
- Kill-score watchers (`kill_window`) need the last N closed candles. The hub keeps them per
  symbol (`CandleHistory`, kept even while nobody watches, so a watcher restarted every session
  costs no reload): the first kill watcher makes the next poll fetch up to the largest window
  asked, and each boundary's one fetch is sized to fill whatever is missing (one candle,
  normally). `features_at` computes a candle's features once per symbol, window and candle,
  whatever the number of watchers. A kill watcher is handed a candle only once the history
  covers its window, so its features are always computed over the full window.
- Watches that want position updates share ONE account-wide `fetch_positions()` (one
  positionRisk request, weight 5) per `position_interval_s` for every symbol, dispatched to each
  symbol's watchers (one-way mode: one position per symbol; a symbol the answer does not list is
  flat). ccxt's `fetch_positions([symbol])` fetches the whole account anyway, so one request per
  symbol would cost N times as much for the same data. A new position watcher gets a fresh size
  within one price-poll interval.
- Exchange errors are logged and retried with exponential backoff; a watcher never sees them.
- The client is the market-data one (`shared_market_exchange`): its throttle is not the order
  client's, so however busy the polls keep it, an order never waits behind them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


from exchange.client import ExchangeHolder, ExchangeSource, shared_market_exchange
from exchange.errors import classify_exchange_error
from activities.market import candle_from_row, resolve_symbol
from trading.features import CANDLE_MS, MarketFeatures, compute_features
from trading.features import Candle

__all__ = ["CandleHistory", "PriceHub", "Snapshot", "SymbolStats", "Watch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What a watch saw since its previous `take()`."""

    price: Decimal
    high: Decimal
    low: Decimal
    market_ms: int


@dataclass
class SymbolStats:
    """Counters for tests and benchmarks (requests = every call made to the exchange)."""

    polls: int = 0
    requests: int = 0
    errors: int = 0
    candle_fetches: int = 0
    position_fetches: int = 0  # account-wide position polls whose answer reached this symbol
    features_computed: int = 0


@dataclass(eq=False)
class Watch:
    """One subscriber's view of a symbol. Mutated only by the hub's poll task (one event loop)."""

    symbol: str
    want_candles: bool = False
    # Deliver only candles opened after this (the last one the caller processed); None: only
    # candles closing from now on. Lets a restarted watcher catch a close it was not there for.
    candles_after_ms: int | None = None
    want_position: bool = False
    # Kill-score watcher: candles are handed over only once the symbol's history holds this many
    # closed candles up to them (or all the exchange has). None: not a kill watcher.
    kill_window: int | None = None
    # Wake band and time, set by the watcher: outside the band / at that time something may
    # need a decision. None = not interested.
    wake_low: Decimal | None = None
    wake_high: Decimal | None = None
    wake_at_ms: int | None = None
    price: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    market_ms: int = 0
    candles: deque[Candle] = field(default_factory=lambda: deque(maxlen=16))
    offered_ms: int | None = None  # open time of the last candle handed over (never twice)
    position_qty: Decimal | None = None  # |contracts| on the exchange, last seen
    position_seq: int = 0  # bumps on every position poll, so a watcher knows it is fresh
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def has_price(self) -> bool:
        return self.price is not None

    def take(self) -> Snapshot:
        """Last price and the high/low since the previous take; the range restarts at the last price."""
        assert self.price is not None and self.high is not None and self.low is not None
        snap = Snapshot(price=self.price, high=self.high, low=self.low, market_ms=self.market_ms)
        self.high = self.low = self.price
        return snap

    def _observe(self, price: Decimal, market_ms: int) -> None:
        first = self.price is None
        self.price, self.market_ms = price, market_ms
        self.high = price if self.high is None or price > self.high else self.high
        self.low = price if self.low is None or price < self.low else self.low
        if first or self._wants_wake():
            # The first price always: a watcher may have a decision pending that needs no move
            # (say a trailing stop carried over from its previous session, already worth moving).
            self.event.set()

    def _wants_wake(self) -> bool:
        return (
            (self.wake_low is not None and self.low is not None and self.low <= self.wake_low)
            or (self.wake_high is not None and self.high is not None and self.high >= self.wake_high)
            or (self.wake_at_ms is not None and self.market_ms >= self.wake_at_ms)
        )

    def rearm(self) -> None:
        """After the watcher changed its band: clear the event, or keep it set if already due."""
        self.event.clear()
        if self.candles or (self.has_price and self._wants_wake()):
            self.event.set()


class CandleHistory:
    """Closed candles of one symbol, oldest first, without holes; at most `size` of them.

    `size` is the largest window any kill watcher asked for (at least 2: the plain candle
    watchers' last close). `first_ms` is the exchange's first candle once a fetch came back
    short (a young market, or the paper exchange's replay start): the history is then as
    complete as it can be with fewer candles.
    """

    def __init__(self) -> None:
        self.candles: deque[Candle] = deque()
        self.size = 2
        self.first_ms: int | None = None
        self._features: dict[tuple[int, int], MarketFeatures | None] = {}

    def get(self, open_ms: int) -> Candle | None:
        for candle in reversed(self.candles):
            if candle.open_ms == open_ms:
                return candle
            if candle.open_ms < open_ms:
                return None
        return None

    def missing(self, last_open_ms: int, window: int) -> int:
        """How many candles ending at `last_open_ms` to fetch so that the history holds the
        `window` candles up to it (0: it does): only the newer ones when the older part is
        there, else the whole window."""
        first = last_open_ms - (window - 1) * CANDLE_MS
        if self.first_ms is not None:
            first = max(first, self.first_ms)
        if first > last_open_ms:
            return 0  # the exchange has no such candle yet
        have = [c.open_ms for c in self.candles if c.open_ms <= last_open_ms]
        whole = (last_open_ms - first) // CANDLE_MS + 1
        if not have or have[0] > first:
            return whole
        return min((last_open_ms - have[-1]) // CANDLE_MS, whole)

    def merge(self, fetched: list[Candle], limit: int, last_open_ms: int) -> None:
        """Add one fetch of the latest `limit` candles; only those up to `last_open_ms` (closed
        when the caller read the clock) are kept."""
        if len(fetched) < limit:  # the exchange has nothing older (or nothing at all yet)
            self.first_ms = fetched[0].open_ms if fetched else last_open_ms + CANDLE_MS
        fetched = [c for c in fetched if c.open_ms <= last_open_ms]
        by_open = {c.open_ms: c for c in self.candles}
        by_open.update((c.open_ms, c) for c in fetched)
        run: list[Candle] = []  # the hole-free run ending at the newest candle
        for open_ms in sorted(by_open, reverse=True):
            if run and open_ms != run[-1].open_ms - CANDLE_MS or len(run) >= self.size:
                break
            run.append(by_open[open_ms])
        self.candles = deque(reversed(run))
        if self.candles:  # features of candles that left the history are not asked for again
            oldest = self.candles[0].open_ms
            self._features = {k: v for k, v in self._features.items() if k[0] >= oldest}

    def features(self, open_ms: int, window: int) -> tuple[MarketFeatures | None, bool]:
        """Features over the `window` candles up to `open_ms` (computed once), and whether they
        were computed now; (None, False) while the history does not cover that window."""
        key = (open_ms, window)
        if key in self._features:
            return self._features[key], False
        if self.get(open_ms) is None or self.missing(open_ms, window):
            return None, False
        candles = [c for c in self.candles if c.open_ms <= open_ms][-window:]
        self._features[key] = compute_features(candles)
        return self._features[key], True


class _SymbolFeed:
    """The poll task of one symbol and its subscribers."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.watches: set[Watch] = set()
        self.task: asyncio.Task | None = None
        self.last: tuple[Decimal, int] | None = None
        self.candle_bucket: int | None = None  # market_ms // CANDLE_MS at the last poll
        self.pending_candle_bucket: int | None = None  # closed bucket not yet fetched
        self.last_candle: Candle | None = None
        self.catch_up = False  # a watcher wants the last closed candle, not known yet


class PriceHub:
    """Process-wide price fan-out (see the module docstring)."""

    def __init__(
        self,
        exchange: ExchangeSource | None = None,
        *,
        poll_interval_s: float = 0.25,
        position_interval_s: float = 2.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        # None: the process-wide market-data client, resolved on first use.
        self._holder = ExchangeHolder(shared_market_exchange if exchange is None else exchange)
        self.poll_interval_s = poll_interval_s
        self.position_interval_s = position_interval_s
        self.max_backoff_s = max_backoff_s
        self._feeds: dict[str, _SymbolFeed] = {}
        self._histories: dict[str, CandleHistory] = {}  # outlive feeds (see the module docstring)
        self.stats: dict[str, SymbolStats] = {}
        self._positions_task: asyncio.Task | None = None
        self._positions_wanted = asyncio.Event()  # a new position watcher: poll soon
        self.position_polls = 0  # account-wide position requests (one for all symbols)
        self.position_errors = 0

    # -- the client ----------------------------------------------------------------------------

    async def exchange(self) -> Any:
        """The market-data client (injected, or the process-wide one), markets loaded."""
        return await self._holder.exchange()

    async def market_id(self, symbol: str) -> str:
        """Accept `BTCUSDT` (what intents carry) or ccxt's `BTC/USDT:USDT`; key feeds by the id."""
        exchange = await self.exchange()
        return exchange.market(resolve_symbol(exchange, symbol))["id"]

    async def tick_size(self, symbol: str) -> Decimal:
        exchange = await self.exchange()
        market = exchange.markets_by_id[await self.market_id(symbol)][0]
        return Decimal(str(market["precision"]["price"]))

    # -- subscriptions ---------------------------------------------------------------------------

    async def subscribe(
        self,
        symbol: str,
        *,
        want_candles: bool = False,
        candles_after_ms: int | None = None,
        want_position: bool = False,
        kill_window: int | None = None,
    ) -> Watch:
        """`kill_window`: closed candles the watcher computes features over (implies candles)."""
        market_id = await self.market_id(symbol)
        watch = Watch(symbol=market_id, want_candles=want_candles or bool(kill_window),
                      candles_after_ms=candles_after_ms, want_position=want_position,
                      kill_window=kill_window)
        feed = self._feeds.get(market_id)
        if feed is None:
            feed = self._feeds[market_id] = _SymbolFeed(market_id)
            self.stats.setdefault(market_id, SymbolStats())
        history = self.history(market_id)
        if kill_window:
            history.size = max(history.size, kill_window)  # the next poll fetches what is missing
        if feed.last is not None:
            # Seed with the last poll (at most one interval old) so a watcher re-subscribing
            # after a level update can decide at once instead of waiting for the next poll.
            watch._observe(*feed.last)
        if watch.want_candles and candles_after_ms is not None:
            if feed.last_candle is not None and _offer(watch, feed.last_candle, history):
                pass  # the cached candle is newer than what the caller has seen: delivered
            else:
                feed.catch_up = True  # the next poll checks which candle closed last
        feed.watches.add(watch)
        if feed.task is None or feed.task.done():
            feed.task = asyncio.create_task(self._poll(feed), name=f"price-hub:{market_id}")
        if want_position:
            self._positions_wanted.set()  # a new position watcher wants a fresh size soon
            if self._positions_task is None or self._positions_task.done():
                self._positions_task = asyncio.create_task(self._poll_positions(),
                                                           name="price-hub:positions")
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        """Synchronous on purpose: safe to call from a `finally` while being cancelled."""
        feed = self._feeds.get(watch.symbol)
        if feed is None:
            return
        feed.watches.discard(watch)
        if not feed.watches:
            if feed.task is not None:
                feed.task.cancel()
            del self._feeds[watch.symbol]

    def subscriber_count(self, symbol: str | None = None) -> int:
        if symbol is not None:
            feed = self._feeds.get(symbol)
            return len(feed.watches) if feed else 0
        return sum(len(f.watches) for f in self._feeds.values())

    def history(self, symbol: str) -> CandleHistory:
        """The closed candles kept for `symbol` (exchange id)."""
        return self._histories.setdefault(symbol, CandleHistory())

    def features_at(self, symbol: str, open_ms: int, window: int) -> MarketFeatures | None:
        """Features over the `window` closed candles up to the one opened at `open_ms`; computed
        once per symbol whatever the number of watchers asking. None: fewer than 20 candles
        exist, or the history does not hold them (a kill watcher is never handed such a candle)."""
        features, computed = self.history(symbol).features(open_ms, window)
        if computed:
            self.stats.setdefault(symbol, SymbolStats()).features_computed += 1
        return features

    def polling_symbols(self) -> list[str]:
        return [s for s, f in self._feeds.items() if f.task is not None and not f.task.done()]

    def poll_task(self, symbol: str) -> asyncio.Task | None:
        feed = self._feeds.get(symbol)
        return feed.task if feed else None

    async def close(self) -> None:
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        if self._positions_task is not None:
            tasks.append(self._positions_task)
        self._feeds.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the poll loop ------------------------------------------------------------------------

    async def _poll(self, feed: _SymbolFeed) -> None:
        stats = self.stats[feed.symbol]
        failures = 0
        while feed.watches:
            started = time.monotonic()
            try:
                await self._poll_once(feed, stats)
                failures = 0
                delay = self.poll_interval_s - (time.monotonic() - started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001: a poll error must never reach a watcher
                failures += 1
                stats.errors += 1
                failure = classify_exchange_error(exc)
                delay = min(self.poll_interval_s * 2**failures, self.max_backoff_s)
                log.warning(
                    "price poll failed",
                    extra={"symbol": feed.symbol, "kind": failure.kind.value, "code": failure.code,
                           "error": failure.message, "retry_in_s": delay},
                )
            await asyncio.sleep(max(0.0, delay))

    async def _poll_once(self, feed: _SymbolFeed, stats: SymbolStats) -> None:
        exchange = await self.exchange()
        stats.requests += 1
        reply = await exchange.fapiPublicGetTickerPrice({"symbol": feed.symbol})
        price, market_ms = Decimal(str(reply["price"])), int(reply["time"])
        stats.polls += 1
        feed.last = (price, market_ms)
        for watch in tuple(feed.watches):
            watch._observe(price, market_ms)

        bucket = market_ms // CANDLE_MS
        if feed.candle_bucket is not None and bucket > feed.candle_bucket:
            feed.pending_candle_bucket = bucket - 1  # the last candle that closed
        feed.candle_bucket = bucket
        if feed.catch_up:
            feed.catch_up = False
            closed_open = (bucket - 1) * CANDLE_MS
            if feed.last_candle is None or feed.last_candle.open_ms < closed_open:
                feed.pending_candle_bucket = bucket - 1
        if not any(w.want_candles for w in feed.watches):
            feed.pending_candle_bucket = None  # nobody wants it: do not fetch it later
        elif feed.pending_candle_bucket is not None or self._history_due(feed, bucket - 1):
            await self._deliver_candle(feed, stats, exchange, bucket - 1)

    def _history_due(self, feed: _SymbolFeed, last_closed: int) -> bool:
        """A kill watcher is here and the history lacks candles up to the last closed one."""
        history = self.history(feed.symbol)
        return any(w.kill_window for w in feed.watches) and history.missing(last_closed * CANDLE_MS, history.size) > 0

    async def _deliver_candle(
        self, feed: _SymbolFeed, stats: SymbolStats, exchange: Any, last_closed: int
    ) -> None:
        """One klines fetch: the just-closed candle for every candle watcher, plus whatever the
        history lacks for kill watchers (the whole window when the first one arrives)."""
        history = self.history(feed.symbol)
        last_open = last_closed * CANDLE_MS
        kill = any(w.kill_window for w in feed.watches)
        needed = history.missing(last_open, history.size if kill else 2)
        if needed:
            unified = exchange.markets_by_id[feed.symbol][0]["symbol"]
            stats.requests += 1
            stats.candle_fetches += 1
            # +1: the exchange serves the open candle last (dropped by `merge`).
            rows = await exchange.fetch_ohlcv(unified, "5m", limit=needed + 1)
            history.merge([candle_from_row(r) for r in rows], needed + 1, last_open)
        wanted = feed.pending_candle_bucket
        candle = history.get((wanted if wanted is not None else last_closed) * CANDLE_MS)
        if candle is None:
            return  # not served yet: the pending bucket stays and the next poll tries again
        feed.pending_candle_bucket = None
        if feed.last_candle is None or feed.last_candle.open_ms < candle.open_ms:
            feed.last_candle = candle
        for watch in tuple(feed.watches):
            # A new close goes to every candle watcher; an older one (the history was loaded)
            # only to those that asked for candles since a given one (restarted sessions).
            if wanted is not None or watch.candles_after_ms is not None:
                _offer(watch, candle, history)

    # -- positions: one account-wide poll for every symbol -------------------------------------

    def _position_feeds(self) -> list[_SymbolFeed]:
        return [f for f in self._feeds.values() if any(w.want_position for w in f.watches)]

    async def _poll_positions(self) -> None:
        """While any watcher wants positions: one `fetch_positions()` per `position_interval_s`
        (sooner, but at most once per price-poll interval, when a new position watcher came)."""
        failures = 0
        while self._position_feeds():
            started = time.monotonic()
            self._positions_wanted.clear()
            try:
                await self._poll_positions_once()
                failures = 0
                delay = self.position_interval_s - (time.monotonic() - started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001: a poll error must never reach a watcher
                failures += 1
                self.position_errors += 1
                failure = classify_exchange_error(exc)
                delay = min(self.poll_interval_s * 2**failures, self.max_backoff_s)
                log.warning(
                    "position poll failed",
                    extra={"kind": failure.kind.value, "code": failure.code, "error": failure.message,
                           "retry_in_s": delay},
                )
                await asyncio.sleep(delay)  # a new watcher does not shorten an error's backoff
                continue
            # At least one price-poll interval between two requests, whoever asks.
            await asyncio.sleep(max(0.0, min(self.poll_interval_s, delay)))
            try:
                async with asyncio.timeout(max(0.0, delay - self.poll_interval_s)):
                    await self._positions_wanted.wait()
            except TimeoutError:
                pass

    async def _poll_positions_once(self) -> None:
        exchange = await self.exchange()
        self.position_polls += 1
        positions = await exchange.fetch_positions()  # no symbols: the whole account, one request
        qty: dict[str, Decimal] = {}
        for p in positions:
            market = exchange.markets.get(p.get("symbol")) if exchange.markets else None
            if market is None:
                continue
            contracts = abs(Decimal(str(p.get("contracts") or 0)))
            qty[market["id"]] = qty.get(market["id"], Decimal(0)) + contracts
        for feed in self._position_feeds():
            stats = self.stats.setdefault(feed.symbol, SymbolStats())
            stats.position_fetches += 1
            self._deliver_position(feed, qty.get(feed.symbol, Decimal(0)))

    @staticmethod
    def _deliver_position(feed: _SymbolFeed, qty: Decimal) -> None:
        for watch in tuple(feed.watches):
            if watch.want_position:
                changed = watch.position_qty is not None and watch.position_qty != qty
                watch.position_qty = qty
                watch.position_seq += 1
                if changed or watch.position_seq == 1:
                    watch.event.set()  # the watcher compares with its expected size


def _offer(watch: Watch, candle: Candle, history: CandleHistory) -> bool:
    """Hand `candle` to `watch` if it wants it and has not had it (or a later one). A kill
    watcher gets it only once `history` covers its window (else a later poll offers it again)."""
    if not watch.want_candles:
        return False
    if watch.candles_after_ms is not None and candle.open_ms <= watch.candles_after_ms:
        return False
    if watch.offered_ms is not None and watch.offered_ms >= candle.open_ms:
        return False
    if watch.kill_window and history.missing(candle.open_ms, watch.kill_window):
        return False
    watch.candles.append(candle)
    watch.offered_ms = candle.open_ms
    watch.event.set()
    return True
