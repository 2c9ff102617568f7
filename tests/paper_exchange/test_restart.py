"""State survives a SIGKILL of the paper exchange (and a clean stop)."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from local_stack.paper_server import paper_exchange_client

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"

pytestmark = pytest.mark.integration


async def test_sigkill_right_after_responses_loses_nothing(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await exchange.set_leverage(10, BTC)
    await exchange.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "k-entry"})
    await exchange.create_order(BTC, "market", "sell", 0.02, params={
        "triggerPrice": 61000, "reduceOnly": True, "clientOrderId": "k-stop"})
    await exchange.create_order(BTC, "market", "sell", 0.02, params={
        "trailingPercent": 1, "trailingTriggerPrice": 64000, "reduceOnly": True,
        "clientOrderId": "k-trail"})
    paper.set_price("BTCUSDT", 64500)  # arms the trailing stop; best price 64500
    await exchange.create_order(ETH, "limit", "buy", 0.1, 3000, params={"clientOrderId": "k-bid"})
    market_time = await exchange.fetch_time()
    balance = (await exchange.fetch_balance())["USDT"]
    await exchange.close()

    paper.kill()  # no shutdown hook runs
    paper.start()

    client = paper_exchange_client(paper.settings)
    try:
        await client.load_markets()
        assert await client.fetch_time() == market_time  # speed 0: the clock did not move
        [position] = await client.fetch_positions([BTC])
        assert (position["contracts"], position["entryPrice"]) == (0.02, 63000.0)
        assert position["initialMargin"] == pytest.approx(64500 * 0.02 / 10)
        assert (await client.fetch_balance())["USDT"] == balance
        stops = await client.fetch_open_orders(BTC, params={"trigger": True})
        assert {o["clientOrderId"] for o in stops} == {"k-stop", "k-trail"}
        [bid] = await client.fetch_open_orders(ETH)
        assert bid["clientOrderId"] == "k-bid"
        assert (await client.fetch_ticker(BTC))["last"] == 64500.0  # the pin survived

        for in_use in ("k-stop", "k-bid"):  # ids of open orders are still taken
            with pytest.raises(ccxt.InvalidOrder, match="-4116"):
                await client.create_order(BTC, "market", "buy", 0.01,
                                          params={"clientOrderId": in_use})

        # The trailing stop kept its best price (64500): 1% below is 63855.
        paper.set_price("BTCUSDT", 63800)
        trail = await client.fetch_order(None, BTC, params={"clientOrderId": "k-trail",
                                                           "trigger": True})
        assert trail["status"] == "closed" and trail["info"]["actualPrice"] == "63855.00"
        stop = await client.fetch_order(None, BTC, params={"clientOrderId": "k-stop",
                                                          "trigger": True})
        assert stop["status"] == "open"  # it now has nothing left to reduce

        # k-entry filled before the restart: as on Binance its id makes a new order.
        again = await client.create_order(BTC, "market", "buy", 0.01,
                                          params={"clientOrderId": "k-entry"})
        fetched = await client.fetch_order(None, BTC, params={"clientOrderId": "k-entry"})
        assert fetched["id"] == again["id"] and fetched["filled"] == 0.01
    finally:
        await client.close()


async def test_the_replay_catches_up_after_a_restart(exchange, paper):
    await exchange.create_order(ETH, "market", "buy", 0.1)
    await exchange.close()
    before = paper.clock()
    paper.stop()  # clean SIGTERM shutdown
    paper.start()
    paper.advance(3_600_000)
    client = paper_exchange_client(paper.settings)
    try:
        await client.load_markets()
        assert await client.fetch_time() == before["market_ms"] + 3_600_000
        [position] = await client.fetch_positions([ETH])
        assert position["contracts"] == 0.1
        assert (await client.fetch_ticker(ETH))["timestamp"] == before["market_ms"] + 3_600_000
    finally:
        await client.close()


def test_explicit_speed_on_restart_changes_pace_but_keeps_market_time(tmp_path):
    """QT_PAPER_SPEED set on a restart applies; without it the saved speed is kept."""
    from paper_exchange.config import PaperSettings
    from paper_exchange.service import PaperExchange

    first = PaperExchange(PaperSettings(data_dir=tmp_path, speed=0, start_ms=1_735_689_600_000))
    market_before = first.now()
    first.close()

    sped_up = PaperExchange(PaperSettings(data_dir=tmp_path, speed=50))
    assert sped_up.clock.speed == 50
    assert sped_up.now() >= market_before  # market time continues, never jumps back
    sped_up.close()

    unchanged = PaperExchange(PaperSettings(data_dir=tmp_path))  # speed not given
    assert unchanged.clock.speed == 50
    unchanged.close()
