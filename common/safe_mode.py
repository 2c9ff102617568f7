"""Safe mode, written and read in one place: the gates refuse every new entry while it is on;
closes, stop moves and reconcile actions never look at it.

Its value is the old system's key (`quantum:safety:safe_mode`), JSON `{reason, set_by, origin,
since_ms}` with a TTL; an old tool's plain-text value still reads as a reason. Who sets it: an
operator (API, `qt safe-mode on`), the kill switch, and the circuit breaker
(`activities/circuit_breaker.py`), which never overwrites a safe mode already on. Clearing it
also clears the breaker's failure counts, so the next single failure does not trip it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from common.redis_keys import BREAKER_FAILURES_PATTERN, SAFE_MODE_KEY


@dataclass(frozen=True)
class SafeMode:
    active: bool
    reason: str | None = None
    set_by: str | None = None
    origin: str | None = None  # what tripped it: "operator", "kill_switch", "breaker:rejected"...
    since_ms: int | None = None
    ttl_s: int | None = None  # seconds left; None: no expiry


def safe_mode_value(reason: str, set_by: str, origin: str = "operator") -> str:
    return json.dumps({"reason": reason, "set_by": set_by, "origin": origin, "since_ms": int(time.time() * 1000)})


async def set_safe_mode(redis: Any, *, reason: str, ttl_s: int | None, set_by: str, origin: str = "operator",
                        only_if_off: bool = False) -> bool:
    """On, with its reason; `only_if_off`: keep a safe mode already on (and its reason). True if set."""
    done = await redis.set(SAFE_MODE_KEY, safe_mode_value(reason, set_by, origin),
                           ex=max(1, ttl_s) if ttl_s else None, nx=only_if_off)
    return bool(done)


async def clear_safe_mode(redis: Any) -> None:
    keys = [k async for k in redis.scan_iter(match=BREAKER_FAILURES_PATTERN, count=100)]
    await redis.delete(SAFE_MODE_KEY, *keys)


def parse_safe_mode(raw: str | None, ttl: int) -> SafeMode:
    if raw is None:
        return SafeMode(active=False)
    try:
        value = json.loads(raw)
    except ValueError:
        value = {"reason": raw}  # set by an old tool as plain text
    if not isinstance(value, dict):
        value = {"reason": str(value)}
    return SafeMode(active=True, reason=value.get("reason"), set_by=value.get("set_by"), origin=value.get("origin"),
                    since_ms=value.get("since_ms"), ttl_s=ttl if ttl >= 0 else None)


async def read_safe_mode(redis: Any) -> SafeMode:
    raw, ttl = await asyncio.gather(redis.get(SAFE_MODE_KEY), redis.ttl(SAFE_MODE_KEY))
    return parse_safe_mode(raw, ttl)
