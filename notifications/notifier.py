"""The notifier: collects trade and safety events, then delivers each to every target once.

Collect (every `poll_interval_s`): entry fills from `quantum:stream:execution.result`, closes
from `quantum:stream:trade.closed`, REJECTED / FAILED trades from Temporal visibility, and the
safe-mode / kill-switch keys. Each source keeps its cursor in Redis; a new notifier starts at
"now" (no flood of old events). Every event is enqueued once per key (SET NX + XADD in one Lua
step) on the outbox stream `quantum:stream:notify.outbox`.

Deliver: each target (an apprise URL) walks the outbox with its own cursor, in order, and moves
its cursor only after the target accepted the message; a failing target is retried with
exponential backoff without holding back the others. So a receiver that is down gets every
event once, in order, when it is back; nothing here ever waits inside a trade. A crash between
a send and its cursor move may send that one message again: it carries its key (`event: …`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from common.redis_keys import EXECUTION_RESULT_STREAM, TRADE_CLOSED_STREAM
from common.redis_keys import KILL_SWITCH_KEY, SAFE_MODE_KEY
from common.redis_keys import (NOTIFY_COUNTED_KEY, NOTIFY_OUTBOX_STREAM, NOTIFY_SAFETY_KEY, NOTIFY_SEEN_KEY,
                               NOTIFY_SOURCE_CURSOR_KEY, NOTIFY_TARGET_CURSOR_KEY)
from notifications import events as ev
from notifications.settings import NotifySettings
from common import search_attributes as sa

log = logging.getLogger(__name__)

OUTBOX_MAXLEN = 10_000
_SEEN_TTL_S = 14 * 86_400
_VISIBILITY_OVERLAP_S = 60  # visibility is eventually consistent: look back, dedup by key

_ENQUEUE_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
"""

Sender = Callable[[str, ev.Event], Awaitable[bool]]


def target_id(url: str) -> str:
    """A target's name in Redis keys: a hash, so no secret of the URL is stored."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


async def apprise_send(url: str, event: ev.Event) -> bool:
    import apprise  # only the notifier process needs it

    target = apprise.Apprise()
    if not target.add(url):
        raise ValueError("not an apprise URL")
    return bool(await target.async_notify(body=event.message(), title=event.title, notify_type=event.level))


class Notifier:
    def __init__(self, redis: aioredis.Redis, temporal: Any = None, settings: NotifySettings | None = None,
                 send: Sender = apprise_send) -> None:
        self.redis, self.temporal = redis, temporal  # redis: decode_responses=True
        self.settings = settings or NotifySettings()
        self._send = send
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self.sent: dict[str, int] = {}  # per target id, this process
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    # --- loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("notifier: %d target(s), events %s", len(self.settings.urls),
                 ", ".join(e.value for e in self.settings.events))
        while not stop.is_set():
            try:
                await self.collect_once()
                await self.deliver_once()
            except (aioredis.RedisError, OSError) as err:
                log.warning("notifier: %s; retrying", err)
            try:
                await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)
            except TimeoutError:
                pass

    # --- collect ---------------------------------------------------------------------------

    async def collect_once(self) -> int:
        found: list[ev.Event] = []
        found += [e for e in [ev.opened(f) for f in await self._new_entries(EXECUTION_RESULT_STREAM)] if e]
        found += [ev.closed(f) for f in await self._new_entries(TRADE_CLOSED_STREAM)]
        found += await self._ended_badly()
        found += await self._safety()
        wanted = set(self.settings.events)
        return sum([await self.enqueue(e) for e in found if e.kind in wanted])

    async def enqueue(self, event: ev.Event) -> bool:
        fields = event.model_dump(mode="json")
        args = [_SEEN_TTL_S, OUTBOX_MAXLEN, *[x for kv in fields.items() for x in kv]]
        return bool(await self._enqueue(keys=[NOTIFY_SEEN_KEY.format(key=event.key), NOTIFY_OUTBOX_STREAM], args=args))

    async def _new_entries(self, stream: str) -> list[dict[str, str]]:
        key = NOTIFY_SOURCE_CURSOR_KEY.format(name=stream)
        cursor = await self.redis.get(key)
        if cursor is None:  # first start: from now on
            last = await self.redis.xrevrange(stream, count=1)
            await self.redis.set(key, last[0][0] if last else "0-0")
            return []
        rows = await self.redis.xrange(stream, min=f"({cursor}", count=500)
        if rows:
            await self.redis.set(key, rows[-1][0])
        return [fields for _, fields in rows]

    async def _ended_badly(self) -> list[ev.Event]:
        if self.temporal is None:
            return []
        key = NOTIFY_SOURCE_CURSOR_KEY.format(name="visibility")
        now = datetime.now(UTC)
        since_text = await self.redis.get(key)
        await self.redis.set(key, now.isoformat())
        if since_text is None:
            return []
        since = datetime.fromisoformat(since_text) - timedelta(seconds=_VISIBILITY_OVERLAP_S)
        query = ("WorkflowType = 'TradeWorkflow' AND (TradeStatus = 'REJECTED' OR TradeStatus = 'FAILED') "
                 f"AND CloseTime > '{since.isoformat()}'")
        failed, rejected = [], []
        async for w in self.temporal.list_workflows(query, limit=10_000):
            # Each trade counted once, whatever the look-back overlap brings again.
            if not await self.redis.set(NOTIFY_COUNTED_KEY.format(key=f"{w.id}:{w.run_id}"), "1", nx=True, ex=_SEEN_TTL_S):
                continue
            row = (w.id, w.run_id, w.typed_search_attributes.get(sa.SYMBOL))
            (failed if w.typed_search_attributes.get(sa.TRADE_STATUS) == "FAILED" else rejected).append(row)
        found = [ev.ended_badly(i, r, "FAILED", sym, await self._reason(i, r)) for i, r, sym in failed]
        if len(rejected) <= self.settings.max_rejections_listed:
            return found + [ev.ended_badly(i, r, "REJECTED", sym, await self._reason(i, r)) for i, r, sym in rejected]
        sample = [(i, await self._reason(i, r)) for i, r, _ in rejected[:100]]
        keys = sorted(f"{i}:{r}" for i, r, _ in rejected)
        return found + [ev.rejections_summary(sample + [(i, None) for i, _, _ in rejected[100:]], keys[0], keys[-1])]

    async def _reason(self, workflow_id: str, run_id: str) -> str | None:
        try:
            result = await self.temporal.get_workflow_handle(workflow_id, run_id=run_id).result(
                rpc_timeout=timedelta(seconds=5))
        except Exception:  # noqa: BLE001 - the message says "see the Web UI" then
            return None
        return result.get("reason") if isinstance(result, dict) else getattr(result, "reason", None)

    async def _safety(self) -> list[ev.Event]:
        now = {"safe_mode": await self.redis.get(SAFE_MODE_KEY), "kill_switch": await self.redis.get(KILL_SWITCH_KEY)}
        before = await self.redis.hgetall(NOTIFY_SAFETY_KEY)
        first = not before
        found = []
        for name, raw in now.items():
            if not first:
                event = ev.safety_changed(name, raw, before.get(name) or None)
                if event is not None:
                    found.append(event)
        await self.redis.hset(NOTIFY_SAFETY_KEY, mapping={k: v or "" for k, v in now.items()})
        return found

    # --- deliver ---------------------------------------------------------------------------

    async def deliver_once(self) -> int:
        sent = 0
        for url in self.settings.urls:
            sent += await self._deliver_to(url)
        return sent

    async def _deliver_to(self, url: str) -> int:
        target = target_id(url)
        if time.monotonic() < self._retry_at.get(target, 0):
            return 0
        cursor_key = NOTIFY_TARGET_CURSOR_KEY.format(target=target)
        cursor = await self.redis.get(cursor_key)
        if cursor is None:  # a new target: from the current end of the outbox
            last = await self.redis.xrevrange(NOTIFY_OUTBOX_STREAM, count=1)
            cursor = last[0][0] if last else "0-0"
            await self.redis.set(cursor_key, cursor)
        sent = 0
        for entry_id, fields in await self.redis.xrange(NOTIFY_OUTBOX_STREAM, min=f"({cursor}", count=100):
            event = ev.Event.model_validate(fields)
            try:
                ok = await asyncio.wait_for(self._send(url, event), self.settings.send_timeout_s)
            except Exception as err:  # noqa: BLE001 - a target's trouble never stops the others
                log.warning("notification %s to target %s failed: %s", event.key, target, err)
                ok = False
            if not ok:
                self._backoff(target)
                return sent
            await self.redis.set(cursor_key, entry_id)
            self._failures.pop(target, None)
            self.sent[target] = self.sent.get(target, 0) + 1
            sent += 1
        return sent

    def _backoff(self, target: str) -> None:
        n = self._failures[target] = self._failures.get(target, 0) + 1
        s = self.settings
        self._retry_at[target] = time.monotonic() + min(s.retry_max_s, s.retry_initial_s * 2 ** (n - 1))
