"""Order activities against the real paper exchange, through Temporal's ActivityEnvironment.

What matters is idempotency by client id: whatever fails or repeats, the exchange's own audit
log must show exactly one accepted placement per client id.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.orders import (
    ClosePositionRequest, FillsRequest, OrderActivities, OrderRef, OrderType, PlaceOrderRequest,
    PositionRequest,
)
from trading.models import Side

pytestmark = pytest.mark.integration
BTC = "BTCUSDT"
PLACED = ("accepted", "filled")
ORDER_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")


def placements(paper, cid: str) -> list[dict]:
    return [e for e in paper.audit(client_id=cid) if e["method"] == "POST" and e["result"] in PLACED]


def create_requests(paper, cid: str) -> list[str]:
    """Every order-create request the exchange received with this client id, whatever its
    outcome: a resend refused with -4116 counts too (on Binance that refusal exists only while
    the first order is open; once it filled, the resend is a second order)."""
    return [e["result"] for e in paper.audit(client_id=cid)
            if e["method"] == "POST" and e["path"] in ORDER_PATHS]


async def run(fn, arg):
    return await ActivityEnvironment().run(fn, arg)


@pytest.fixture
def orders(exchange, paper) -> OrderActivities:
    paper.set_price(BTC, 63000)
    return OrderActivities(exchange)


def market(cid: str, side: Side = Side.BUY, qty: str = "0.01", reduce_only: bool = False):
    return PlaceOrderRequest(symbol=BTC, side=side, type=OrderType.MARKET, quantity=Decimal(qty),
                             client_order_id=cid, reduce_only=reduce_only)


def stop(cid: str, trigger: str, side: Side = Side.SELL, qty: str = "0.01"):
    return PlaceOrderRequest(symbol=BTC, side=side, type=OrderType.STOP_MARKET,
                             quantity=Decimal(qty), client_order_id=cid,
                             trigger_price=Decimal(trigger), reduce_only=True)


async def set_leverage(orders, leverage: int) -> str:
    """Isolated margin and this leverage, as `open_position` sets them before an entry."""
    exchange, unified, _ = await orders._client(BTC)
    return await orders.set_margin_and_leverage(exchange, unified, leverage, True)


async def open_long(orders, cid: str = "t1-entry", qty: str = "0.01"):
    await set_leverage(orders, 10)
    return await run(orders.place_order, market(cid, qty=qty))


async def test_set_leverage_is_idempotent(orders, exchange):
    for _ in range(2):  # the second call meets "no need to change margin type": success
        assert await set_leverage(orders, 7) == "isolated"
    assert (await exchange.fetch_leverage("BTC/USDT:USDT"))["longLeverage"] == 7


async def test_place_twice_with_same_client_id_places_once(orders, paper):
    first = await open_long(orders)
    second = await run(orders.place_order, market("t1-entry"))
    assert not first.already_existed and second.already_existed
    assert second.order_id == first.order_id
    assert (first.status, first.filled, first.average_price) == ("closed", Decimal("0.010"), Decimal("63000.00"))
    assert len(placements(paper, "t1-entry")) == 1


async def test_dropped_connection_after_accept_is_retried_without_a_second_order(orders, paper):
    await open_long(orders)
    paper.add_fault(path="/fapi/v1/algoOrder", method="POST", drop_after_accept=True)
    with pytest.raises(ApplicationError) as failed:
        await run(orders.place_order, stop("t1-sl-1", "61000"))
    assert not failed.value.non_retryable  # Temporal retries it
    retried = await run(orders.place_order, stop("t1-sl-1", "61000"))
    assert retried.already_existed and retried.is_open and retried.conditional
    assert (retried.type, retried.trigger_price, retried.reduce_only) == ("STOP_MARKET", Decimal("61000.00"), True)
    assert create_requests(paper, "t1-sl-1") == ["accepted"]  # no resend, not even a refused one


async def test_dropped_regular_order_is_found_by_the_retry(orders, paper):
    paper.add_fault(path="/fapi/v1/order", method="POST", drop_after_accept=True)
    with pytest.raises(ApplicationError) as failed:
        await run(orders.place_order, market("t2-entry"))
    assert not failed.value.non_retryable
    retried = await run(orders.place_order, market("t2-entry"))
    assert retried.already_existed and retried.filled == Decimal("0.010")
    assert len(placements(paper, "t2-entry")) == 1


async def test_stop_that_would_trigger_at_once_is_not_retryable(orders):
    await open_long(orders)
    with pytest.raises(ApplicationError) as failed:
        await run(orders.place_order, stop("t1-sl-1", "64000"))  # a long's stop above the price
    assert failed.value.type == "WouldTriggerImmediately" and failed.value.non_retryable
    assert failed.value.details[0]["code"] == -2021


async def test_insufficient_margin_is_not_retryable(orders):
    await set_leverage(orders, 1)
    with pytest.raises(ApplicationError) as failed:
        await run(orders.place_order, market("t3-entry", qty="1"))  # 63,000 USDT at 1x
    assert failed.value.type == "insufficient_funds" and failed.value.non_retryable
    assert failed.value.details[0]["code"] == -2019


async def test_trailing_and_take_profit_orders(orders):
    await open_long(orders)
    trailing = await run(orders.place_order, PlaceOrderRequest(
        symbol=BTC, side=Side.SELL, type=OrderType.TRAILING_STOP_MARKET, quantity=Decimal("0.01"),
        client_order_id="t1-trail", callback_rate_pct=Decimal("0.8"), reduce_only=True))
    take = await run(orders.place_order, PlaceOrderRequest(
        symbol=BTC, side=Side.SELL, type=OrderType.TAKE_PROFIT_MARKET, quantity=Decimal("0.005"),
        client_order_id="t1-tp1", trigger_price=Decimal("65000"), reduce_only=True))
    assert (trailing.type, take.type) == ("TRAILING_STOP_MARKET", "TAKE_PROFIT_MARKET")
    assert trailing.is_open and take.is_open and take.quantity == Decimal("0.005")


async def test_cancel_is_idempotent(orders, paper):
    await open_long(orders)
    await run(orders.place_order, stop("t1-sl-1", "61000"))
    ref = OrderRef(symbol=BTC, client_order_id="t1-sl-1", conditional=True)
    first = await run(orders.cancel_order, ref)
    assert first.found and first.canceled_now and first.order.status == "canceled"
    again = await run(orders.cancel_order, ref)
    assert again.found and not again.canceled_now and again.order.status == "canceled"
    unknown = await run(orders.cancel_order, OrderRef(symbol=BTC, client_order_id="never-sent"))
    assert not unknown.found and unknown.order is None
    # A filled order is "already finished": success, nothing cancelled.
    filled = await run(orders.cancel_order, OrderRef(symbol=BTC, client_order_id="t1-entry"))
    assert filled.found and not filled.canceled_now and filled.order.status == "closed"
    assert await run(orders.get_order, OrderRef(symbol=BTC, client_order_id="never-sent")) is None


async def test_position_then_close_flattens_and_close_when_flat_is_a_no_op(orders, paper):
    await open_long(orders)
    position = await run(orders.get_position, PositionRequest(symbol=BTC))
    assert position.quantity == Decimal("0.010") and position.leverage == 10
    assert position.entry_price == Decimal("63000") and position.liquidation_price > 0
    assert position.exchange_time_ms == paper.clock()["market_ms"]
    assert position.mark_price is not None and position.margin_mode == "isolated"

    closed = await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t1-close"))
    assert not closed.was_flat and closed.remaining_quantity == 0
    assert closed.order.reduce_only and closed.order.side == "SELL"
    assert (await run(orders.get_position, PositionRequest(symbol=BTC))).quantity == 0
    # A retry of the same close finds its order; a new close on a flat account sends nothing.
    retry = await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t1-close"))
    assert retry.order.already_existed and retry.remaining_quantity == 0
    noop = await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t1-close-2"))
    assert noop.was_flat and noop.order is None
    assert placements(paper, "t1-close-2") == [] and len(placements(paper, "t1-close")) == 1


async def test_close_a_short(orders):
    await run(orders.place_order, market("t4-entry", side=Side.SELL))
    assert (await run(orders.get_position, PositionRequest(symbol=BTC))).quantity == Decimal("-0.010")
    closed = await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t4-close"))
    assert closed.order.side == "BUY" and closed.remaining_quantity == 0


async def test_fills_sum_to_the_exchanges_pnl_fees_and_funding(orders, paper, exchange):
    start_ms = paper.clock()["market_ms"]
    before = Decimal((await exchange.fetch_balance())["info"]["totalWalletBalance"])
    await open_long(orders, qty="0.02")
    paper.advance(8 * 3_600_000 + 60_000)  # crosses one funding time (every 8 h)
    paper.set_price(BTC, 63500)
    await run(orders.place_order, stop("t1-sl-1", "63400", qty="0.01"))  # partial stop fills
    paper.set_price(BTC, 63300)
    await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t1-close"))
    after = Decimal((await exchange.fetch_balance())["info"]["totalWalletBalance"])

    result = await run(orders.get_fills, FillsRequest(
        symbol=BTC, client_order_ids=["t1-entry", "t1-sl-1", "t1-close"], funding_since_ms=start_ms))
    assert len(result.fills) == 3 and {f.client_order_id for f in result.fills} == {"t1-entry", "t1-sl-1", "t1-close"}
    income = await exchange.fapiPrivateGetIncome({"symbol": BTC, "startTime": start_ms, "limit": 1000})
    by_type: dict[str, Decimal] = {}
    for row in income:
        by_type[row["incomeType"]] = by_type.get(row["incomeType"], Decimal(0)) + Decimal(row["income"])
    assert result.realized_pnl == by_type["REALIZED_PNL"]
    assert result.fees == -by_type["COMMISSION"]
    assert result.funding and result.funding_total == by_type["FUNDING_FEE"]
    assert result.net_pnl == after - before  # to the cent, and beyond
    # The same fills by time instead of by client id.
    by_time = await run(orders.get_fills, FillsRequest(symbol=BTC, since_ms=start_ms))
    assert (by_time.realized_pnl, by_time.fees) == (result.realized_pnl, result.fees)


async def test_an_earlier_trade_in_the_same_millisecond_is_not_counted(orders, paper):
    """A market clock that stands still (or a quick re-entry): the second trade's fills since its
    entry time must not take in the first trade's, which share that millisecond (the chaos suite
    found each trade's PnL summing every earlier one's)."""
    opened_ms = paper.clock()["market_ms"]
    await run(orders.place_order, market("t8-entry"))
    paper.set_price(BTC, 63500)
    await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t8-close"))
    assert paper.clock()["market_ms"] == opened_ms  # (the clock stood still)
    await run(orders.place_order, market("t9-entry"))
    paper.set_price(BTC, 63100)
    await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="t9-close"))
    second = await run(orders.get_fills, FillsRequest(symbol=BTC, client_order_ids=["t9-entry", "t9-close"],
                                                      since_ms=opened_ms))
    assert {f.client_order_id for f in second.fills} == {"t9-entry", "t9-close"}, second.fills


@pytest.mark.parametrize(("status", "code", "kind"), [(429, -1003, "rate_limited"), (503, -1001, "exchange_busy")])
async def test_transient_refusals_are_retryable(orders, paper, status, code, kind):
    paper.add_fault(path="/fapi/v1/order", method="POST", status=status, code=code)
    with pytest.raises(ApplicationError) as failed:
        await run(orders.place_order, market("t5-entry"))
    assert failed.value.type == kind and not failed.value.non_retryable
    placed = await run(orders.place_order, market("t5-entry"))  # Temporal's retry
    assert not placed.already_existed and len(placements(paper, "t5-entry")) == 1


# -- a retried step sends no second order request ------------------------------------------------
#
# The paper exchange follows Binance's rule (QT_PAPER_CLIENT_ID_REUSE=binance, the default): a
# client id is refused only while its order is open, so after a fill or a trigger nothing on the
# exchange stops a resend from becoming a second order. The look-up by client id before placing
# is the only guard, and these tests are what notice when it is gone.


def take_profit(cid: str, trigger: str = "65000", qty: str = "0.01"):
    return PlaceOrderRequest(symbol=BTC, side=Side.SELL, type=OrderType.TAKE_PROFIT_MARKET,
                             quantity=Decimal(qty), client_order_id=cid,
                             trigger_price=Decimal(trigger), reduce_only=True)


def trailing(cid: str, qty: str = "0.01"):
    return PlaceOrderRequest(symbol=BTC, side=Side.SELL, type=OrderType.TRAILING_STOP_MARKET,
                             quantity=Decimal(qty), client_order_id=cid,
                             callback_rate_pct=Decimal("0.8"), reduce_only=True)


STEPS = {  # kind -> (request, endpoint, what the exchange answers the one create with)
    "market": (lambda: market("r1-entry"), "/fapi/v1/order", "filled"),
    "limit": (lambda: PlaceOrderRequest(symbol=BTC, side=Side.BUY, type=OrderType.LIMIT,
                                        quantity=Decimal("0.01"), price=Decimal("62000"),
                                        client_order_id="r1-bid"), "/fapi/v1/order", "accepted"),
    "stop": (lambda: stop("r1-sl-1", "61000"), "/fapi/v1/algoOrder", "accepted"),
    "take_profit": (lambda: take_profit("r1-tp1"), "/fapi/v1/algoOrder", "accepted"),
    "trailing": (lambda: trailing("r1-trail"), "/fapi/v1/algoOrder", "accepted"),
}


async def position_qty(orders) -> Decimal:
    return (await run(orders.get_position, PositionRequest(symbol=BTC))).quantity


@pytest.mark.parametrize("lost_answer", [False, True], ids=["retried", "answer-lost"])
@pytest.mark.parametrize("kind", list(STEPS))
async def test_a_retried_placement_sends_no_second_create(orders, paper, kind, lost_answer):
    make, path, outcome = STEPS[kind]
    request = make()
    cid = request.client_order_id
    if request.reduce_only:
        await open_long(orders, cid="r1-entry-for-stops")
    before = await position_qty(orders)
    if lost_answer:  # the exchange accepts the order, the connection drops before the answer
        paper.add_fault(path=path, method="POST", drop_after_accept=True)
        with pytest.raises(ApplicationError) as failed:
            await run(orders.place_order, request)
        assert not failed.value.non_retryable  # Temporal retries the step
        first = None
    else:
        first = await run(orders.place_order, request)
        assert not first.already_existed
    retried = await run(orders.place_order, request)  # the retried step
    assert retried.already_existed and retried.client_order_id == cid
    if first is not None:
        assert retried.order_id == first.order_id
    assert create_requests(paper, cid) == [outcome]  # one request, never a second one
    state = paper.state()
    if kind == "market":
        assert retried.filled == Decimal("0.010")
        assert await position_qty(orders) == before + Decimal("0.01")  # the quantity once
    else:
        assert await position_qty(orders) == before
        listed = state["open_algo_orders"] if request.type.conditional else state["open_orders"]
        key = "clientAlgoId" if request.type.conditional else "clientOrderId"
        assert [o[key] for o in listed if o[key] == cid] == [cid]  # one resting order


async def test_a_retried_stop_that_already_fired_is_not_placed_again(orders, paper):
    """The stop step placed its order, the answer was lost, the stop fired before the retry:
    on Binance the id is free again, so only the look-up keeps the retry from a second stop."""
    await open_long(orders, qty="0.02")
    paper.add_fault(path="/fapi/v1/algoOrder", method="POST", drop_after_accept=True)
    with pytest.raises(ApplicationError):
        await run(orders.place_order, stop("r2-sl-1", "61000"))
    paper.set_price(BTC, 60900)  # the stop fires: 0.01 sold
    retried = await run(orders.place_order, stop("r2-sl-1", "61000"))
    assert retried.already_existed and retried.status == "closed" and retried.triggered_order_id
    assert create_requests(paper, "r2-sl-1") == ["accepted"]
    assert paper.state()["open_algo_orders"] == []
    assert await position_qty(orders) == Decimal("0.010")


async def test_a_retried_entry_after_its_fill_and_the_close_sends_nothing(orders, paper):
    """A late retry of the entry step (the trade is already flat): the id is free on Binance."""
    await open_long(orders, cid="r3-entry")
    await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="r3-close"))
    retried = await run(orders.place_order, market("r3-entry"))
    assert retried.already_existed and retried.filled == Decimal("0.010")
    assert create_requests(paper, "r3-entry") == ["filled"]
    assert await position_qty(orders) == 0


async def test_a_close_whose_answer_was_lost_is_not_sent_again(orders, paper):
    await open_long(orders, cid="r4-entry", qty="0.02")
    paper.add_fault(path="/fapi/v1/order", method="POST", drop_after_accept=True)
    with pytest.raises(ApplicationError) as failed:
        await run(orders.close_position, ClosePositionRequest(symbol=BTC, client_order_id="r4-close"))
    assert not failed.value.non_retryable
    assert await position_qty(orders) == 0  # the close went through
    retried = await run(orders.close_position,
                        ClosePositionRequest(symbol=BTC, client_order_id="r4-close"))
    assert not retried.was_flat and retried.order.already_existed
    assert retried.order.filled == Decimal("0.020") and retried.remaining_quantity == 0
    assert create_requests(paper, "r4-close") == ["filled"]
    again = await run(orders.close_position,  # and once more: still nothing new
                      ClosePositionRequest(symbol=BTC, client_order_id="r4-close"))
    assert again.order.already_existed and create_requests(paper, "r4-close") == ["filled"]
