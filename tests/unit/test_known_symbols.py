"""The intake's symbol list: one load for many concurrent askers, retries spaced while the
exchange is down (uses a fake loader and a real-looking Redis stand-in: pure unit test)."""

from __future__ import annotations

import asyncio

from signals_ingest.known_symbols import KnownSymbols


class NoRedis:
    async def set(self, *args, **kwargs):
        return True

    async def get(self, *args, **kwargs):
        return None


async def test_many_concurrent_askers_cause_one_load():
    calls = 0

    async def loader():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return frozenset({"BTCUSDT"})

    symbols = KnownSymbols(NoRedis(), loader=loader)
    results = await asyncio.gather(*(symbols.current() for _ in range(50)))
    assert calls == 1 and all(r == frozenset({"BTCUSDT"}) for r in results)


async def test_an_unreachable_exchange_is_retried_no_more_than_every_few_seconds():
    calls = 0

    async def loader():
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    symbols = KnownSymbols(NoRedis(), loader=loader)
    assert await asyncio.gather(*(symbols.current() for _ in range(20))) == [None] * 20
    assert calls == 1
