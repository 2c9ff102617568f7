"""Public market-data endpoints: served from the replay at the market clock.

A pinned price (/_paper/price) is the last price everywhere (ticker, ticker/price, bookTicker,
premiumIndex, fills) but klines stay the replay's candles: a pin is a test override of the
live price, not market history.
"""

from __future__ import annotations

from paper_exchange import shapes
from paper_exchange.api import Call, route, window
from paper_exchange.errors import BinanceError
from paper_exchange.replay import FUNDING_INTERVAL_MS, INTERVAL_MS, klines, round_half_up


@route("GET", "/fapi/v1/ping")
def ping(call: Call):
    return {}


@route("GET", "/fapi/v1/time")
def server_time(call: Call):
    return {"serverTime": call.now}


@route("GET", "/fapi/v1/exchangeInfo")
def exchange_info(call: Call):
    return shapes.exchange_info(call.svc.markets, call.now, call.svc.epoch)


def _klines(call: Call, symbol_param: str = "symbol"):
    if symbol_param != "symbol":
        call.params.setdefault("symbol", call.params.get(symbol_param, ""))
    market = call.market()
    interval = call.params.get("interval")
    if not interval:
        raise BinanceError(-1102, "interval")
    if interval not in INTERVAL_MS:
        raise BinanceError(-1120)
    limit = call.limit(500, 1500)
    rows = klines(call.svc.paths[market.symbol], interval, call.now,
                  call.int_param("startTime"), call.int_param("endTime"), limit)
    return [shapes.kline_row(market, row) for row in rows]


@route("GET", "/fapi/v1/klines")
def get_klines(call: Call):
    return _klines(call)


@route("GET", "/fapi/v1/markPriceKlines")
def mark_price_klines(call: Call):
    return _klines(call)  # mark price = last price on the paper exchange


@route("GET", "/fapi/v1/indexPriceKlines")
def index_price_klines(call: Call):
    return _klines(call, "pair")


def _per_symbol(call: Call, one):
    market = call.optional_market()
    if market is not None:
        return one(call.engine, market.symbol, call.now)
    return [one(call.engine, s, call.now) for s in call.engine.symbols]


@route("GET", "/fapi/v1/ticker/24hr")
def ticker_24hr(call: Call):
    return _per_symbol(call, lambda e, s, now: shapes.ticker_24h(e, call.svc.paths[s], s, now))


@route("GET", "/fapi/v1/ticker/price")
def ticker_price(call: Call):
    return _per_symbol(call, shapes.ticker_price)


@route("GET", "/fapi/v2/ticker/price")
def ticker_price_v2(call: Call):
    return _per_symbol(call, shapes.ticker_price)


@route("GET", "/fapi/v1/ticker/bookTicker")
def book_ticker(call: Call):
    return _per_symbol(call, shapes.book_ticker)


@route("GET", "/fapi/v1/premiumIndex")
def premium_index(call: Call):
    return _per_symbol(call, shapes.premium_index)


@route("GET", "/fapi/v1/fundingRate")
def funding_rate_history(call: Call):
    """Past funding events (every 8 h since the replay began)."""
    engine, svc = call.engine, call.svc
    markets = [call.market()] if call.params.get("symbol") else list(svc.markets.values())
    first = (svc.epoch // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
    times = list(range(first, call.now + 1, FUNDING_INTERVAL_MS))
    rows = []
    for t in times:
        for m in markets:
            price = round_half_up(svc.paths[m.symbol].price_at(t))
            rows.append({"symbol": m.symbol, "fundingTime": t,
                         "fundingRate": f"{engine.funding[m.symbol].rate_at(t):.8f}",
                         "markPrice": m.fmt_price(price)})
    return window(call, rows, lambda r: r["fundingTime"], 100, 1000)
