"""Fixtures of the intake tests: a real `IntentIntake` on the test Redis, Temporal and paper
exchange, each test on its own task queue (no worker polls it unless the test runs one, so the
workflows it starts never trade behind another test's back)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis
from temporalio.client import Client

from signals_ingest.intake import IntentIntake
from signals_ingest.intake_settings import IntakeSettings
from signals_ingest.intake_status import IntakeStatus, read_intake_status
from signals_ingest.known_symbols import KnownSymbols, usdt_perpetual_ids
from common.redis_keys import TRADE_INTENT_STREAM


def intake_settings(**overrides: Any) -> IntakeSettings:
    base = dict(consumer=f"test-{uuid.uuid4().hex[:6]}", task_queue=f"intake-test-{uuid.uuid4().hex[:8]}",
                metrics_port=0, claim_interval_s=0.1, claim_idle_ms=1_000, stats_interval_s=0.2,
                block_ms=100, backoff_initial_s=0.1, backoff_max_s=0.5)
    base.update(overrides)
    return IntakeSettings(**base)


class IntakeRig:
    """A running intake plus the Redis/Temporal views a test asserts on."""

    def __init__(self, redis: aioredis.Redis, client: Client, settings: IntakeSettings,
                 intake: IntentIntake) -> None:
        self.redis, self.client, self.settings, self.intake = redis, client, settings, intake

    async def xadd(self, fields: dict) -> str:
        entry_id = await self.redis.xadd(TRADE_INTENT_STREAM, fields)
        return entry_id.decode()

    async def status(self) -> IntakeStatus:
        return await read_intake_status(self.redis, self.settings)

    async def wait_drained(self, timeout: float = 20.0) -> IntakeStatus:
        """Until nothing is lagging or pending (every entry started, duplicate or dead-lettered)."""
        return await wait_until(self.status, lambda s: s.group_exists and s.lag == 0 and s.pending == 0,
                                timeout, "the intake did not drain the stream")

    async def dlq(self) -> list[dict[str, str]]:
        rows = await self.redis.xrange(self.settings.dlq_stream)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


async def wait_until(read: Callable, done: Callable[[Any], bool], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await read()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} in {timeout} s; last: {value}")


async def paper_symbols(exchange) -> frozenset[str]:
    return usdt_perpetual_ids(exchange.markets)


@pytest_asyncio.fixture
async def raw_redis(redis_server, redis_client) -> AsyncIterator[aioredis.Redis]:
    """A bytes client (as the intake uses) on the flushed test Redis."""
    client = aioredis.from_url(redis_server.url, decode_responses=False)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def start_intake(raw_redis, temporal_client, exchange):
    """`await start_intake(**settings)` → a running IntakeRig; all are stopped at teardown."""
    running: list[tuple[asyncio.Event, asyncio.Task]] = []

    async def start(client: Client | None = None, **overrides: Any) -> IntakeRig:
        settings = intake_settings(**overrides)

        async def loader():
            return await paper_symbols(exchange)

        intake = IntentIntake(raw_redis, client or temporal_client, settings,
                              KnownSymbols(raw_redis, loader=loader))
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(intake.run(stop))))
        return IntakeRig(raw_redis, client or temporal_client, settings, intake)

    yield start
    for stop, task in running:
        stop.set()
    for _, task in running:
        await asyncio.wait_for(task, timeout=30)
