"""How far behind the intake is, read from Redis: what `qt status` prints and the gauges show.

Everything here is read from the stream and its consumer group (XINFO GROUPS / XPENDING /
XINFO CONSUMERS), plus the counters each running `qt ingest` publishes every few seconds, so any
process (the CLI, the API) can show it without talking to the intake processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from signals_ingest.intake_settings import IntakeSettings
from common.redis_values import decoded
from common.redis_keys import INTAKE_STATS_KEY

# Counters each intake process publishes (hash INTAKE_STATS_KEY, expires when it stops).
STAT_FIELDS = ("started", "duplicates", "conflicts", "dead_lettered", "reclaimed", "start_failures",
               "trimmed_before_start", "deprioritized", "stale_at_intake", "in_flight", "starts_per_s", "backing_off", "last_error",
               "updated_ms")



def stream_id_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a stream id (`1700000000000-3` → 1700000000000)."""
    return int(decoded(entry_id).split("-", 1)[0])


@dataclass
class ConsumerStatus:
    name: str
    pending: int
    idle_ms: int
    stats: dict[str, str] = field(default_factory=dict)  # empty: the process is not running

    @property
    def alive(self) -> bool:
        return bool(self.stats)


@dataclass
class IntakeStatus:
    stream_length: int
    group_exists: bool
    lag: int | None  # entries not yet delivered to any consumer (None: Redis cannot tell)
    pending: int  # delivered, not yet acknowledged (being started, or left by a dead consumer)
    oldest_pending_age_s: float | None
    dlq_length: int
    consumers: list[ConsumerStatus]
    # The workflows' gate rejections, per refusing gate (shown beside the intake by `qt status`).
    gate_rejections: dict[str, int] = field(default_factory=dict)

    def total(self, stat: str) -> float:
        return sum(float(c.stats.get(stat) or 0) for c in self.consumers)

    @property
    def backlog(self) -> int | None:
        """Entries not yet handed to Temporal: lag plus pending."""
        return None if self.lag is None else self.lag + self.pending


async def read_intake_status(redis: aioredis.Redis, settings: IntakeSettings | None = None) -> IntakeStatus:
    settings = settings or IntakeSettings()
    stream, group = settings.stream, settings.group
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(stream)
        pipe.xlen(stream)
        pipe.xlen(settings.dlq_stream)
        pipe.time()
        exists, length, dlq_length, (now_s, now_us) = await pipe.execute()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    if not exists:
        return IntakeStatus(0, False, None, 0, None, dlq_length, [])
    groups = await redis.xinfo_groups(stream)
    info = next((g for g in groups if decoded(g.get("name")) == group), None)
    if info is None:
        return IntakeStatus(length, False, length, 0, None, dlq_length, [])
    lag = info.get("lag")
    summary = await redis.xpending(stream, group)
    pending = int(summary.get("pending") or 0)
    oldest = None
    if pending and summary.get("min"):
        oldest = max(0.0, (now_ms - stream_id_ms(summary["min"])) / 1000)
    consumers = []
    for c in await redis.xinfo_consumers(stream, group):
        name = decoded(c["name"])
        raw = await redis.hgetall(INTAKE_STATS_KEY.format(consumer=name))
        stats = {decoded(k): decoded(v) for k, v in raw.items()}
        consumers.append(ConsumerStatus(name, int(c.get("pending") or 0), int(c.get("idle") or 0), stats))
    return IntakeStatus(length, True, None if lag is None else int(lag), pending, oldest, dlq_length, consumers)
