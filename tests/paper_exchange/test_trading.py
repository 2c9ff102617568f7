"""Trading through ccxt's real binanceusdm against the paper exchange subprocess."""

from __future__ import annotations

import pytest

from paper_exchange.config import DATA_DIR, default_symbols
from paper_exchange.replay import load_path

BTC, ETH, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"
HOUR = 3_600_000

pytestmark = pytest.mark.integration


async def test_markets_match_the_configuration(exchange, paper):
    specs = default_symbols()
    assert {m["id"] for m in exchange.markets.values()} == set(specs)
    for market in exchange.markets.values():
        spec = specs[market["id"]]
        assert market["swap"] and market["linear"] and market["settle"] == "USDT"
        assert market["precision"]["price"] == float(spec.tick_size)
        assert market["precision"]["amount"] == float(spec.step_size)
        assert market["limits"]["cost"]["min"] == float(spec.min_notional)
    paper.set_price("BTCUSDT", 63000)
    assert (await exchange.fetch_ticker(BTC))["last"] == 63000.0


async def test_market_entry_with_client_id_then_position_and_balance(exchange, paper):
    paper.set_price("BTCUSDT", 63000)  # tests start from a known price
    await exchange.set_leverage(10, BTC)
    order = await exchange.create_order(BTC, "market", "buy", 0.01,
                                        params={"clientOrderId": "entry-btc-1"})
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.01, 63000.0)
    fetched = await exchange.fetch_order(None, BTC, params={"clientOrderId": "entry-btc-1"})
    assert fetched["id"] == order["id"] and fetched["clientOrderId"] == "entry-btc-1"

    [position] = await exchange.fetch_positions([BTC])
    assert (position["side"], position["contracts"], position["entryPrice"]) == ("long", 0.01,
                                                                                 63000.0)
    assert position["marginMode"] == "isolated" and position["collateral"] == 63.0
    # (q·E − M) / (q·(1 − mmr)) with M = 630 / 10 and mmr 0.004
    assert position["liquidationPrice"] == pytest.approx((630 - 63) / (0.01 * 0.996), abs=1e-6)
    # positionRisk v3 (ccxt's default) has no leverage field, as on Binance: ask for it.
    assert position["leverage"] is None
    [v2] = await exchange.fetch_positions([BTC], params={"useV2": True})
    assert v2["leverage"] == 10
    assert (await exchange.fetch_leverage(BTC))["longLeverage"] == 10
    assert (await exchange.fetch_margin_mode(BTC))["marginMode"] == "isolated"

    balance = await exchange.fetch_balance()
    fee = 630 * 0.0004
    assert balance["USDT"]["total"] == pytest.approx(10_000 - fee)
    assert balance["USDT"]["free"] == pytest.approx(10_000 - fee - 63)
    [trade] = await exchange.fetch_my_trades(BTC)
    assert trade["fee"]["cost"] == pytest.approx(fee) and trade["takerOrMaker"] == "taker"


async def test_reduce_only_stop_and_take_profit_via_algo_endpoints(exchange, paper):
    paper.set_price("BTCUSDT", 63000)  # tests start from a known price
    await exchange.create_order(BTC, "market", "buy", 0.01)
    sl = await exchange.create_order(BTC, "market", "sell", 0.01,
                                     params={"triggerPrice": 61000, "reduceOnly": True,
                                             "clientOrderId": "sl-1"})
    tp = await exchange.create_order(BTC, "market", "sell", 0.01,
                                     params={"takeProfitPrice": 66000, "reduceOnly": True,
                                             "clientOrderId": "tp-1"})
    assert sl["info"]["orderType"] == "STOP_MARKET" and sl["info"]["algoStatus"] == "NEW"
    assert tp["info"]["orderType"] == "TAKE_PROFIT_MARKET" and tp["takeProfitPrice"] == 66000
    assert sl["reduceOnly"] is True and sl["triggerPrice"] == 61000

    trigger_orders = await exchange.fetch_open_orders(BTC, params={"trigger": True})
    assert {o["clientOrderId"] for o in trigger_orders} == {"sl-1", "tp-1"}
    assert await exchange.fetch_open_orders(BTC) == []  # no regular order rests

    fetched = await exchange.fetch_order(None, BTC, params={"clientOrderId": "tp-1",
                                                            "trigger": True})
    assert fetched["id"] == tp["id"] and fetched["status"] == "open"
    await exchange.cancel_order(tp["id"], BTC, params={"trigger": True})
    assert (await exchange.fetch_order(tp["id"], BTC, params={"trigger": True}))["status"] == \
        "canceled"

    # The stop fires when the price crosses it (pinned move through 61000).
    paper.set_price("BTCUSDT", 60500)
    fired = await exchange.fetch_order(sl["id"], BTC, params={"trigger": True})
    assert fired["status"] == "closed" and fired["info"]["algoStatus"] == "FINISHED"
    market_order = await exchange.fetch_order(fired["info"]["actualOrderId"], BTC)
    assert market_order["average"] == 61000.0 and market_order["info"]["origType"] == \
        "STOP_MARKET"
    assert await exchange.fetch_positions([BTC]) == []


def replay_path(paper, symbol: str):
    """The same path the server replays (pure, from the package data and the server's epoch)."""
    spec = paper.settings.symbols[symbol]
    return load_path(DATA_DIR, spec.candles, spec.start_price, spec.price_scale, spec.tick_size,
                     paper.clock()["epoch_ms"])


def first_crossing_below(path, level_ticks: float, start: int, end: int) -> int | None:
    """First millisecond in (start, end] at which the path is at or below the level."""
    for i in range(path.index_at(start), path.index_at(end) + 1):
        for k in range(4):
            seg = path.segment(i, k)
            if seg.t1 <= start or seg.p1 > level_ticks or seg.p0 <= level_ticks:
                continue
            t = seg.time_at((level_ticks - seg.p0) / (seg.p1 - seg.p0))
            return t if t <= end else None
    return None


async def test_stop_fires_when_the_replay_crosses_it(exchange, paper):
    now = await exchange.fetch_time()
    path = replay_path(paper, "ETHUSDT")
    tick = 0.01
    lows = [path.candle(i)[2] for i in range(path.index_at(now), path.index_at(now + HOUR))]
    current = round(path.price_at(now))
    level = (min(lows) + current) // 2  # somewhere the replay will cross in the next hour
    expected_time = first_crossing_below(path, level, now, now + HOUR)
    assert expected_time is not None

    await exchange.create_order(ETH, "market", "buy", 0.1)
    sl = await exchange.create_order(ETH, "market", "sell", 0.1,
                                     params={"triggerPrice": level * tick, "reduceOnly": True})
    paper.advance(HOUR)
    fired = await exchange.fetch_order(sl["id"], ETH, params={"trigger": True})
    assert fired["status"] == "closed"
    assert int(fired["info"]["triggerTime"]) == expected_time
    trades = await exchange.fetch_my_trades(ETH)
    assert trades[-1]["price"] == pytest.approx(level * tick) and trades[-1]["side"] == "sell"
    assert trades[-1]["timestamp"] == expected_time
    assert float(trades[-1]["info"]["realizedPnl"]) == pytest.approx((level - current) * tick * 0.1)


async def test_limit_orders_rest_fill_as_maker_and_cancel(exchange, paper):
    paper.set_price("BTCUSDT", 63000)  # tests start from a known price
    resting = await exchange.create_order(BTC, "limit", "buy", 0.01, 62000,
                                          params={"clientOrderId": "bid-1"})
    assert resting["status"] == "open"
    [listed] = await exchange.fetch_open_orders(BTC)
    assert listed["id"] == resting["id"]
    canceled = await exchange.cancel_order(None, BTC, params={"clientOrderId": "bid-1"})
    assert canceled["status"] == "canceled"

    bid = await exchange.create_order(BTC, "limit", "buy", 0.01, 62500)
    paper.set_price("BTCUSDT", 62400)
    filled = await exchange.fetch_order(bid["id"], BTC)
    assert (filled["status"], filled["average"]) == ("closed", 62500.0)
    [trade] = await exchange.fetch_my_trades(BTC)
    assert trade["takerOrMaker"] == "maker" and trade["fee"]["cost"] == pytest.approx(
        625 * 0.0002)


async def test_post_only_that_would_take_is_rejected(exchange, paper):
    paper.set_price("BTCUSDT", 63000)  # tests start from a known price
    import ccxt.async_support as ccxt

    with pytest.raises(ccxt.OrderNotFillable):
        await exchange.create_order(BTC, "limit", "buy", 0.01, 63100, params={"postOnly": True})
    ok = await exchange.create_order(BTC, "limit", "buy", 0.01, 62900, params={"postOnly": True})
    assert ok["postOnly"] is True and ok["status"] == "open"


async def test_trailing_stop(exchange, paper):
    paper.set_price("BTCUSDT", 63000)  # tests start from a known price
    await exchange.create_order(BTC, "market", "buy", 0.01)
    trail = await exchange.create_order(
        BTC, "market", "sell", 0.01,
        params={"trailingPercent": 2, "trailingTriggerPrice": 64000, "reduceOnly": True})
    assert trail["info"]["orderType"] == "TRAILING_STOP_MARKET"
    assert trail["info"]["activatePrice"] == "64000.00" and trail["info"]["callbackRate"] == "2"
    paper.set_price("BTCUSDT", 65000)  # arms at 64000, best price 65000
    paper.set_price("BTCUSDT", 63800)  # 1.8% off the best: not yet
    assert (await exchange.fetch_order(trail["id"], BTC, params={"trigger": True}))["status"] \
        == "open"
    paper.set_price("BTCUSDT", 63000)  # crosses 65000 * 0.98 = 63700
    fired = await exchange.fetch_order(trail["id"], BTC, params={"trigger": True})
    assert fired["status"] == "closed" and fired["info"]["actualPrice"] == "63700.00"


async def test_funding_is_applied_every_eight_hours_of_market_time(exchange, paper):
    paper.set_price("XRPUSDT", "1.0000")
    paper.set_price("ETHUSDT", "3400")
    await exchange.create_order(XRP, "market", "buy", 1000)  # long 1000 USDT
    await exchange.create_order(ETH, "market", "sell", 0.5)  # short
    now = await exchange.fetch_time()
    next_funding = (now // (8 * HOUR) + 1) * 8 * HOUR
    paper.advance(next_funding - now - 1)
    assert await exchange.fetch_funding_history() == []
    paper.advance(1)
    income = await exchange.fetch_funding_history()
    by_symbol = {i["symbol"]: i["amount"] for i in income}
    [event] = await exchange.fetch_funding_rate_history(XRP, since=next_funding)
    assert event["timestamp"] == next_funding
    assert by_symbol[XRP] == pytest.approx(-1000 * event["fundingRate"])  # the long pays
    assert by_symbol[ETH] > 0  # the short receives
    assert all(i["timestamp"] == next_funding for i in income)


async def test_klines_and_tickers_come_from_the_replay(exchange, paper):
    paper.advance(HOUR)
    now = await exchange.fetch_time()
    candles = await exchange.fetch_ohlcv(ETH, "5m", limit=13)
    assert candles[-1][0] == now - now % 300_000  # the current, partial candle
    assert [c[0] for c in candles[:-1]] == [candles[0][0] + 300_000 * i for i in range(12)]
    path = replay_path(paper, "ETHUSDT")
    for candle in candles[:-1]:  # complete candles are the replay's, price for price
        o, h, low, c, _ = path.candle(path.index_at(candle[0]))
        assert candle[1:5] == [round(x * 0.01, 2) for x in (o, h, low, c)]
    ticker = await exchange.fetch_ticker(ETH)
    assert ticker["last"] == candles[-1][4] and ticker["timestamp"] == now
    next_funding = (now // (8 * HOUR) + 1) * 8 * HOUR  # 00:00, 08:00, 16:00 UTC
    assert (await exchange.fetch_funding_rate(ETH))["fundingTimestamp"] == next_funding


async def test_liquidation_through_ccxt(exchange, paper):
    paper.set_price("BTCUSDT", 63000)  # tests start from a known price
    await exchange.set_leverage(50, BTC)
    await exchange.create_order(BTC, "market", "buy", 0.01)
    [position] = await exchange.fetch_positions([BTC])
    liq = position["liquidationPrice"]
    assert 61_000 < liq < 63_000
    paper.set_price("BTCUSDT", 61_000)
    assert await exchange.fetch_positions([BTC]) == []
    balance = await exchange.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(10_000 - 630 * 0.0004 - 630 / 50)
    events = [e["result"] for e in paper.audit(symbol="BTCUSDT")]
    assert "liquidated" in events


async def test_income_has_commission_and_realized_pnl(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await exchange.create_order(BTC, "market", "buy", 0.01)
    paper.set_price("BTCUSDT", 63500)
    await exchange.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    income = await exchange.fapiPrivateGetIncome({"symbol": "BTCUSDT"})
    kinds = [(i["incomeType"], i["income"]) for i in income]
    assert kinds == [("COMMISSION", "-0.25200000"), ("REALIZED_PNL", "5.00000000"),
                     ("COMMISSION", "-0.25400000")]
    trades = await exchange.fetch_my_trades(BTC)
    assert [t["info"]["realizedPnl"] for t in trades] == ["0.00000000", "5.00000000"]


async def test_cancel_all_regular_and_trigger_orders(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await exchange.create_order(BTC, "limit", "buy", 0.01, 60000)
    await exchange.create_order(BTC, "limit", "buy", 0.01, 60100)
    await exchange.create_order(BTC, "market", "buy", 0.01)
    await exchange.create_order(BTC, "market", "sell", 0.01, params={"triggerPrice": 60000,
                                                                     "reduceOnly": True})
    await exchange.cancel_all_orders(BTC)
    assert await exchange.fetch_open_orders(BTC) == []
    assert len(await exchange.fetch_open_orders(BTC, params={"trigger": True})) == 1
    await exchange.cancel_all_orders(BTC, params={"trigger": True})
    assert await exchange.fetch_open_orders(BTC, params={"trigger": True}) == []
    results = [line["result"] for line in paper.audit(symbol="BTCUSDT")]
    assert results.count("canceled") == 3


async def test_close_position_stop_closes_whatever_is_open(exchange, paper):
    paper.set_price("BTCUSDT", 63000)
    await exchange.create_order(BTC, "market", "buy", 0.03)
    stop = await exchange.create_order(BTC, "market", "sell", None, params={
        "triggerPrice": 62000, "closePosition": True})
    assert stop["info"]["closePosition"] is True and stop["info"]["quantity"] == "0.000"
    await exchange.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    paper.set_price("BTCUSDT", 61900)
    fired = await exchange.fetch_order(stop["id"], BTC, params={"trigger": True})
    closing = await exchange.fetch_order(fired["info"]["actualOrderId"], BTC)
    assert (closing["filled"], closing["average"]) == (0.02, 62000.0)
    assert await exchange.fetch_positions([BTC]) == []
