"""Every Binance error the paper exchange can give, provoked for real over HTTP through ccxt.

Each case asserts the ccxt exception class (with the client's `linear` error map) and the
`exchange.errors` classification the trading code branches on. Precision errors
that ccxt would round away are sent through ccxt's implicit API methods.
"""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from exchange.errors import FailureKind, classify_exchange_error
from local_stack.paper_server import paper_exchange_client

BTC = "BTC/USDT:USDT"
LIMIT = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "quantity": "0.010", "price": "62000"}

pytestmark = pytest.mark.integration


async def insufficient_margin(ex, paper):
    await ex.create_order(BTC, "market", "buy", 5)  # 315,000 USDT at 20x needs 15,750


async def would_trigger(ex, paper):
    await ex.create_order(BTC, "market", "sell", 0.01,
                          params={"triggerPrice": 64000, "reduceOnly": True})


async def duplicate_client_id(ex, paper):
    # "Unique among open orders": refused while the first order with the id rests.
    await ex.create_order(BTC, "limit", "buy", 0.01, 62000, params={"clientOrderId": "dup-1"})
    await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})


async def duplicate_across_algo_and_regular(ex, paper):
    await ex.create_order(BTC, "market", "buy", 0.01)  # the open stop below holds the id
    await ex.create_order(BTC, "market", "sell", 0.01, params={
        "triggerPrice": 60000, "reduceOnly": True, "clientOrderId": "dup-2"})
    await ex.create_order(BTC, "market", "sell", 0.01, params={"clientOrderId": "dup-2"})


async def below_min_notional(ex, paper):
    await ex.create_order(BTC, "market", "buy", 0.001)  # 63 USDT < 100


async def reduce_only_would_increase(ex, paper):
    await ex.create_order(BTC, "market", "buy", 0.01)
    await ex.create_order(BTC, "market", "buy", 0.01, params={"reduceOnly": True})


async def stop_price_below_zero(ex, paper):
    await ex.fapiPrivatePostAlgoOrder({"algoType": "CONDITIONAL", "symbol": "BTCUSDT",
                                       "side": "SELL", "type": "STOP_MARKET",
                                       "quantity": "0.010", "triggerPrice": "-1",
                                       "reduceOnly": "true"})


async def price_precision(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "price": "62000.123"})  # pricePrecision 2


async def quantity_precision(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "quantity": "0.0101"})  # quantityPrecision 3


async def off_tick(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "price": "62000.15"})  # tick 0.1


async def off_step(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "symbol": "DASHUSDT", "price": "20",
                                   "quantity": "1.015"})  # step 0.01, precision 3


async def conditional_on_order_endpoint(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "type": "STOP_MARKET", "stopPrice": "60000"})


async def cancel_unknown(ex, paper):
    await ex.cancel_order("123456", BTC)


async def cancel_unknown_algo(ex, paper):
    await ex.cancel_order("123456", BTC, params={"trigger": True})


async def fetch_unknown(ex, paper):
    await ex.fetch_order("123456", BTC)


async def fetch_unknown_algo(ex, paper):
    await ex.fetch_order(None, BTC, params={"clientOrderId": "never-used", "trigger": True})


async def bad_client_id(ex, paper):
    await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "bad id!"})


async def bad_leverage(ex, paper):
    await ex.set_leverage(50, "FHE/USDT:USDT")  # FHEUSDT allows 1..20


async def unknown_symbol(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "symbol": "FOOUSDT"})


async def missing_parameter(ex, paper):
    await ex.fapiPrivatePostOrder({k: v for k, v in LIMIT.items() if k != "quantity"})


async def malformed_parameter(ex, paper):
    await ex.fapiPrivatePostOrder({**LIMIT, "quantity": "abc"})


async def post_only_would_take(ex, paper):
    await ex.create_order(BTC, "limit", "buy", 0.01, 63100, params={"postOnly": True})


async def stale_timestamp(ex, paper):
    ex.options["timeDifference"] = 120_000  # ccxt signs with local time minus this
    await ex.fetch_balance()


async def bad_signature(ex, paper):
    other = paper_exchange_client(paper.settings.model_copy(update={"api_secret": "wrong"}))
    try:
        await other.fetch_balance()
    finally:
        await other.close()


async def bad_api_key(ex, paper):
    other = paper_exchange_client(paper.settings.model_copy(update={"api_key": "wrong"}))
    try:
        await other.fetch_positions()
    finally:
        await other.close()


async def internal_error(ex, paper):
    paper.add_fault(path="/fapi/v1/order", status=503, code=-1001)
    await ex.create_order(BTC, "market", "buy", 0.01)


async def too_many_requests(ex, paper):
    paper.add_fault(path="/fapi/v1/order", method="POST", status=429, code=-1003)
    await ex.create_order(BTC, "market", "buy", 0.01)


# code, how to provoke it, ccxt class, failure kind (retryable = kind in RETRYABLE_KINDS)
CASES = [
    (-2019, insufficient_margin, ccxt.InsufficientFunds, FailureKind.INSUFFICIENT_FUNDS),
    (-2021, would_trigger, ccxt.OrderImmediatelyFillable, FailureKind.WOULD_TRIGGER_IMMEDIATELY),
    (-4116, duplicate_client_id, ccxt.InvalidOrder, FailureKind.DUPLICATE_CLIENT_ORDER_ID),
    (-4116, duplicate_across_algo_and_regular, ccxt.InvalidOrder,
     FailureKind.DUPLICATE_CLIENT_ORDER_ID),
    (-4164, below_min_notional, ccxt.InvalidOrder, FailureKind.BELOW_MIN_NOTIONAL),
    (-2022, reduce_only_would_increase, ccxt.InvalidOrder, FailureKind.REDUCE_ONLY_REJECTED),
    (-4006, stop_price_below_zero, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-1111, price_precision, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-1111, quantity_precision, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-4014, off_tick, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-4023, off_step, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-4120, conditional_on_order_endpoint, ccxt.InvalidOrder, FailureKind.INVALID_ORDER),
    (-2011, cancel_unknown, ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND),
    (-2011, cancel_unknown_algo, ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND),
    (-2013, fetch_unknown, ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND),
    (-2013, fetch_unknown_algo, ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND),
    (-4015, bad_client_id, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-4028, bad_leverage, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-1121, unknown_symbol, ccxt.BadSymbol, FailureKind.BAD_SYMBOL),
    (-1102, missing_parameter, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-1100, malformed_parameter, ccxt.BadRequest, FailureKind.BAD_REQUEST),
    (-5022, post_only_would_take, ccxt.OrderNotFillable, FailureKind.INVALID_ORDER),
    (-1021, stale_timestamp, ccxt.InvalidNonce, FailureKind.CLOCK_SKEW),
    (-1022, bad_signature, ccxt.AuthenticationError, FailureKind.AUTH),
    (-2015, bad_api_key, ccxt.AuthenticationError, FailureKind.AUTH),
    (-1001, internal_error, ccxt.OperationFailed, FailureKind.EXCHANGE_BUSY),
    (-1003, too_many_requests, ccxt.DDoSProtection, FailureKind.RATE_LIMITED),
]


@pytest.mark.parametrize("code,provoke,ccxt_class,kind", CASES,
                         ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
async def test_error_arrives_as_the_right_ccxt_exception_and_kind(
        exchange, paper, code, provoke, ccxt_class, kind):
    paper.set_price("BTCUSDT", 63000)
    with pytest.raises(ccxt.BaseError) as info:
        await provoke(exchange, paper)
    assert isinstance(info.value, ccxt_class), f"{code} arrived as {type(info.value).__name__}"
    failure = classify_exchange_error(info.value)
    assert failure.code == code
    assert failure.kind is kind
    retryable = kind in {FailureKind.CLOCK_SKEW, FailureKind.EXCHANGE_BUSY,
                         FailureKind.RATE_LIMITED, FailureKind.NETWORK, FailureKind.TIMEOUT}
    assert failure.retryable is retryable


async def test_margin_mode_is_isolated_already(exchange):
    with pytest.raises(ccxt.MarginModeAlreadySet):
        await exchange.set_margin_mode("isolated", BTC)


async def test_rejected_order_requests_are_audited_with_their_code(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    with pytest.raises(ccxt.InvalidOrder):
        await exchange.create_order(BTC, "market", "buy", 0.001, params={"clientOrderId": "tiny"})
    [line] = paper.audit(client_id="tiny")
    assert (line["result"], line["code"], line["path"]) == ("rejected", -4164, "/fapi/v1/order")
    # A rejected request does not use up its client id.
    order = await exchange.create_order(BTC, "market", "buy", 0.01,
                                        params={"clientOrderId": "tiny"})
    assert order["status"] == "closed"
