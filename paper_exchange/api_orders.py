"""Order endpoints: regular orders (/fapi/v1/order) and conditional ones (/fapi/v1/algoOrder).

Every order request is audited: accepted / filled / expired / canceled, or rejected with the
Binance code (app.py audits rejections, including ones raised before the handler ran).

Client ids follow `QT_PAPER_CLIENT_ID_REUSE` (engine.py `_check_client_id`): by default, as on
Binance, unique among open orders only, so one id may name several orders over time. A query or
cancel by `origClientOrderId` / `clientAlgoId` then means the most recent order with that id on
the symbol (Binance documents no choice; the newest is the only one that can still be open).
"""

from __future__ import annotations

from paper_exchange import shapes
from paper_exchange.api import Call, route, window
from paper_exchange.errors import BinanceError
from paper_exchange.order_params import parse_new_algo_order, parse_new_order

CANCEL_ALL_DONE = {"code": 200, "msg": "The operation of cancel all open order is done."}
EITHER_ID = "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
EITHER_ALGO_ID = "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!"


def _ids(call: Call, id_name: str, client_name: str, message: str) -> tuple[int | None, str | None]:
    order_id = call.int_param(id_name)
    client_id = call.params.get(client_name) or None
    if order_id is None and client_id is None:
        raise BinanceError(-1102, msg=message)
    return order_id, client_id


# -- regular orders -----------------------------------------------------------------------------


@route("POST", "/fapi/v1/order", private=True, audited=True)
def new_order(call: Call):
    req = parse_new_order(call.params, call.svc.markets)
    order = call.engine.place_order(req, call.now, call.svc.settings.client_id_reuse)
    result = {"FILLED": "filled", "NEW": "accepted"}.get(order.status, order.status.lower())
    call.audit(result, symbol=order.symbol, side=order.side, type=order.type,
               client_id=order.client_id, order_id=order.order_id,
               extra={"avgPrice": str(order.avg_price),
                      "executedQty": call.svc.markets[order.symbol].fmt_qty(order.executed)})
    return shapes.order(order, call.svc.markets[order.symbol],
                        ack=req.response_type == "ACK")


@route("GET", "/fapi/v1/order", private=True)
def query_order(call: Call):
    market = call.market()
    order_id, client_id = _ids(call, "orderId", "origClientOrderId", EITHER_ID)
    order = call.engine.find_order(market.symbol, order_id, client_id)
    if order is None:
        raise BinanceError(-2013)
    return shapes.order(order, market, query=True)


@route("DELETE", "/fapi/v1/order", private=True, audited=True)
def cancel_order(call: Call):
    market = call.market()
    order_id, client_id = _ids(call, "orderId", "origClientOrderId", EITHER_ID)
    order = call.engine.cancel_order(market.symbol, order_id, client_id, call.now)
    call.audit("canceled", symbol=order.symbol, side=order.side, type=order.type,
               client_id=order.client_id, order_id=order.order_id)
    return shapes.order(order, market)


@route("GET", "/fapi/v1/openOrder", private=True)
def query_open_order(call: Call):
    market = call.market()
    order_id, client_id = _ids(call, "orderId", "origClientOrderId", EITHER_ID)
    order = call.engine.find_order(market.symbol, order_id, client_id)
    if order is None or not order.is_open:
        raise BinanceError(-2013)
    return shapes.order(order, market, query=True)


@route("GET", "/fapi/v1/openOrders", private=True)
def open_orders(call: Call):
    market = call.optional_market()
    engine = call.engine
    symbols = [market.symbol] if market else engine.symbols
    return [shapes.order(o, engine.markets[s], query=True)
            for s in symbols for o in sorted(engine.open_orders[s].values(),
                                             key=lambda o: o.order_id)]


@route("GET", "/fapi/v1/allOrders", private=True)
def all_orders(call: Call):
    market = call.market()
    from_id = call.int_param("orderId")
    orders = [o for o in call.engine.orders.values() if o.symbol == market.symbol
              and (from_id is None or o.order_id >= from_id)]
    orders.sort(key=lambda o: o.order_id)
    selected = window(call, orders, lambda o: o.time, 500, 1000)
    return [shapes.order(o, market, query=True) for o in selected]


@route("DELETE", "/fapi/v1/allOpenOrders", private=True, audited=True)
def cancel_all_open_orders(call: Call):
    market = call.market()
    for order in call.engine.cancel_all(market.symbol, call.now):
        call.audit("canceled", symbol=order.symbol, side=order.side, type=order.type,
                   client_id=order.client_id, order_id=order.order_id)
    return CANCEL_ALL_DONE


# -- conditional (algo) orders ------------------------------------------------------------------


@route("POST", "/fapi/v1/algoOrder", private=True, audited=True)
def new_algo_order(call: Call):
    req = parse_new_algo_order(call.params, call.svc.markets)
    algo = call.engine.place_algo_order(req, call.now, call.svc.settings.client_id_reuse)
    call.audit("accepted", symbol=algo.symbol, side=algo.side, type=algo.order_type,
               client_id=algo.client_id, algo_id=algo.algo_id)
    return shapes.algo_order(algo, call.svc.markets[algo.symbol])


@route("GET", "/fapi/v1/algoOrder", private=True)
def query_algo_order(call: Call):
    market = call.market()
    algo_id, client_id = _ids(call, "algoId", "clientAlgoId", EITHER_ALGO_ID)
    algo = call.engine.find_algo(market.symbol, algo_id, client_id)
    if algo is None:
        raise BinanceError(-2013)
    return shapes.algo_order(algo, market)


@route("DELETE", "/fapi/v1/algoOrder", private=True, audited=True)
def cancel_algo_order(call: Call):
    market = call.market()
    algo_id, client_id = _ids(call, "algoId", "clientAlgoId", EITHER_ALGO_ID)
    algo = call.engine.cancel_algo_order(market.symbol, algo_id, client_id, call.now)
    call.audit("canceled", symbol=algo.symbol, side=algo.side, type=algo.order_type,
               client_id=algo.client_id, algo_id=algo.algo_id)
    return shapes.algo_cancel(algo)


@route("GET", "/fapi/v1/openAlgoOrders", private=True)
def open_algo_orders(call: Call):
    market = call.optional_market()
    engine = call.engine
    symbols = [market.symbol] if market else engine.symbols
    return [shapes.algo_order(a, engine.markets[s])
            for s in symbols for a in sorted(engine.open_algos[s].values(),
                                             key=lambda a: a.algo_id)]


@route("GET", "/fapi/v1/allAlgoOrders", private=True)
def all_algo_orders(call: Call):
    market = call.market()
    algos = sorted((a for a in call.engine.algos.values() if a.symbol == market.symbol),
                   key=lambda a: a.algo_id)
    selected = window(call, algos, lambda a: a.create_time, 500, 1000)
    return [shapes.algo_order(a, market) for a in selected]


@route("DELETE", "/fapi/v1/algoOpenOrders", private=True, audited=True)
def cancel_all_algo_orders(call: Call):
    market = call.market()
    for algo in call.engine.cancel_all_algo_orders(market.symbol, call.now):
        call.audit("canceled", symbol=algo.symbol, side=algo.side, type=algo.order_type,
                   client_id=algo.client_id, algo_id=algo.algo_id)
    return CANCEL_ALL_DONE


# -- fills --------------------------------------------------------------------------------------


@route("GET", "/fapi/v1/userTrades", private=True)
def user_trades(call: Call):
    market = call.market()
    order_id = call.int_param("orderId")
    from_id = call.int_param("fromId")
    trades = [t for t in call.engine.trades if t.symbol == market.symbol
              and (order_id is None or t.order_id == order_id)
              and (from_id is None or t.trade_id >= from_id)]
    selected = window(call, trades, lambda t: t.time, 500, 1000)
    return [shapes.trade(t, market) for t in selected]
