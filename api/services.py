"""The clients the API talks through, created once in the app's lifespan (never per request):
one Temporal client, one Redis client, one exchange (market-data) client.

Tests and embedders hand ready clients to `create_app`; then the app closes none of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from temporalio.client import Client

from common.settings import StackSettings


@dataclass
class Services:
    temporal: Client
    redis: aioredis.Redis
    exchange: Any  # exchange.client: a ccxt client (markets loaded on first use)
    settings: StackSettings
    _closers: list = field(default_factory=list)
    # Details of closed trades by (workflow id, run id): a closed run's history never changes, so
    # its state and result are read (a worker replays the whole history to answer) once.
    closed_details: ClosedDetails = field(default_factory=lambda: ClosedDetails(2_048))

    async def market_exchange(self) -> Any:
        """The exchange client with its markets loaded (once, on first use: the heaviest call)."""
        if not self.exchange.markets:
            await self.exchange.load_markets()
        return self.exchange

    def web_ui_url(self, workflow_id: str, run_id: str | None = None) -> str:
        base = f"{self.settings.temporal_ui_url}/namespaces/{self.settings.temporal_namespace}/workflows/{workflow_id}"
        return f"{base}/{run_id}/history" if run_id else base


class ClosedDetails:
    """A small LRU of what `GET /trades/{id}` answered for closed runs (a reset makes a new run id,
    so an entry is never stale)."""

    def __init__(self, size: int) -> None:
        self._size, self._items = size, OrderedDict()

    def get(self, key: tuple[str, str]) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass
class Injected:
    """Ready clients for `create_app` (tests): the app uses them and closes none."""

    temporal: Client | None = None
    redis: aioredis.Redis | None = None
    exchange: Any = None


def lifespan_for(settings: StackSettings, injected: Injected):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        closers = []
        temporal = injected.temporal
        if temporal is None:
            from common.temporal import connect
            temporal = await connect(settings)
        redis = injected.redis
        if redis is None:
            redis = aioredis.from_url(settings.effective_redis_url, decode_responses=True,
                                      socket_connect_timeout=3, socket_timeout=10)
            closers.append(redis.aclose)
        exchange = injected.exchange
        if exchange is None:
            from exchange.client import create_exchange
            exchange = create_exchange()
            closers.append(exchange.close)
        app.state.services = Services(temporal, redis, exchange, settings, closers)
        try:
            yield
        finally:
            for close in reversed(closers):
                await close()
    return lifespan


async def services(request: Request) -> Services:
    # async: a plain `def` dependency runs in a thread pool, a thread hop on every request
    return request.app.state.services
