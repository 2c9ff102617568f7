"""The demo's signal pipeline, in this process, exactly as `qt ingest` runs it:

    paper exchange ─ccxt→ MarketFeed ─market.klines→ SignalEngine ─trade.intent→ IntentIntake ─→ TradeWorkflows

plus `IntentWatcher`, which reads `quantum:stream:trade.intent` like any other consumer would
(plain XREAD, no group) so the demo can follow every intent it sees to its workflow's result.
Nothing in the demo builds or starts a trade itself: the model's (or the fallback rule's)
intents go through the same Redis stream and the same intake as any producer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as aioredis
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from signals_ingest.feed_settings import FeedSettings
from signals_ingest.intake import IntentIntake
from signals_ingest.intake_settings import IntakeSettings
from signals_ingest.known_symbols import KnownSymbols, usdt_perpetual_ids
from signals_ingest.market_feed import MarketFeed
from signals_ingest.signal_engine import SignalEngine
from signals_ingest.signal_settings import SignalSettings
from common.redis_keys import TRADE_INTENT_STREAM
from trading.intent import IntentError, TradeIntent, parse_stream_fields, workflow_id_for
from workflows.trade_state import TradeResult

STARTED_WAIT_S = 30.0  # an intent's workflow must exist this long after the intent was seen


@dataclass(frozen=True)
class PipelineOptions:
    symbols: list[str]
    max_intent_age_s: float  # the gates' (market time); the engine publishes nothing older
    confidence_threshold: float
    cooldown_s: float  # market time between two intents of one symbol
    position_size_usd: Decimal
    leverage: int


class DemoPipeline:
    """Feed, signal engine and intake as tasks; `stop_signals()` ends new intents, `close()`
    everything (the intake lets its in-flight starts finish)."""

    def __init__(self, client: Client, exchange, redis_url: str, opts: PipelineOptions) -> None:
        self.client, self.exchange, self.opts = client, exchange, opts
        self.text = aioredis.from_url(redis_url, decode_responses=True)
        self.raw = aioredis.from_url(redis_url)  # the intake keeps entries byte-exact
        self._signals_stop, self._stop = asyncio.Event(), asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.feed = MarketFeed(self.text, exchange, FeedSettings(
            symbols=opts.symbols, tick_interval_s=0.5, kline_interval_s=0.5, backfill_candles=100))
        self.engine = SignalEngine(self.text, SignalSettings(
            symbols=opts.symbols, confidence_threshold=opts.confidence_threshold, cooldown_s=opts.cooldown_s,
            max_candle_age_s=opts.max_intent_age_s, position_size_usd=opts.position_size_usd,
            leverage=opts.leverage))

        async def markets() -> frozenset[str]:
            return usdt_perpetual_ids(exchange.markets)

        # "$": a demo on a Redis where the group never existed starts with what arrives now.
        self.intake = IntentIntake(self.raw, client, IntakeSettings(
            consumer=f"demo-{os.getpid()}", metrics_port=0, group_start_id="$"),
            KnownSymbols(self.raw, loader=markets))

    async def start(self) -> None:
        await self.intake.ensure_group()  # before the engine can publish anything
        self._tasks = [
            asyncio.create_task(self.intake.run(self._stop), name="intake"),
            asyncio.create_task(self.feed.run(self._stop), name="feed"),
            asyncio.create_task(self.engine.run(self._signals_stop), name="signals"),
        ]

    def stop_signals(self) -> None:
        self._signals_stop.set()

    def failures(self) -> list[str]:
        return [f"{t.get_name()}: {type(t.exception()).__name__}: {t.exception()}"
                for t in self._tasks if t.done() and not t.cancelled() and t.exception() is not None]

    async def close(self) -> None:
        self._signals_stop.set()
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.text.aclose()
        await self.raw.aclose()


@dataclass(frozen=True)
class SeenIntent:
    fields: dict[str, str]
    intent: TradeIntent
    workflow_id: str


class IntentWatcher:
    """New entries of `quantum:stream:trade.intent` since `begin()`, as parsed intents."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.last_id = "$"

    async def begin(self) -> None:
        newest = await self.redis.xrevrange(TRADE_INTENT_STREAM, count=1)
        self.last_id = newest[0][0] if newest else "0-0"

    async def next_batch(self, block_ms: int = 250) -> list[SeenIntent]:
        reply = await self.redis.xread({TRADE_INTENT_STREAM: self.last_id}, count=100, block=block_ms)
        seen = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                with contextlib.suppress(IntentError):  # the intake dead-letters it
                    intent = parse_stream_fields(fields)
                    seen.append(SeenIntent(fields, intent, workflow_id_for(intent)))
        return seen


async def result_once_started(handle: WorkflowHandle) -> TradeResult:
    """The workflow's result; waits for the intake to start it first (NOT_FOUND until then)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTED_WAIT_S
    while True:
        try:
            return await handle.result()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
