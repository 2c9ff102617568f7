"""The baseline of `benchmarks/backlog.py`: a consumer-group executor in the style of the old
system's execution service (seeds: `quantum:group:execution:trade.intent`, 34 consumers).

It does what that service did and nothing more:
- XREADGROUP `>` with a per-process consumer name (a restarted process is a new consumer);
- parses the entry (flat fields or one JSON field) without validation or a staleness check;
- "executes" it: one exchange round trip through ccxt (`fetch_ticker`, standing in for the order
  so the paper account is not flooded) and a record of the execution in Redis
  (`HINCRBY bench:naive:executions <intent key> 1`: the benchmark counts duplicates from it);
- XACK after executing. It never looks at pending entries: what a dead consumer held stays in
  its PEL forever (the stranded lag of the seeds).

Usage (by backlog.py): python benchmarks/naive_executor.py REDIS_URL STREAM GROUP CONSUMER
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis  # noqa: E402

from exchange.client import create_exchange  # noqa: E402

EXECUTIONS_KEY = "bench:naive:executions"


def intent_key(fields: dict[bytes, bytes]) -> str:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    for name in ("payload", "data", "json"):
        if name in data:
            data = json.loads(data[name])
            break
    return f"{data['symbol']}|{data['side']}|{data['timestamp']}"


async def main(redis_url: str, stream: str, group: str, consumer: str) -> None:
    redis = aioredis.from_url(redis_url)
    exchange = create_exchange(enableRateLimit=False)  # the paper exchange has no limits
    await exchange.load_markets()
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except aioredis.ResponseError:
        pass
    print(f"naive executor {consumer} polling", flush=True)
    while True:
        reply = await redis.xreadgroup(group, consumer, {stream: ">"}, count=10, block=1000)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                key = intent_key(fields)
                symbol = key.split("|", 1)[0]
                await exchange.fetch_ticker(exchange.markets_by_id[symbol][0]["symbol"])
                await redis.hincrby(EXECUTIONS_KEY, key, 1)
                await redis.xack(stream, group, entry_id)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
