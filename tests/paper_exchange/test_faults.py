"""Injected faults: the network and the exchange misbehaving, orders still placed exactly once."""

from __future__ import annotations

import asyncio
import time

import ccxt.async_support as ccxt
import pytest

from exchange.errors import FailureKind, classify_exchange_error
from local_stack.paper_server import paper_exchange_client

BTC = "BTC/USDT:USDT"

pytestmark = pytest.mark.integration


def placements(paper, client_id: str) -> list[str]:
    return [line["result"] for line in paper.audit(client_id=client_id)
            if line["path"] in ("/fapi/v1/order", "/fapi/v1/algoOrder")]


async def test_drop_after_accept_places_the_order_once(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    paper.add_fault(path="/fapi/v1/order", method="POST", drop_after_accept=True)
    with pytest.raises(ccxt.NetworkError) as info:
        await exchange.create_order(BTC, "market", "buy", 0.01,
                                    params={"clientOrderId": "entry-dropped"})
    assert classify_exchange_error(info.value).retryable

    # The answer was lost, the order was not: it exists once, found by client id.
    order = await exchange.fetch_order(None, BTC, params={"clientOrderId": "entry-dropped"})
    assert (order["status"], order["filled"]) == ("closed", 0.01)
    assert placements(paper, "entry-dropped") == ["filled"]
    [position] = await exchange.fetch_positions([BTC])
    assert position["contracts"] == 0.01  # one fill

    # Binance's rule: a client id is unique among OPEN orders only. The market order filled, so
    # a blind resend with its id is a second order: the look-up above is the only guard.
    await exchange.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "entry-dropped"})
    assert placements(paper, "entry-dropped") == ["filled", "filled"]
    [position] = await exchange.fetch_positions([BTC])
    assert position["contracts"] == 0.02


async def test_drop_after_accept_on_a_resting_order_resend_is_refused(exchange, paper):
    """The dropped answer of an order that is still OPEN: it exists once, and the resend a
    client would send gets -4116, which tells it the order already exists."""
    paper.set_price("BTCUSDT", 63000)
    paper.add_fault(path="/fapi/v1/order", method="POST", drop_after_accept=True)
    params = {"clientOrderId": "bid-dropped"}
    with pytest.raises(ccxt.NetworkError) as info:
        await exchange.create_order(BTC, "limit", "buy", 0.01, 62000, params=params)
    assert classify_exchange_error(info.value).retryable
    order = await exchange.fetch_order(None, BTC, params=params)
    assert (order["status"], order["filled"]) == ("open", 0.0)

    with pytest.raises(ccxt.InvalidOrder) as info:
        await exchange.create_order(BTC, "limit", "buy", 0.01, 62000, params=params)
    assert classify_exchange_error(info.value).kind is FailureKind.DUPLICATE_CLIENT_ORDER_ID

    assert placements(paper, "bid-dropped") == ["accepted", "rejected"]
    assert len(await exchange.fetch_open_orders(BTC)) == 1
    await exchange.cancel_order(order["id"], BTC)


async def test_drop_after_accept_on_a_conditional_order(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await exchange.create_order(BTC, "market", "buy", 0.01)
    paper.add_fault(path="/fapi/v1/algoOrder", drop_after_accept=True)
    params = {"triggerPrice": 61000, "reduceOnly": True, "clientOrderId": "sl-dropped"}
    with pytest.raises(ccxt.NetworkError):
        await exchange.create_order(BTC, "market", "sell", 0.01, params=params)
    stop = await exchange.fetch_order(None, BTC, params={"clientOrderId": "sl-dropped",
                                                         "trigger": True})
    assert stop["status"] == "open"
    with pytest.raises(ccxt.InvalidOrder):
        await exchange.create_order(BTC, "market", "sell", 0.01, params=params)
    assert placements(paper, "sl-dropped") == ["accepted", "rejected"]
    assert len(await exchange.fetch_open_orders(BTC, params={"trigger": True})) == 1


async def test_latency_beyond_the_client_timeout_still_executes(paper):
    paper.set_price("BTCUSDT", 63000)
    client = paper_exchange_client(paper.settings, timeout=300)
    try:
        await client.load_markets()
        paper.add_fault(path="/fapi/v1/order", method="POST", latency_ms=800)
        with pytest.raises(ccxt.RequestTimeout) as info:
            await client.create_order(BTC, "market", "buy", 0.01,
                                      params={"clientOrderId": "slow-1"})
        assert classify_exchange_error(info.value).kind is FailureKind.TIMEOUT
        # The exchange is still sleeping on the request; it then places the order anyway.
        deadline = time.monotonic() + 5
        while not placements(paper, "slow-1") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert placements(paper, "slow-1") == ["filled"]
        order = await client.fetch_order(None, BTC, params={"clientOrderId": "slow-1"})
        assert order["status"] == "closed"
    finally:
        await client.close()


async def test_latency_within_the_timeout_is_just_slow(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    paper.add_fault(path="/fapi/v1/ticker/24hr", latency_ms=300)
    started = time.monotonic()
    ticker = await exchange.fetch_ticker(BTC)
    assert time.monotonic() - started >= 0.3 and ticker["last"] == 63000.0
    assert paper.http.get("/_paper/faults").json() == []  # count 1: used up


async def test_status_faults_answer_without_processing(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    paper.add_fault(path="/fapi/v1/order", status=503, code=-1001, count=2)
    for _ in range(2):
        with pytest.raises(ccxt.OperationFailed):
            await exchange.create_order(BTC, "market", "buy", 0.01,
                                        params={"clientOrderId": "busy-1"})
    order = await exchange.create_order(BTC, "market", "buy", 0.01,
                                        params={"clientOrderId": "busy-1"})
    assert order["status"] == "closed"
    assert placements(paper, "busy-1") == ["fault", "fault", "filled"]
