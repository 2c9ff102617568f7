"""The entry as one activity (`open_position`): the market order, then the protective stop as
soon as the entry filled, in the same attempt.

Why one activity: with two, a worker that dies right after the entry filled leaves the position
without a stop until Temporal retries the lost step (a start-to-close timeout, 13 s) and the
workflow schedules the stop. Here the attempt heartbeats, so a dead worker is noticed after the
short heartbeat timeout, and the retry finds the entry by its client id and places the stop
straight away: the gap is one short retry.

Three rules keep a retried attempt from sending an order twice:
- every order is looked up by its client id before it is sent (`OrderActivities.lookup`);
- the entry request is signed with its attempt's start time (Temporal's `started_time`) and a
  recvWindow of `ENTRY_RECV_WINDOW_MS`, and the attempt does not send it later than that: the
  exchange refuses such a request once it is older. A retry starts no sooner than the heartbeat
  timeout after the earlier attempt started (3 s, more than the window plus a second of clock
  slack), so when the retry looks the entry up, no request of an earlier attempt can still
  execute, however that attempt died or stalled. This matters because a filled market order is no
  longer "open", and Binance accepts its client id again: a resend would fill a second time;
- the stop needs no such binding: while it rests, the exchange itself refuses a second one with
  the same client id (-4116, "already placed").

An entry that goes out late (a retried attempt, or later than the guard's window after the
gates) first re-checks the market against the gates' rule (`trading/entry_checks.py`): the
deviation from the intent's entry and the planned stop's side. Refused: `LATE_ENTRY_REFUSED`,
nothing sent.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import Heartbeats
from activities.orders import OrderActivities
from activities.schemas.orders import (
    LATE_ENTRY_REFUSED, WOULD_TRIGGER_IMMEDIATELY, OrderResult, OrderType, PlaceOrderRequest,
)
from activities.temporal_errors import to_application_error
from exchange.parse import last_price
from trading.entry_checks import EntryGuard, late_entry_problems
from trading.levels import rebase_levels

# The entry request's validity after its attempt started; keep it below the OPEN_POSITION
# heartbeat timeout (workflows/activity_calls.py) minus clock slack.
ENTRY_RECV_WINDOW_MS = 2_000
_SEND_MARGIN_MS = 250  # not sent when less than this is left of the window (network time)
_CLOCK_SLACK_S = 1.0  # between Temporal's clock (the attempt's start) and the exchange's
ENTRY_ATTEMPT_EXPIRED = "entry_attempt_expired"  # retryable: the next attempt sends it
_FILL_CHECKS, _FILL_CHECK_S = 4, 0.25  # a market entry not yet reported filled: ask again


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
        started_ms = int(info.started_time.timestamp() * 1000)
        async with Heartbeats() as beats:
            exchange, unified, symbol_id = await self._orders.client(request.symbol)
            entry = await self._orders.lookup(exchange, unified, symbol_id, request.client_order_id, False)
            if entry is None:
                guard = request.entry_guard
                if guard is not None and guard.is_late(_now_ms(), info.attempt):
                    await self._recheck(exchange, unified, guard)
                if request.leverage is not None:
                    await self._orders.set_margin_and_leverage(exchange, unified, request.leverage, True)
                _still_in_window(started_ms)
                beats.phase("entry_sent")
                bare = request.model_copy(update={"entry_guard": None, "protective_stop": None,
                                                  "leverage": None})
                try:
                    entry = await self._orders.send_new(exchange, unified, symbol_id, bare, signing={
                        "timestamp": started_ms, "recvWindow": ENTRY_RECV_WINDOW_MS})
                except ApplicationError as err:
                    raise _after_unknown_outcome(err, started_ms) from None
            entry = await self._until_filled(exchange, unified, symbol_id, entry)
            beats.phase("entry_filled" if entry.filled > 0 else "entry_unfilled")
            if request.protective_stop is None or entry.filled <= 0 or entry.average_price is None:
                return entry
            entry = await self._protect(request, entry)
            return entry.model_copy(update={"liquidation_price": await self._liquidation_price(exchange, unified)})

    async def _liquidation_price(self, exchange: Any, unified: str) -> Decimal | None:
        """Read with the entry (adjust_levels refuses a stop beyond it) so that the workflow needs
        no activity of its own for it; unknown on a failure, never a reason to fail the entry."""
        try:
            _, position = await self._orders.signed_position(exchange, unified)
        except ApplicationError as err:
            activity.logger.warning("liquidation price not read: %s", err)
            return None
        return position.liquidation_price if position is not None else None

    async def _recheck(self, exchange: Any, unified: str, guard: EntryGuard) -> None:
        try:
            ticker = await exchange.fetch_ticker(unified)
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        price = last_price(ticker)
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


def _after_unknown_outcome(err: ApplicationError, started_ms: int) -> ApplicationError:
    """A retryable failure of the entry request (timeout, dropped connection, 5xx): the request
    may still be on its way. The retry waits until the exchange would refuse it."""
    if err.non_retryable:
        return err  # refused on its merits: nothing was executed
    delay_s = max(0.0, (started_ms + ENTRY_RECV_WINDOW_MS - _now_ms()) / 1000 + _CLOCK_SLACK_S)
    return ApplicationError(err.message, *err.details, type=err.type,
                            next_retry_delay=timedelta(seconds=delay_s))


def _still_in_window(started_ms: int) -> None:
    """Raise (retryable) when this attempt may no longer send its entry: the request would reach
    the exchange too late to be valid, and a retry may already be on its way."""
    age_ms = _now_ms() - started_ms
    if age_ms > ENTRY_RECV_WINDOW_MS - _SEND_MARGIN_MS:
        raise ApplicationError(
            f"the entry attempt started {age_ms} ms ago: too late to send its entry within its "
            f"{ENTRY_RECV_WINDOW_MS} ms window (a retry looks it up and sends it)",
            type=ENTRY_ATTEMPT_EXPIRED)
