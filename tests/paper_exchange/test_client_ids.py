"""Client order ids as Binance treats them, over HTTP through ccxt.

Binance's USD-M docs define `newClientOrderId` and `clientAlgoId` as "a unique id among open
orders": -4116 only while an order with the id is open; once it filled, was cancelled or
expired, the same id makes a new order, and a look-up by the id gives the most recent one.
`QT_PAPER_CLIENT_ID_REUSE=never` keeps the stricter rule: an id is refused forever once used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio
from pydantic import ValidationError

from exchange.errors import FailureKind, classify_exchange_error
from paper_exchange.config import PaperSettings
from local_stack.paper_server import PaperServer, paper_exchange_client

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
ORDER_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")

pytestmark = pytest.mark.integration


def creates(paper: PaperServer, cid: str) -> list[str]:
    """Results of every order-create request the exchange received with this client id."""
    return [line["result"] for line in paper.audit(client_id=cid)
            if line["method"] == "POST" and line["path"] in ORDER_PATHS]


async def market_buy(ex, cid: str, qty: float = 0.01, symbol: str = BTC) -> dict:
    return await ex.create_order(symbol, "market", "buy", qty, params={"clientOrderId": cid})


async def stop(ex, cid: str, trigger: float = 61000, qty: float = 0.01) -> dict:
    return await ex.create_order(BTC, "market", "sell", qty, params={
        "triggerPrice": trigger, "reduceOnly": True, "clientOrderId": cid})


async def by_client_id(ex, cid: str, symbol: str = BTC, trigger: bool = False) -> dict:
    params = {"clientOrderId": cid, **({"trigger": True} if trigger else {})}
    return await ex.fetch_order(None, symbol, params=params)


async def contracts(ex, symbol: str = BTC) -> float:
    positions = await ex.fetch_positions([symbol])
    return positions[0]["contracts"] if positions else 0.0


def assert_duplicate(info: pytest.ExceptionInfo) -> None:
    assert isinstance(info.value, ccxt.InvalidOrder)
    assert classify_exchange_error(info.value).kind is FailureKind.DUPLICATE_CLIENT_ORDER_ID


# -- the Binance rule (default) ----------------------------------------------------------------


async def test_reuse_after_a_fill_makes_a_second_order(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    first = await market_buy(exchange, "re-1")
    second = await market_buy(exchange, "re-1")
    assert first["status"] == second["status"] == "closed" and first["id"] != second["id"]
    assert await contracts(exchange) == pytest.approx(0.02)  # filled twice: nothing forgives
    assert creates(paper, "re-1") == ["filled", "filled"]
    # The look-up by client id returns the most recent order with it.
    assert (await by_client_id(exchange, "re-1"))["id"] == second["id"]
    assert [o["id"] for o in await exchange.fetch_orders(BTC)] == [first["id"], second["id"]]


async def test_reuse_while_open_is_refused_and_after_cancel_is_a_new_order(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    resting = await exchange.create_order(BTC, "limit", "buy", 0.01, 62000,
                                          params={"clientOrderId": "bid-re"})
    for again in (lambda: exchange.create_order(BTC, "limit", "buy", 0.01, 61000,
                                                params={"clientOrderId": "bid-re"}),
                  lambda: market_buy(exchange, "bid-re"),
                  lambda: market_buy(exchange, "bid-re", qty=0.1, symbol=ETH)):  # any symbol
        with pytest.raises(ccxt.BaseError) as info:
            await again()
        assert_duplicate(info)
    assert (await by_client_id(exchange, "bid-re"))["id"] == resting["id"]

    await exchange.cancel_order(resting["id"], BTC)
    replaced = await exchange.create_order(BTC, "limit", "buy", 0.01, 61500,
                                           params={"clientOrderId": "bid-re"})
    assert replaced["id"] != resting["id"] and replaced["status"] == "open"
    newest = await by_client_id(exchange, "bid-re")
    assert (newest["id"], newest["status"], newest["price"]) == (replaced["id"], "open", 61500.0)
    assert (await exchange.fetch_order(resting["id"], BTC))["status"] == "canceled"
    assert creates(paper, "bid-re") == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    # Cancelling by client id means the newest (the only open) one.
    canceled = await exchange.cancel_order(None, BTC, params={"clientOrderId": "bid-re"})
    assert canceled["id"] == replaced["id"]


async def test_reuse_after_an_expiry_makes_a_new_order(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    ioc = await exchange.create_order(BTC, "limit", "buy", 0.01, 62000,
                                      params={"clientOrderId": "ioc-re", "timeInForce": "IOC"})
    assert ioc["status"] == "expired"
    again = await market_buy(exchange, "ioc-re")
    assert again["status"] == "closed" and (await by_client_id(exchange, "ioc-re"))["id"] == \
        again["id"]


async def test_algo_order_id_reusable_once_not_open(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await exchange.set_leverage(5, BTC)  # at the default 20x, 59,500 would liquidate
    await market_buy(exchange, "algo-entry", qty=0.02)
    first = await stop(exchange, "sl-re")
    with pytest.raises(ccxt.BaseError) as info:  # open: refused, as algo or as regular order
        await stop(exchange, "sl-re", trigger=60000)
    assert_duplicate(info)
    with pytest.raises(ccxt.BaseError) as info:
        await exchange.create_order(BTC, "market", "sell", 0.01,
                                    params={"clientOrderId": "sl-re", "reduceOnly": True})
    assert_duplicate(info)

    await exchange.cancel_order(first["id"], BTC, params={"trigger": True})
    second = await stop(exchange, "sl-re", trigger=60000)
    assert second["id"] != first["id"]
    newest = await by_client_id(exchange, "sl-re", trigger=True)
    assert (newest["id"], newest["status"], newest["triggerPrice"]) == (second["id"], "open",
                                                                         60000.0)

    # Triggered: the stop is finished and its market order carries the stop's client id.
    paper.set_price("BTCUSDT", 59500)
    fired = await by_client_id(exchange, "sl-re", trigger=True)
    assert fired["id"] == second["id"] and fired["info"]["algoStatus"] == "FINISHED"
    market_order = await by_client_id(exchange, "sl-re")
    assert market_order["id"] == fired["info"]["actualOrderId"]
    assert market_order["info"]["origType"] == "STOP_MARKET" and market_order["filled"] == 0.01
    # ... and once triggered the id is free again, for a stop or a regular order.
    third = await stop(exchange, "sl-re", trigger=58000)
    assert (await by_client_id(exchange, "sl-re", trigger=True))["id"] == third["id"]
    assert creates(paper, "sl-re") == ["accepted", "rejected", "rejected", "accepted", "accepted"]


async def test_regular_order_id_is_refused_for_an_algo_order_while_open(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await market_buy(exchange, "cross-entry")
    await exchange.create_order(BTC, "limit", "sell", 0.01, 64000,
                                params={"clientOrderId": "cross-1", "reduceOnly": True})
    with pytest.raises(ccxt.BaseError) as info:
        await stop(exchange, "cross-1")
    assert_duplicate(info)


async def test_lookup_by_client_id_is_per_symbol(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    btc = await market_buy(exchange, "both-1")
    eth = await market_buy(exchange, "both-1", qty=0.1, symbol=ETH)
    assert (await by_client_id(exchange, "both-1"))["id"] == btc["id"]
    assert (await by_client_id(exchange, "both-1", symbol=ETH))["id"] == eth["id"]


async def test_a_lost_answer_then_a_blind_resend_fills_twice(exchange, paper):
    """Why the order activities look the id up before placing: the exchange does not guard."""
    paper.set_price("BTCUSDT", 63000)
    paper.add_fault(path="/fapi/v1/order", method="POST", drop_after_accept=True)
    with pytest.raises(ccxt.NetworkError):
        await market_buy(exchange, "blind-1")
    dropped = await by_client_id(exchange, "blind-1")
    assert (dropped["status"], dropped["filled"]) == ("closed", 0.01)
    resent = await market_buy(exchange, "blind-1")
    assert resent["id"] != dropped["id"] and await contracts(exchange) == pytest.approx(0.02)
    assert creates(paper, "blind-1") == ["filled", "filled"]


async def test_restart_keeps_the_rule_and_the_newest_lookup(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await market_buy(exchange, "kr-entry", qty=0.02)
    newest_entry = await market_buy(exchange, "kr-entry")
    canceled = await exchange.create_order(BTC, "limit", "buy", 0.01, 62000,
                                           params={"clientOrderId": "kr-bid"})
    await exchange.cancel_order(canceled["id"], BTC)
    newest_bid = await exchange.create_order(BTC, "limit", "buy", 0.01, 61000,
                                             params={"clientOrderId": "kr-bid"})
    open_stop = await stop(exchange, "kr-stop")
    await exchange.close()

    paper.kill()
    paper.start()
    client = paper_exchange_client(paper.settings)
    try:
        await client.load_markets()
        assert (await by_client_id(client, "kr-entry"))["id"] == newest_entry["id"]
        assert (await by_client_id(client, "kr-bid"))["id"] == newest_bid["id"]
        assert (await by_client_id(client, "kr-stop", trigger=True))["id"] == open_stop["id"]
        for open_id in ("kr-bid", "kr-stop"):  # still open after the restart: refused
            with pytest.raises(ccxt.BaseError) as info:
                await market_buy(client, open_id)
            assert_duplicate(info)
        again = await market_buy(client, "kr-entry")  # filled before the restart: free
        assert (await by_client_id(client, "kr-entry"))["id"] == again["id"]
        assert await contracts(client) == pytest.approx(0.04)
    finally:
        await client.close()


def test_the_setting_accepts_only_the_two_rules():
    assert PaperSettings().client_id_reuse == "binance"
    assert PaperSettings(client_id_reuse="never").client_id_reuse == "never"
    with pytest.raises(ValidationError):
        PaperSettings(client_id_reuse="sometimes")


# -- the strict rule (QT_PAPER_CLIENT_ID_REUSE=never) ------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory) -> Iterator[PaperServer]:
    server = PaperServer(tmp_path_factory.mktemp("paper-strict"), client_id_reuse="never")
    server.start()
    yield server
    server.close()


@pytest.fixture
def strict(strict_server: PaperServer) -> PaperServer:
    strict_server.start()
    strict_server.reset()
    strict_server.set_price("BTCUSDT", 63000)
    return strict_server


@pytest_asyncio.fixture
async def strict_exchange(strict: PaperServer) -> AsyncIterator:
    client = paper_exchange_client(strict.settings)
    try:
        await client.load_markets()
        yield client
    finally:
        await client.close()


async def test_strict_mode_refuses_reuse_forever(strict_exchange, strict):
    ex = strict_exchange
    await market_buy(ex, "st-entry", qty=0.02)
    resting = await ex.create_order(BTC, "limit", "buy", 0.01, 62000,
                                    params={"clientOrderId": "st-bid"})
    await ex.cancel_order(resting["id"], BTC)
    first_stop = await stop(ex, "st-stop")
    await ex.cancel_order(first_stop["id"], BTC, params={"trigger": True})
    for used in ("st-entry", "st-bid", "st-stop"):  # filled, cancelled, cancelled algo
        with pytest.raises(ccxt.BaseError) as info:
            await market_buy(ex, used)
        assert_duplicate(info)
        with pytest.raises(ccxt.BaseError) as info:
            await stop(ex, used, trigger=60000)
        assert_duplicate(info)
    assert await contracts(ex) == pytest.approx(0.02)

    await ex.close()
    strict.kill()
    strict.start()
    client = paper_exchange_client(strict.settings)
    try:
        await client.load_markets()
        with pytest.raises(ccxt.BaseError) as info:  # remembered across a SIGKILL
            await market_buy(client, "st-entry")
        assert_duplicate(info)
    finally:
        await client.close()
