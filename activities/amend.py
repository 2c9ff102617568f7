"""`amend_position`: a take-profit harvest, a stop move or a partial close as ONE activity.

Each of these used to be two or three activities (reduce, place the new stop, cancel the old
one), ~6 history events each. Here they run in one attempt, in that order, and each step looks
its client id up before it sends anything (`OrderActivities.place_order`, `cancel_order`): a
retried attempt redoes only what its predecessor did not finish, and never sends an order twice.

- A refusal of `reduce` on its merits is raised (nothing else is done); the workflow decides.
- A refusal of `new_stop` on its merits is reported, not raised: the reduce stands and the
  previous stop still rests (the workflow closes at market when the new one was crossed).
- The replaced stop is cancelled only once the new one rests: the position is never unprotected.
  A cancel that fails on its merits is reported; the workflow cancels it again at the close.
Transient failures are raised, and the retry resumes where the attempt stopped.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.orders import OrderActivities
from activities.schemas.orders import (
    WOULD_TRIGGER_IMMEDIATELY, AmendRequest, AmendResult, OrderRef,
)


class AmendActivities:
    def __init__(self, orders: OrderActivities) -> None:
        self._orders = orders

    @activity.defn(name="amend_position")
    async def amend_position(self, request: AmendRequest) -> AmendResult:
        result = AmendResult()
        if request.reduce is not None:
            if not request.reduce.reduce_only:
                raise ApplicationError("amend_position reduces only: `reduce` must be reduce-only",
                                       type="bad_request", non_retryable=True)
            result.reduce = await self._orders.place_order(request.reduce)
        if request.new_stop is None:
            return result
        stop = request.new_stop
        if result.reduce is not None:
            stop = stop.model_copy(update={"quantity": stop.quantity - result.reduce.filled})
            if stop.quantity <= 0:
                return result  # nothing left to protect (the workflow closes the trade)
        try:
            result.new_stop = await self._orders.place_order(stop)
        except ApplicationError as err:
            if not err.non_retryable:
                raise
            activity.logger.warning("stop %s not placed: %s", stop.client_order_id, err)
            result.stop_error, result.stop_crossed = str(err), err.type == WOULD_TRIGGER_IMMEDIATELY
            return result
        if request.replaced_stop_client_order_id:
            try:
                await self._orders.cancel_order(OrderRef(
                    symbol=request.symbol, client_order_id=request.replaced_stop_client_order_id,
                    conditional=True))
                result.replaced_stop_cancelled = True
            except ApplicationError as err:
                if not err.non_retryable:
                    raise
                activity.logger.warning("replaced stop %s not cancelled: %s",
                                        request.replaced_stop_client_order_id, err)
        return result
