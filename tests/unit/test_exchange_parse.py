"""ccxt's dicts → typed records (`exchange/parse.py`): Binance's raw strings win (exact, signed),
ccxt's unified fields are the fallback, and flat or empty entries are dropped."""

from __future__ import annotations

from decimal import Decimal as D

from exchange.parse import (balance_of, fill_of, funding_rates_of, last_price, order_of, position_of, positions_of,
                            symbol_filters, ticks_of, to_decimal)

SHORT = {  # ccxt's fetch_positions entry for a Binance short (positionRisk v2)
    "symbol": "ETH/USDT:USDT", "contracts": 0.5, "side": "short", "markPrice": 3399.0, "leverage": 10.0,
    "marginMode": "cross", "entryPrice": 3400.0, "unrealizedPnl": 0.5, "liquidationPrice": 4000.0,
    "info": {"symbol": "ETHUSDT", "positionAmt": "-0.500", "entryPrice": "3400.00", "markPrice": "3399.10",
             "unRealizedProfit": "0.45000000", "liquidationPrice": "3995.12", "leverage": "10",
             "notional": "-1699.55", "marginType": "cross"},
}


def test_a_short_position_is_signed_exact_and_its_notional_unsigned():
    p = position_of(SHORT)
    assert (p.symbol, p.quantity, p.side, p.notional) == ("ETHUSDT", D("-0.500"), "SHORT", D("1699.55"))
    assert (p.entry_price, p.mark_price, p.liquidation_price) == (D("3400.00"), D("3399.10"), D("3995.12"))
    assert (p.leverage, p.margin_mode, p.unrealized_pnl) == (10, "cross", D("0.45000000"))


def test_without_binance_fields_ccxts_unified_ones_are_used_and_flat_entries_dropped():
    unified = {k: v for k, v in SHORT.items() if k != "info"}
    p = position_of(unified)
    assert p.quantity == D("-0.5") and p.notional == D("1699.5") and p.symbol == "ETH/USDT:USDT"
    flat = {"symbol": "BTC/USDT:USDT", "contracts": 0, "info": {"symbol": "BTCUSDT", "positionAmt": "0.000"}}
    assert position_of(flat) is None
    assert [x.symbol for x in positions_of([flat, SHORT])] == ["ETHUSDT"]


def test_balance_last_price_and_filters():
    balance = balance_of({"USDT": {"free": 1}, "info": {"totalWalletBalance": "10000.00", "availableBalance": "9800.5",
                                                         "totalMarginBalance": "10001.25",
                                                         "totalUnrealizedProfit": "1.25"}})
    assert (balance.wallet_balance, balance.available_balance, balance.margin_balance, balance.unrealized_pnl) == (
        D("10000.00"), D("9800.5"), D("10001.25"), D("1.25"))
    assert balance_of({}).wallet_balance is None
    assert last_price({"last": 63000.1, "info": {"lastPrice": "63000.10"}}) == D("63000.10")
    assert last_price({"last": 2.5}) == D("2.5")
    market = {"info": {"filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                                   {"filterType": "LOT_SIZE", "stepSize": "0.001"}]}}
    assert symbol_filters(market)["LOT_SIZE"]["stepSize"] == "0.001" and symbol_filters({}) == {}
    assert to_decimal("") is None and to_decimal(None) is None and to_decimal("0.1") == D("0.1")


def test_an_algo_stop_and_a_plain_order():
    algo = {"id": "9001", "clientOrderId": None, "type": "stop_market", "status": None, "amount": 0.5,
            "reduceOnly": True, "timestamp": 1_700_000_000_000,
            "info": {"algoId": 9001, "clientAlgoId": "trade-x.ab12cd-stop-1", "orderType": "STOP_MARKET",
                     "algoStatus": "TRIGGERED", "side": "BUY", "quantity": "0.500", "triggerPrice": "3468.00",
                     "actualOrderId": "777"}}
    stop = order_of(algo, "ETHUSDT", conditional=True)
    assert (stop.client_order_id, stop.type, stop.status, stop.exchange_status) == (
        "trade-x.ab12cd-stop-1", "STOP_MARKET", "closed", "TRIGGERED")  # ccxt leaves TRIGGERED unmapped
    assert (stop.quantity, stop.filled, stop.trigger_price, stop.triggered_order_id, stop.reduce_only) == (
        D("0.500"), D(0), D("3468.00"), "777", True)
    plain = {"id": "12", "clientOrderId": "trade-x.ab12cd-entry", "status": "closed", "amount": 0.5, "filled": 0.5,
             "info": {"type": "MARKET", "status": "FILLED", "side": "SELL", "origQty": "0.500",
                      "executedQty": "0.500", "avgPrice": "3400.00", "price": "0", "updateTime": 1_700_000_000_100}}
    entry = order_of(plain, "ETHUSDT", conditional=False)
    assert (entry.status, entry.exchange_status, entry.filled, entry.average_price, entry.price, entry.time_ms) == (
        "closed", "FILLED", D("0.500"), D("3400.00"), None, 1_700_000_000_100)  # "0" = no limit price


def test_a_fill_names_its_order_by_client_id_only_when_known():
    trade = {"id": "t1", "order": "12", "price": 3400.0, "amount": 0.5, "timestamp": 1_700_000_000_100,
             "fee": {"cost": 0.68, "currency": "USDT"},
             "info": {"id": "t1", "orderId": "12", "side": "SELL", "price": "3400.00", "qty": "0.500",
                      "commission": "0.68000000", "commissionAsset": "USDT", "realizedPnl": "0", "time": "1700000000100"}}
    fill = fill_of(trade, {"12": "trade-x.ab12cd-entry"})
    assert (fill.client_order_id, fill.price, fill.quantity, fill.fee, fill.time_ms) == (
        "trade-x.ab12cd-entry", D("3400.00"), D("0.500"), D("0.68000000"), 1_700_000_000_100)
    assert fill_of(trade, {}).client_order_id is None


def test_ticks_and_funding_rates_skip_entries_without_a_value():
    prices = {"BTC/USDT:USDT": {"info": {"symbol": "BTCUSDT", "price": "63000.10", "time": 1_700_000_000_000}},
              "ETH/USDT:USDT": {"info": {"symbol": "ETHUSDT", "price": ""}},
              "XRP/USDT:USDT": {"timestamp": None, "info": {"symbol": "XRPUSDT", "price": "2.0000"}}}
    books = {"BTC/USDT:USDT": {"info": {"symbol": "BTCUSDT", "bidPrice": "63000.00", "askPrice": "63000.20"}}}
    ticks = {t.symbol: t for t in ticks_of(prices, books)}
    assert set(ticks) == {"BTCUSDT", "XRPUSDT"}
    assert (ticks["BTCUSDT"].price, ticks["BTCUSDT"].bid, ticks["BTCUSDT"].ask, ticks["BTCUSDT"].time_ms) == (
        D("63000.10"), D("63000.00"), D("63000.20"), 1_700_000_000_000)
    assert ticks["XRPUSDT"].time_ms is None and ticks["XRPUSDT"].bid is None  # the caller asks the clock
    rates = funding_rates_of({"BTC/USDT:USDT": {"info": {"symbol": "BTCUSDT", "lastFundingRate": "0.00010000",
                                                          "nextFundingTime": 1_700_006_400_000}},
                              "ETH/USDT:USDT": {"fundingRate": None, "info": {"symbol": "ETHUSDT"}}})
    assert [(r.symbol, r.rate, r.next_funding_ms) for r in rates] == [("BTCUSDT", D("0.00010000"), 1_700_006_400_000)]


def test_only_wanted_symbols_are_parsed_and_a_garbled_entry_is_skipped_not_fatal():
    prices = {"A": {"info": {"symbol": "BTCUSDT", "price": "63000.10"}},
              "B": {"info": {"symbol": "JUNKUSDT", "price": "not-a-number"}},
              "C": {"info": {"symbol": "ETHUSDT", "price": "nan"}}}
    assert [t.symbol for t in ticks_of(prices)] == ["BTCUSDT"]
    assert ticks_of(prices, symbols={"ETHUSDT"}) == []
    rates = {"A": {"info": {"symbol": "BTCUSDT", "lastFundingRate": "0.00000000"}},
             "B": {"info": {"symbol": "XRPUSDT", "lastFundingRate": "x"}}}
    assert [(r.symbol, format(r.rate, "f")) for r in funding_rates_of(rates)] == [("BTCUSDT", "0.00000000")]
    assert funding_rates_of(rates, symbols=["XRPUSDT"]) == []


def test_portfolio_margins_leverage_0_is_unknown_not_zero():
    raw = {**SHORT, "leverage": None, "info": {**SHORT["info"], "leverage": "0"}}
    assert position_of(raw).leverage is None
