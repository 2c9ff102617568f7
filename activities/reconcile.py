"""Reconciliation's I/O: read the account's three books at once (`reconcile_snapshot`), carry out
the confirmed actions (`reconcile_act`) and publish the run's report (`publish_reconcile_report`).

The decisions are `trading/reconcile.py`'s; the ReconcileWorkflow orchestrates. These activities
run on the `trade-execution` queue: the account reads are signed requests of the order client,
under its throttle, like every other order call.

Fail closed: a book that answers partly or not at all is reported in the snapshot's `problems`
(never raised into a retry loop); the workflow then changes nothing. Every action is safe to
repeat: a cancel of an order already gone, a lock or hash release checked against its owner in
Redis (atomically), a flatten looked up by its client id before it is sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.orders import OrderActivities
from activities.schemas.gates import ReleaseLockRequest
from activities.schemas.orders import ClosePositionRequest, OrderRef
from activities.schemas.reconcile import ActionOutcome, ActRequest, ReconcileReport, SnapshotRequest
from activities.temporal_errors import to_application_error
from common import search_attributes as sa
from common.redis_keys import (
    LOCK_KEY, POSITION_KEY, RECONCILE_EVENTS_STREAM, RECONCILE_LAST_REPORT_KEY, RECONCILE_PUBLISHED_KEY,
)
from common.redis_values import decoded
from exchange.parse import open_orders_of, positions_of
from trading.client_ids import client_order_id, owner_key, run_tag, workflow_id_of
from trading.models import TradeStatus
from trading.reconcile import (
    AccountSnapshot, Action, ExchangePosition, Finding, LiveTrade, OpenOrder, PositionHash, RedisLock,
)

EVENTS_MAXLEN = 10_000
PUBLISHED_TTL_S = 86_400
QUERY_CONCURRENCY = 16
RUNNING_TRADES = "WorkflowType = 'TradeWorkflow' AND ExecutionStatus = 'Running'"

# Publish a run's entries and its last report once (a retried publish is a no-op).
# KEYS: marker, stream, last report. ARGV: marker ttl, maxlen, JSON [[field, value, ...], ...], report.
_PUBLISH_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return -1 end
local entries = cjson.decode(ARGV[3])
for _, fields in ipairs(entries) do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
end
redis.call('SET', KEYS[3], ARGV[4])
return #entries
"""

# Take a symbol's lock for a flatten: free, or held by the ended trade (ARGV[1]). ARGV[2]: holder.
_TAKE_FOR_FLATTEN_LUA = """
local owner = redis.call('GET', KEYS[1])
if (not owner) or owner == ARGV[1] or owner == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Delete a position hash only if the same workflow still owns it.
_REMOVE_HASH_LUA = """
if redis.call('HGET', KEYS[1], 'workflow_id') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _status(value: str | None) -> TradeStatus | None:
    try:
        return TradeStatus(value) if value else None
    except ValueError:
        return None


def flatten_client_id(run_id: str, symbol: str) -> str:
    """The reduce-only close of an orphan position, one per reconcile run and symbol."""
    return client_order_id(f"rc-{symbol.lower()}", "flatten", run_tag(run_id))


class ReconcileActivities:
    def __init__(self, orders: OrderActivities, redis: Any, temporal: Client, release_lock: Any) -> None:
        """`orders`: the order client's activities (its exchange, throttle and cancel/close
        mechanics); `release_lock`: `GateActivities.release_symbol_lock` (owner-checked)."""
        self._orders, self._redis, self._temporal, self._release_lock = orders, redis, temporal, release_lock
        self._publish = redis.register_script(_PUBLISH_LUA)
        self._remove_hash = redis.register_script(_REMOVE_HASH_LUA)
        self._take_for_flatten = redis.register_script(_TAKE_FOR_FLATTEN_LUA)

    # ------------------------------------------------------------------------------ snapshot

    @activity.defn(name="reconcile_snapshot")
    async def reconcile_snapshot(self, request: SnapshotRequest) -> AccountSnapshot:
        snap = AccountSnapshot(taken_at_ms=_now_ms())
        await asyncio.gather(self._read_exchange(snap), self._read_trades(snap, request.query_timeout_s),
                             self._read_redis(snap))
        if snap.complete:
            await self._check_visibility(snap)
        return snap

    async def _check_visibility(self, snap: AccountSnapshot) -> None:
        """Visibility can answer with less than runs (a server just restarted, an index behind):
        then every lock and order of a trade it left out would look orphaned. Each workflow the
        other books name (lock and hash owners, the workflow ids in our client ids) that the list
        left out is described: one still running makes the snapshot incomplete (fail closed)."""
        listed = {t.workflow_id for t in snap.trades}
        named = {lock.owner for lock in snap.locks} | {h.workflow_id for h in snap.position_hashes if h.workflow_id}
        named |= {wf for o in snap.orders if (wf := workflow_id_of(o.client_order_id))}
        unlisted = sorted(named - listed)
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def running(workflow_id: str) -> bool:
            async with gate:
                try:
                    described = await self._temporal.get_workflow_handle(workflow_id).describe()
                except RPCError as err:
                    if err.status is RPCStatusCode.NOT_FOUND:
                        return False
                    raise
            return described.status is WorkflowExecutionStatus.RUNNING

        try:
            alive = [wf for wf, up in zip(unlisted, await asyncio.gather(*(running(w) for w in unlisted))) if up]
        except Exception as exc:  # noqa: BLE001
            snap.problems.append(f"visibility: could not check the workflows the other books name: {exc}")
            return
        if alive:
            snap.problems.append(f"visibility is behind: {', '.join(alive[:5])} running but not listed")

    async def _read_exchange(self, snap: AccountSnapshot) -> None:
        try:
            exchange = await self._orders.exchange()
            positions, orders, stops = await asyncio.gather(
                exchange.fetch_positions(None, {"useV2": True}),
                exchange.fetch_open_orders(None),
                exchange.fetch_open_orders(None, None, None, {"trigger": True}))
        except Exception as exc:  # noqa: BLE001 - reported: the run changes nothing
            snap.problems.append(f"exchange: {to_application_error(exc)}")
            return
        snap.positions = [ExchangePosition(symbol=p.symbol, quantity=p.quantity, entry_price=p.entry_price,
                                           leverage=p.leverage) for p in positions_of(positions)]
        snap.orders = [OpenOrder(symbol=o.symbol, client_order_id=o.client_order_id, conditional=o.conditional,
                                 reduce_only=o.reduce_only, side=o.side, type=o.type)
                       for o in [*open_orders_of(orders, conditional=False),
                                 *open_orders_of(stops, conditional=True)] if o.is_open]

    async def _read_trades(self, snap: AccountSnapshot, query_timeout_s: float) -> None:
        try:
            listed = [wf async for wf in self._temporal.list_workflows(RUNNING_TRADES)]
        except Exception as exc:  # noqa: BLE001
            snap.problems.append(f"visibility: {type(exc).__name__}: {exc}")
            return
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def first_run_of(wf) -> str | None:
            """The run tag's source; visibility lists leave it empty on some servers: describe."""
            if wf.raw_info.first_run_id:
                return wf.raw_info.first_run_id
            async with gate:
                try:
                    described = await self._temporal.get_workflow_handle(wf.id, run_id=wf.run_id).describe()
                except Exception:  # noqa: BLE001 - unknown owner: orphan orders are not decided this run
                    return None
            return described.raw_info.first_run_id or None

        firsts = await asyncio.gather(*(first_run_of(wf) for wf in listed))
        trades = []
        for wf, first_run in zip(listed, firsts):
            attrs = wf.typed_search_attributes
            trades.append(LiveTrade(
                workflow_id=wf.id, owner_key=owner_key(wf.id, run_tag(first_run)) if first_run else None,
                symbol=attrs.get(sa.SYMBOL), status=_status(attrs.get(sa.TRADE_STATUS)), side=attrs.get(sa.SIDE)))

        async def check(trade: LiveTrade) -> None:
            async with gate:
                try:
                    state = await asyncio.wait_for(
                        self._temporal.get_workflow_handle(trade.workflow_id).query("state"), query_timeout_s)
                except Exception:  # noqa: BLE001 - not answered: still an owner, not checked
                    snap.unchecked.append(trade.workflow_id)
                    return
            if state.get("status") != TradeStatus.OPEN.value:
                return  # it moved on since visibility listed it: checked next run
            trade.open_qty = Decimal(str(state.get("open_qty", "0")))
            trade.stop_client_id = state.get("stop_client_id")
        await asyncio.gather(*(check(t) for t in trades if t.status is TradeStatus.OPEN))
        snap.trades = trades

    async def _read_redis(self, snap: AccountSnapshot) -> None:
        lock_prefix, hash_prefix = LOCK_KEY.format(symbol=""), POSITION_KEY.format(symbol="")
        try:
            lock_keys = [decoded(k) async for k in self._redis.scan_iter(match=lock_prefix + "*", count=500)]
            hash_keys = [decoded(k) async for k in self._redis.scan_iter(match=hash_prefix + "*", count=500)]
            pipe = self._redis.pipeline(transaction=False)
            for key in lock_keys:
                pipe.get(key)
            for key in hash_keys:
                pipe.hget(key, "workflow_id")
            values = [decoded(v) for v in await pipe.execute(raise_on_error=False)]
        except Exception as exc:  # noqa: BLE001
            snap.problems.append(f"redis: {type(exc).__name__}: {exc}")
            return
        if any(isinstance(v, Exception) for v in values):
            snap.problems.append(f"redis: {next(v for v in values if isinstance(v, Exception))}")
            return
        locks, hashes = values[:len(lock_keys)], values[len(lock_keys):]
        snap.locks = [RedisLock(symbol=k[len(lock_prefix):], owner=v) for k, v in zip(lock_keys, locks) if v]
        snap.position_hashes = [PositionHash(symbol=k[len(hash_prefix):], workflow_id=v or None)
                                for k, v in zip(hash_keys, hashes)]

    # ------------------------------------------------------------------------------- actions

    @activity.defn(name="reconcile_act")
    async def reconcile_act(self, request: ActRequest) -> list[ActionOutcome]:
        """Each confirmed action once, flattens first (their symbols' orphan stops are then
        cancelled by the same close). One failing action does not stop the others; it is
        reported, and the next run finds it again."""
        findings = request.findings
        not_flat: set[str] = set()  # symbols whose flatten failed: their stops are kept
        outcomes = []
        for finding in sorted(findings, key=lambda f: f.action is not Action.FLATTEN):
            if finding.action is Action.CANCEL and finding.symbol in not_flat and finding.conditional:
                done, detail = False, "kept: the position it protects could not be flattened"
            else:
                try:
                    done, detail = await self._act(request.run_id, finding, findings)
                except ApplicationError as err:
                    done, detail = False, f"failed: {err}"
            if finding.action is Action.FLATTEN and not done:
                not_flat.add(finding.symbol)
            outcomes.append(ActionOutcome(kind=finding.kind, action=finding.action, symbol=finding.symbol,
                                          done=done, detail=detail, workflow_id=finding.workflow_id,
                                          client_order_id=finding.client_order_id))
            activity.heartbeat(len(outcomes))
        return outcomes

    async def _act(self, run_id: str, finding: Finding, findings: list[Finding]) -> tuple[bool, str]:
        action = finding.action
        if action is Action.CANCEL:
            result = await self._orders.cancel_order(OrderRef(
                symbol=finding.symbol, client_order_id=finding.client_order_id, conditional=finding.conditional))
            return True, "cancelled" if result.canceled_now else "already gone"
        if action is Action.RELEASE:
            result = await self._release_lock(ReleaseLockRequest(
                workflow_id=finding.workflow_id, symbol=finding.symbol, cooldown_s=0))
            return (True, "released") if result.released else (
                False, f"not released: now held by {result.owner or 'nobody'}")
        if action is Action.REMOVE:
            removed = await self._remove_hash(keys=[POSITION_KEY.format(symbol=finding.symbol.upper())],
                                              args=[finding.workflow_id])
            return bool(int(removed)), "removed" if int(removed) else "not removed: rewritten meanwhile"
        if action is Action.FLATTEN:
            # The symbol's lock first (free, or the ended trade's): no trade can enter the symbol
            # between the second look and the close, so only the orphan is flattened.
            holder = f"rc-{run_tag(run_id)}-flatten"
            lock = LOCK_KEY.format(symbol=finding.symbol.upper())
            if not int(await self._take_for_flatten(keys=[lock], args=[finding.lock_owner or "", holder])):
                return False, f"not flattened: {await self._redis.get(lock)} took {finding.symbol} meanwhile"
            # The ended trade's stops are cancelled by the same close, once flat (never before).
            closed = await self._orders.close_position(ClosePositionRequest(
                symbol=finding.symbol, client_order_id=flatten_client_id(run_id, finding.symbol),
                cancel_stop_client_order_ids=finding.stops))
            if closed.remaining_quantity != 0:  # the lock stays: nothing enters until it is flat
                return False, f"{closed.remaining_quantity} still open after the close"
            detail = "already flat" if closed.was_flat else f"closed {closed.order.filled} @ {closed.order.average_price}"
            if closed.stops_not_cancelled:
                detail += f"; stops not cancelled: {', '.join(closed.stops_not_cancelled)}"
            await self._release_lock(ReleaseLockRequest(workflow_id=holder, symbol=finding.symbol, cooldown_s=0))
            return True, detail
        raise ApplicationError(f"{action} is not an activity's action", type="bad_request", non_retryable=True)

    # ------------------------------------------------------------------------------- report

    @activity.defn(name="publish_reconcile_report")
    async def publish_reconcile_report(self, report: ReconcileReport) -> int:
        """The run's entries on `quantum:stream:reconcile.events` and the last report; -1 when
        an earlier attempt already published them."""
        run = {"type": "run", "run_id": report.run_id, "workflow_id": report.workflow_id,
               "complete": str(report.complete), "findings": str(len(report.findings)),
               "unconfirmed": str(len(report.unconfirmed)), "problems": "; ".join(report.problems),
               "at_ms": str(report.finished_ms or report.started_ms)}
        outcome_of = {(o.kind, o.symbol, o.workflow_id, o.client_order_id): o for o in report.outcomes}
        entries = [run]
        for finding in report.findings:
            outcome = outcome_of.get((finding.kind, finding.symbol, finding.workflow_id, finding.client_order_id))
            entries.append({"type": "finding", "run_id": report.run_id, "kind": finding.kind.value,
                            "action": finding.action.value, "symbol": finding.symbol,
                            "workflow_id": finding.workflow_id or "", "client_order_id": finding.client_order_id or "",
                            "detail": finding.detail,
                            "done": "" if outcome is None else str(outcome.done),
                            "outcome": "" if outcome is None else outcome.detail})
        flat = [[item for pair in entry.items() for item in pair] for entry in entries]
        return int(await self._publish(
            keys=[RECONCILE_PUBLISHED_KEY.format(run_id=report.run_id), RECONCILE_EVENTS_STREAM,
                  RECONCILE_LAST_REPORT_KEY],
            args=[PUBLISHED_TTL_S, EVENTS_MAXLEN, json.dumps(flat), report.model_dump_json()]))

