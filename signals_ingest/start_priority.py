"""Which intents may wait: a Temporal task-queue priority from the intent's age.

The stale decision belongs to the workflow's gates (market clock, every intent). This is only a
scheduling hint: an intent that is already clearly stale when the intake reads it (a replayed
backlog: the old system once held 67,448) is started at the lowest priority, so the thousands of
soon-REJECTED workflows of a backlog do not make a fresh intent wait behind them. Without it a
fresh intent queued behind a 10k backlog (~8-15 decisions/s on one worker) would wait minutes
for its first workflow task and be refused as stale itself. Activities inherit the workflow's
priority, so the backlog's gate calls also yield to live trades.

A misjudged age only changes the order, never the outcome: the gates still decide.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from temporalio.common import Priority

from common.redis_keys import latest_price_key
from common.latest_price import parse_latest_price
from trading.intent import TradeIntent, intent_age_s

# Temporal's keys run 1 (first) to 5 (last); unset = 3, what every live intent keeps.
BACKLOG_PRIORITY = Priority(priority_key=5)


def start_priority(intent: TradeIntent, market_now_ms: int, deprioritize_after_s: float) -> Priority:
    """The lowest priority for an intent older than `deprioritize_after_s` at `market_now_ms`,
    Temporal's default otherwise (and always when `deprioritize_after_s` is 0: off)."""
    if deprioritize_after_s <= 0:
        return Priority.default
    now = datetime.fromtimestamp(market_now_ms / 1000, UTC)
    return BACKLOG_PRIORITY if intent_age_s(intent, now) > deprioritize_after_s else Priority.default


class MarketClock:
    """The market's time as the intake can know it without asking the exchange: the market
    feed's latest exchange timestamp for the symbol (plus the wall time since it arrived), else
    the wall clock. Cached per symbol for `cache_s`, so a backlog costs one HGETALL per symbol per
    second, not one per entry."""

    def __init__(self, redis: aioredis.Redis, *, max_feed_age_s: float = 60.0, cache_s: float = 1.0) -> None:
        self.redis = redis
        self.max_feed_age_ms = int(max_feed_age_s * 1000)
        self.cache_s = cache_s
        # symbol -> (read at, offset ms, the feed's exchange time ms)
        self._cache: dict[str, tuple[float, int | None, int | None]] = {}

    async def now_ms(self, symbol: str) -> int:
        """An estimate of the market's now (for a scheduling hint): the feed's offset from the
        wall clock applied to the wall clock now, else the wall clock."""
        wall_ms = int(time.time() * 1000)
        offset, _ = await self._read(symbol, wall_ms)
        return wall_ms + offset if offset is not None else wall_ms

    async def at_least_ms(self, symbol: str) -> int | None:
        """A time the market has certainly reached: the exchange time of the feed's latest price
        (market time only moves forward; no wall-clock extrapolation, which runs ahead of a
        replay slower than real time). None without a feed price."""
        _, feed_ms = await self._read(symbol, int(time.time() * 1000))
        return feed_ms

    async def _read(self, symbol: str, wall_ms: int) -> tuple[int | None, int | None]:
        read_at, offset, feed_ms = self._cache.get(symbol, (-1e18, None, None))
        if time.monotonic() - read_at > self.cache_s:
            feed = parse_latest_price(await self.redis.hgetall(latest_price_key(symbol)))
            feed_ms = feed.exchange_ms if feed is not None else None
            # No feed, or it stopped: its clock says nothing about *now* (but it was reached).
            offset = None if feed is None or feed.age_ms(wall_ms) > self.max_feed_age_ms else \
                feed.exchange_ms - feed.received_ms
            self._cache[symbol] = (time.monotonic(), offset, feed_ms)
        return offset, feed_ms
