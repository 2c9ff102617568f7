"""The circuit breaker: repeated order failures set safe mode, so a storm of refused orders stops
opening trades instead of hammering the exchange (the old system's safe mode had "no known
trigger"; this is its trigger).

Every order request that fails (`OrderActivities.send_new`: entries, stops, take-profits,
closes) is counted by group (`exchange.errors.BREAKER_GROUPS`: rejected, rate_limited,
unavailable) in a Redis sorted set shared by every execution worker. When a group reaches its
count within its window, safe mode goes on with a TTL, a reason naming the group, the count and
the last failure, and its origin (`breaker:<group>`); a safe mode already on (an operator's) is
kept as it is. Safe mode blocks new entries only (the gates): a close, a stop move or a
reconcile action is never refused by it. The API's `DELETE /safe-mode` (`qt safe-mode off`)
clears it together with the counts (`common/safe_mode.py`).

A breaker that cannot reach Redis counts nothing (logged): it must never make an order fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.redis_keys import BREAKER_FAILURES_KEY
from common.safe_mode import set_safe_mode
from exchange.errors import BREAKER_GROUPS, FailureKind

log = logging.getLogger("qt.breaker")
REDIS_TIMEOUT_S = 1.0

# Count one failure and return how many the window holds. KEYS: the group's set.
# ARGV: now ms, window ms, member.
_COUNT_LUA = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""


class BreakerSettings(BaseSettings):
    """`QT_BREAKER_*`: per group, how many failed order requests within how many seconds trip it."""

    model_config = SettingsConfigDict(env_prefix="QT_BREAKER_", extra="ignore")

    enabled: bool = True
    rejected_count: int = Field(5, ge=1)  # refusals on their merits: margin, invalid, auth...
    rejected_window_s: float = Field(60.0, gt=0)
    rate_limited_count: int = Field(3, ge=1)  # 429 / 418 / -1003
    rate_limited_window_s: float = Field(60.0, gt=0)
    unavailable_count: int = Field(10, ge=1)  # 5xx, timeouts, dropped connections
    unavailable_window_s: float = Field(60.0, gt=0)
    safe_mode_ttl_s: int = Field(900, ge=1, le=7 * 86_400)

    def rule(self, group: str) -> tuple[int, float]:
        return getattr(self, f"{group}_count"), getattr(self, f"{group}_window_s")


class CircuitBreaker:
    def __init__(self, redis: Any, settings: BreakerSettings | None = None) -> None:
        self._redis, self.settings = redis, settings or BreakerSettings()
        self._count = redis.register_script(_COUNT_LUA)

    async def order_failed(self, kind: FailureKind, detail: str) -> bool:
        """Count one failed order request; True when this one tripped the breaker."""
        group = BREAKER_GROUPS.get(kind)
        if group is None or not self.settings.enabled:
            return False
        limit, window_s = self.settings.rule(group)
        try:  # bounded: a Redis that hangs must not hold the order's failure up
            count = int(await asyncio.wait_for(self._count(
                keys=[BREAKER_FAILURES_KEY.format(group=group)],
                args=[int(time.time() * 1000), int(window_s * 1000), uuid.uuid4().hex]), REDIS_TIMEOUT_S))
            if count < limit:
                return False
            reason = (f"circuit breaker: {count} {group.replace('_', ' ')} order requests within "
                      f"{window_s:g} s (last: {detail[:300]})")
            tripped = await asyncio.wait_for(set_safe_mode(
                self._redis, reason=reason, ttl_s=self.settings.safe_mode_ttl_s, set_by="circuit-breaker",
                origin=f"breaker:{group}", only_if_off=True), REDIS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the breaker never fails an order
            log.warning("order failure not counted: %s", exc)
            return False
        if tripped:
            log.error("safe mode ON: %s", reason)
        return tripped
