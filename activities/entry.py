"""The entry as one activity (`open_position`): the market order, then the protective stop as
soon as the entry filled, in the same attempt.

Why one activity: with two, a worker that dies right after the entry filled leaves the position
without a stop until Temporal retries the lost step (a start-to-close timeout, 13 s) and the
workflow schedules the stop. Here the attempt heartbeats, so a dead worker is noticed after the
short heartbeat timeout, and the retry finds the entry by its client id and places the stop
straight away: the gap is one short retry.

Three rules keep a retried attempt from sending an order twice:
- every order is looked up by its client id before it is sent (`OrderActivities.lookup`);
- a retried attempt that does not find the entry waits until any entry request the dead attempt
  may still have had in flight can no longer execute (the exchange refuses a request older
  than its recvWindow), then asks again: a filled market order is no longer "open", so on
  Binance a resend with the same client id would fill a second time;
- the stop needs no such wait: while it rests, the exchange itself refuses a second one with the
  same client id (-4116, "already placed").

An entry that goes out late (a retried attempt, or later than the guard's window after the
gates) first re-checks the market against the gates' rule (`trading/entry_checks.py`): the
deviation from the intent's entry and the planned stop's side. Refused: `LATE_ENTRY_REFUSED`,
nothing sent.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.orders import OrderActivities
from activities.schemas.orders import (
    LATE_ENTRY_REFUSED, WOULD_TRIGGER_IMMEDIATELY, OrderResult, OrderType, PlaceOrderRequest,
)
from activities.temporal_errors import to_application_error
from trading.entry_checks import EntryGuard, late_entry_problems
from trading.levels import rebase_levels

# Beyond the recvWindow, the time an accepted request may still spend inside the exchange.
_IN_FLIGHT_SLACK_S = 1.0
_DEFAULT_RECV_WINDOW_MS = 5_000
_FILL_CHECKS, _FILL_CHECK_S = 4, 0.25  # a market entry not yet reported filled: ask again


class _Heartbeats:
    """Heartbeat every `interval_s` while the block runs (the SDK throttles what it sends), so
    Temporal notices a dead worker after the call's short heartbeat timeout."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.details: dict[str, Any] = {"phase": "started", "at_ms": _now_ms()}
        self._task: asyncio.Task | None = None

    def phase(self, name: str) -> None:
        self.details = {"phase": name, "at_ms": _now_ms()}
        activity.heartbeat(self.details)

    async def _beat(self) -> None:
        while True:
            activity.heartbeat(self.details)
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> _Heartbeats:
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


class EntryActivities:
    def __init__(self, orders: OrderActivities) -> None:
        self._orders = orders

    @activity.defn(name="open_position")
    async def open_position(self, request: PlaceOrderRequest) -> OrderResult:
        """Entry order (looked up first), then its reduce-only stop; see the module doc."""
        if request.type is not OrderType.MARKET or request.reduce_only:
            raise ApplicationError("open_position takes a MARKET entry that is not reduce-only",
                                   type="bad_request", non_retryable=True)
        info = activity.info()
        async with _Heartbeats() as beats:
            exchange, unified, symbol_id = await self._orders.client(request.symbol)
            entry = await self._find_entry(exchange, unified, symbol_id, request, info)
            if entry is None:
                guard = request.entry_guard
                if guard is not None and guard.is_late(_now_ms(), info.attempt):
                    await self._recheck(exchange, unified, guard)
                beats.phase("entry_sent")
                bare = request.model_copy(update={"entry_guard": None, "protective_stop": None})
                entry = await self._orders.send_new(exchange, unified, symbol_id, bare)
            entry = await self._until_filled(exchange, unified, symbol_id, entry)
            beats.phase("entry_filled" if entry.filled > 0 else "entry_unfilled")
            if request.protective_stop is None or entry.filled <= 0 or entry.average_price is None:
                return entry
            return await self._protect(request, entry)

    async def _find_entry(self, exchange: Any, unified: str, symbol_id: str,
                          request: PlaceOrderRequest, info: activity.Info) -> OrderResult | None:
        cid = request.client_order_id
        entry = await self._orders.lookup(exchange, unified, symbol_id, cid, False)
        if entry is not None or info.attempt <= 1:
            return entry
        await asyncio.sleep(_in_flight_wait_s(exchange, info))
        return await self._orders.lookup(exchange, unified, symbol_id, cid, False)

    async def _recheck(self, exchange: Any, unified: str, guard: EntryGuard) -> None:
        try:
            ticker = await exchange.fetch_ticker(unified)
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        price = Decimal(str((ticker.get("info") or {}).get("lastPrice") or ticker["last"]))
        problems = late_entry_problems(guard, price)
        if problems:
            raise ApplicationError(
                "late entry refused: " + "; ".join(problems), {"live_price": str(price)},
                type=LATE_ENTRY_REFUSED, non_retryable=True)
        activity.logger.info("late entry re-checked at %s: still within the gates' rule", price)

    async def _until_filled(self, exchange: Any, unified: str, symbol_id: str,
                            entry: OrderResult) -> OrderResult:
        for _ in range(_FILL_CHECKS):
            if entry.filled > 0 and entry.average_price is not None:
                break
            await asyncio.sleep(_FILL_CHECK_S)
            entry = await self._orders.lookup(exchange, unified, symbol_id, entry.client_order_id,
                                              False) or entry
        return entry

    async def _protect(self, request: PlaceOrderRequest, entry: OrderResult) -> OrderResult:
        """The stop at the planned distance from the real fill. A refusal on the merits (-2021
        crossed, -4006...) is reported, not raised: the entry stands and the workflow closes the
        position at market. A transient failure is raised: the retried attempt finds the entry
        by its client id and tries the stop again at once."""
        spec = request.protective_stop
        stop_price = rebase_levels(spec.planned_levels, entry.average_price).stop_loss
        stop = PlaceOrderRequest(
            symbol=request.symbol, side=request.side.opposite, type=OrderType.STOP_MARKET,
            quantity=entry.filled, trigger_price=stop_price, reduce_only=True,
            client_order_id=spec.client_order_id)
        try:
            placed = await self._orders.place_order(stop)
        except ApplicationError as err:  # every exchange failure arrives as one (orders.py)
            if not err.non_retryable:
                raise
            activity.logger.warning("protective stop %s not placed: %s", spec.client_order_id, err)
            return entry.model_copy(update={"protective_stop_error": str(err),
                                            "protective_stop_crossed": err.type == WOULD_TRIGGER_IMMEDIATELY})
        return entry.model_copy(update={"protective_stop": placed})


def _in_flight_wait_s(exchange: Any, info: activity.Info) -> float:
    """Seconds until no entry request of an earlier attempt can still execute.

    Such a request was signed before this attempt was scheduled (the earlier one had died or
    timed out by then); the exchange refuses it once its recvWindow has passed.
    """
    recv_ms = (getattr(exchange, "options", None) or {}).get("recvWindow") or _DEFAULT_RECV_WINDOW_MS
    scheduled: datetime = info.current_attempt_scheduled_time
    deadline = scheduled.timestamp() + recv_ms / 1000 + _IN_FLIGHT_SLACK_S
    return max(0.0, deadline - time.time())
