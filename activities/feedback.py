"""Feedback activities (SPEC stage 9): what a trade tells the old system's consumers and the
learning dataset.

- `record_position` keeps the old system's position hash `quantum:position:{symbol}` in step
  (its dashboards and harvest/exit services read it) and publishes new fills to
  `quantum:stream:execution.result`. The monitor calls it as a session starts
  (`WatchRequest.publish`): a position change costs the workflow's history nothing.
- `record_close` releases the symbol lock (with its cooldown) when asked, publishes the last
  fills, one `quantum:stream:trade.closed` entry, removes the hash and appends the trade's
  outcome to the learning dataset `quantum:dataset:trade_outcomes`.

Everything is idempotent: a retried activity publishes nothing twice. Each stream entry has a
marker key (`quantum:feedback:done:{workflow_id}:{kind}:{id}`, 7 days) set in the same Lua
script as its XADD, so a marker never exists without its entry nor an entry without its marker.
The hash carries the owning workflow id and a version: another workflow's (or the old system's)
hash is never touched, and a late retry never overwrites a newer state or recreates the hash of
a closed trade.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Any

import redis.asyncio as aioredis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.schemas.feedback import (  # noqa: F401 (re-exported)
    ExecutionReport, FeedbackResult, PositionSnapshot, RecordCloseRequest, RecordPositionRequest,
    TradeClosedEvent, TradeOutcome,
)
from activities.schemas.gates import ReleaseLockRequest
from common.redis_values import decoded
from common.redis_keys import (EXECUTION_RESULT_STREAM, FEEDBACK_DONE_KEY, OUTCOME_STREAM, POSITION_KEY,
                               TRADE_CLOSED_STREAM)
from trading.models import Side


STREAM_MAXLEN = 100_000  # execution.result and trade.closed, approximate (MAXLEN ~) as before
DONE_TTL_S = 7 * 24 * 3600  # how long a retry is recognised as one

KIND_EXECUTION = "exec"
KIND_CLOSED = "closed"
KIND_OUTCOME = "outcome"
ONCE = "trade"  # the id of the once-per-workflow markers (closed, outcome)

OLD_SIDE = {Side.BUY: "LONG", Side.SELL: "SHORT"}  # the old hash's spelling of a position side

# Publish one stream entry once: XADD and the marker in one atomic step. XADD comes first, so
# if it fails (wrong key type...) no marker is left behind that would hide the entry forever.
# KEYS: marker, stream. ARGV: marker ttl, maxlen ('' = no cap), field, value, ...
_PUBLISH_ONCE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
end
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return id
"""

# Write the position hash if it is absent or ours, not closed yet, and older than this version.
# KEYS: hash, the trade's closed marker. ARGV: workflow id, version, field, value, ...
# Returns {outcome, detail}: written/version, stale/stored version, foreign/owner, closed/''.
_WRITE_POSITION_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'closed', ''}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local owner = redis.call('HGET', KEYS[1], 'workflow_id')
  if owner ~= ARGV[1] then
    return {'foreign', owner or redis.call('HGET', KEYS[1], 'plan_id') or ''}
  end
  local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '')
  if stored and stored >= tonumber(ARGV[2]) then
    return {'stale', tostring(stored)}
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return {'written', ARGV[2]}
"""

# Delete the hash only if this workflow owns it. Returns {deleted, owner}.
_DELETE_POSITION_LUA = """
local owner = redis.call('HGET', KEYS[1], 'workflow_id')
if owner == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {1, owner}
end
if not owner and redis.call('EXISTS', KEYS[1]) == 1 then
  owner = redis.call('HGET', KEYS[1], 'plan_id') or '?'
end
return {0, owner or ''}
"""


def position_key(symbol: str) -> str:
    return POSITION_KEY.format(symbol=symbol.upper())


def done_key(workflow_id: str, kind: str, id: str) -> str:
    return FEEDBACK_DONE_KEY.format(workflow_id=workflow_id, kind=kind, id=id)



def _flat(value: Any) -> str:
    """One stream/hash field as a string, the way the old producers wrote them."""
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value)  # True/False: the old system's spelling ("executed": "False")
    if isinstance(value, Decimal):
        return format(value, "f")  # exact, never exponent notation
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=_flat)
    return str(value)


def _epoch_s(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def _pairs(fields: Mapping[str, Any]) -> list[str]:
    return [item for key, value in fields.items() for item in (key, _flat(value))]


def position_fields(position: PositionSnapshot) -> dict[str, str]:
    """The hash as the old system wrote it, plus the new fields."""
    fields: dict[str, Any] = {
        # old names and spellings
        "symbol": position.symbol,
        "side": OLD_SIDE[position.side],
        "quantity": position.quantity,
        "leverage": position.leverage,
        "stop_loss": position.stop_loss,
        "take_profit": position.take_profit,
        "plan_id": position.workflow_id,
        "created_at": position.opened_at_ms // 1000,
        # new
        "workflow_id": position.workflow_id,
        "entry_price": position.entry_price,
        "take_profits": [format(tp, "f") for tp in position.take_profits],
        "status": position.status,
        "opened_at_ms": position.opened_at_ms,
        "updated_at_ms": position.updated_at_ms,
        "version": position.version,
    }
    return {key: _flat(value) for key, value in fields.items()}


def execution_fields(report: ExecutionReport) -> dict[str, str]:
    fields: dict[str, Any] = {
        "workflow_id": report.workflow_id,
        "intent_id": report.intent_id,
        "symbol": report.symbol,
        "step": report.step,
        "client_order_id": report.client_order_id,
        "order_id": report.order_id,
        "trade_id": report.trade_id,
        "side": report.side,
        "qty": report.quantity,
        "quantity": report.quantity,
        "price": report.price,
        "fee": report.fee,
        "reduce_only": report.reduce_only,
        "leverage": report.leverage,
        "status": "FILLED",
        "timestamp": _epoch_s(report.time_ms),
        "time_ms": report.time_ms,
    }
    return {key: _flat(value) for key, value in fields.items()}


def closed_fields(event: TradeClosedEvent) -> dict[str, str]:
    fields: dict[str, Any] = dict(event.model_dump())
    fields["pnl"] = event.realized_pnl  # the old trade journal read `pnl`
    fields["timestamp"] = _epoch_s(event.closed_at_ms)
    return {key: _flat(value) for key, value in fields.items()}


def outcome_fields(outcome: TradeOutcome) -> dict[str, str]:
    return {
        "json": outcome.model_dump_json(),
        "workflow_id": outcome.workflow_id,
        "symbol": outcome.symbol,
        "label": str(outcome.label),
        "model_version": _flat(outcome.model_version),
        "closed_at_ms": str(outcome.closed.closed_at_ms),
    }


class FeedbackActivities:
    def __init__(self, redis: aioredis.Redis, outcome_stream_maxlen: int | None = None,
                 release_lock: Callable[[ReleaseLockRequest], Awaitable[Any]] | None = None) -> None:
        """`release_lock`: the gates' `release_symbol_lock`, for `RecordCloseRequest.release`."""
        self._redis = redis
        self._release_lock = release_lock
        self._outcome_maxlen = outcome_stream_maxlen
        self._publish_once = redis.register_script(_PUBLISH_ONCE_LUA)
        self._write_position = redis.register_script(_WRITE_POSITION_LUA)
        self._delete_position = redis.register_script(_DELETE_POSITION_LUA)

    async def _publish(self, marker: str, stream: str, fields: Mapping[str, str],
                       maxlen: int | None) -> bool:
        """XADD once per marker; False if an earlier attempt already published it."""
        entry_id = await self._publish_once(
            keys=[marker, stream],
            args=[DONE_TTL_S, "" if maxlen is None else int(maxlen), *_pairs(fields)])
        return entry_id is not None

    async def _publish_executions(self, executions: Iterable[ExecutionReport]) -> int:
        published = 0
        for report in executions:
            marker = done_key(report.workflow_id, KIND_EXECUTION, report.trade_id)
            published += await self._publish(marker, EXECUTION_RESULT_STREAM,
                                             execution_fields(report), STREAM_MAXLEN)
        return published

    # -- activities ------------------------------------------------------------------------------

    @activity.defn(name="record_position")
    async def record_position(self, request: RecordPositionRequest) -> FeedbackResult:
        # The hash first: a consumer woken by the fill finds the position already updated.
        position = request.position
        outcome, detail = map(decoded, await self._write_position(
            keys=[position_key(position.symbol),
                  done_key(position.workflow_id, KIND_CLOSED, ONCE)],
            args=[position.workflow_id, position.version,
                  *_pairs(position_fields(position))]))
        if outcome == "foreign":
            activity.logger.warning(
                "position hash %s belongs to %s, not %s: left untouched",
                position_key(position.symbol), detail or "?", position.workflow_id)
        elif outcome == "stale":
            activity.logger.info("position hash %s has version %s >= %s: not overwritten",
                                 position_key(position.symbol), detail, position.version)
        elif outcome == "closed":
            activity.logger.info("trade %s is already closed: position hash not recreated",
                                 position.workflow_id)
        # The fills happened whatever the hash says: they are always published (once).
        published = await self._publish_executions(request.executions)
        return FeedbackResult(published=published)

    @activity.defn(name="record_close")
    async def record_close(self, request: RecordCloseRequest) -> FeedbackResult:
        closed, workflow_id = request.closed, request.closed.workflow_id
        if request.release is not None:
            if self._release_lock is None:
                raise ApplicationError("this worker cannot release symbol locks", type="bad_request",
                                       non_retryable=True)
            await self._release_lock(request.release)  # idempotent: owned by the workflow id
        deleted, owner = map(decoded, await self._delete_position(
            keys=[position_key(closed.symbol)], args=[workflow_id]))
        if not int(deleted) and owner:
            activity.logger.warning("position hash %s belongs to %s, not %s: left in place",
                                    position_key(closed.symbol), owner, workflow_id)
        published = await self._publish_executions(request.executions)
        published += await self._publish(done_key(workflow_id, KIND_CLOSED, ONCE),
                                         TRADE_CLOSED_STREAM, closed_fields(closed), STREAM_MAXLEN)
        published += await self._publish(done_key(workflow_id, KIND_OUTCOME, ONCE),
                                         OUTCOME_STREAM, outcome_fields(request.outcome),
                                         self._outcome_maxlen)
        return FeedbackResult(published=published)


# -- readers (learning step, API, tests) -----------------------------------------------------------

async def read_outcomes(redis: aioredis.Redis, since_ms: int | None = None,
                        limit: int | None = None, page: int = 1000) -> list[TradeOutcome]:
    """Closed trades of the learning dataset, oldest first by market close time.

    `since_ms` keeps outcomes with `closed_at_ms >= since_ms` (market time; stream ids are wall
    clock, which a fast replay outruns, so the filter reads the entry's own field). A workflow
    that appears twice (a retry after its marker expired) counts once, the first entry wins.
    """
    found: list[tuple[int, int, str]] = []  # (closed_at_ms, stream order, json)
    seen: set[str] = set()
    start = "-"
    while True:
        entries = await redis.xrange(OUTCOME_STREAM, min=start, max="+", count=page)
        for entry_id, raw in entries:
            fields = {decoded(k): decoded(v) for k, v in raw.items()}
            closed_at = int(fields.get("closed_at_ms") or 0)
            workflow_id = fields.get("workflow_id", "")
            if since_ms is not None and closed_at < since_ms:
                continue
            if workflow_id in seen:
                continue
            seen.add(workflow_id)
            found.append((closed_at, len(found), fields["json"]))
        if len(entries) < page:
            break
        start = "(" + decoded(entries[-1][0])
    found.sort()
    if limit is not None:
        found = found[:max(0, limit)]
    return [TradeOutcome.model_validate_json(raw) for _, _, raw in found]


async def read_position(redis: aioredis.Redis, symbol: str) -> dict[str, str] | None:
    """The position hash of a symbol as strings, or None when there is none."""
    raw = await redis.hgetall(position_key(symbol))
    return {decoded(k): decoded(v) for k, v in raw.items()} if raw else None
