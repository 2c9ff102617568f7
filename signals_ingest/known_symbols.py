"""The symbols the exchange lists, for the intake's "unknown symbol" check.

Loaded through ccxt (`load_markets`: the exchange's own list, USDT-margined perpetuals only) and
refreshed every few minutes. The last list is also kept in Redis, so an intake that starts while
the exchange is unreachable still validates with yesterday's list instead of waiting; with
neither, the intake waits (entries stay pending, nothing is lost or guessed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from exchange.client import create_exchange
from common.redis_keys import KNOWN_SYMBOLS_KEY

log = logging.getLogger(__name__)



def usdt_perpetual_ids(markets: dict[str, Any]) -> frozenset[str]:
    """Exchange ids (`NEARUSDT`) of the linear USDT perpetuals among ccxt's markets."""
    return frozenset(
        m["id"] for m in markets.values()
        if m.get("swap") and m.get("linear") and m.get("settle") == "USDT" and m.get("active", True) is not False
    )


async def _load_from_exchange() -> frozenset[str]:
    exchange = create_exchange(timeout=5_000)
    try:
        return usdt_perpetual_ids(await exchange.load_markets())
    finally:
        await exchange.close()


class KnownSymbols:
    """`await current()` → the latest list (refreshed in place when older than `refresh_s`)."""

    def __init__(self, redis: aioredis.Redis, refresh_s: float = 300.0,
                 loader: Callable[[], Awaitable[frozenset[str]]] = _load_from_exchange) -> None:
        self.redis = redis
        self.refresh_s = refresh_s
        self._loader = loader
        self._symbols: frozenset[str] | None = None
        self._loaded_at = 0.0
        self._last_error_logged = 0.0
        self._next_try = 0.0  # after a failed load: not before this (monotonic)
        self._lock = asyncio.Lock()  # many entries ask at once: one load, not one per entry

    async def current(self) -> frozenset[str] | None:
        """The symbol list, or None when neither the exchange nor the Redis cache has one yet."""
        if self._due():
            async with self._lock:
                if self._due():
                    await self._refresh()
        return self._symbols

    def _due(self) -> bool:
        now = time.monotonic()
        return now >= self._next_try and (self._symbols is None or now - self._loaded_at > self.refresh_s)

    async def _refresh(self) -> None:
        try:
            symbols = await self._loader()
        except Exception as err:  # noqa: BLE001 - any exchange failure: fall back to what we have
            self._log_once(f"exchange markets unavailable ({type(err).__name__}: {err})")
            if self._symbols is None:
                self._symbols = await self._cached()
            self._next_try = time.monotonic() + 5  # try the exchange again in ~5 s
            return
        if not symbols:
            self._log_once("the exchange lists no USDT perpetuals; keeping the previous list")
            return
        self._symbols, self._loaded_at = symbols, time.monotonic()
        payload = {"symbols": sorted(symbols), "loaded_ms": int(time.time() * 1000)}
        try:
            await self.redis.set(KNOWN_SYMBOLS_KEY, json.dumps(payload))
        except aioredis.RedisError:
            pass  # the cache is a convenience; the intake loop reports Redis trouble itself

    async def _cached(self) -> frozenset[str] | None:
        try:
            raw = await self.redis.get(KNOWN_SYMBOLS_KEY)
        except aioredis.RedisError:
            return None
        if not raw:
            return None
        try:
            symbols = frozenset(json.loads(raw)["symbols"])
        except (ValueError, KeyError, TypeError):
            return None
        log.warning("validating symbols with the list cached in Redis (%d symbols)", len(symbols))
        return symbols or None

    def _log_once(self, message: str) -> None:
        if time.monotonic() - self._last_error_logged > 60:
            log.warning("%s", message)
            self._last_error_logged = time.monotonic()
