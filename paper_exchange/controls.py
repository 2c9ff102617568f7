"""Test controls under /_paper/ (JSON in, JSON out; no signature: local use only).

- POST   /_paper/price            {"symbol": "BTCUSDT", "price": 61234.5}  pin the price; matching
                                  runs along the straight move from the current price
- DELETE /_paper/price/{symbol}   release the pin; matching runs along the move back to the replay
- GET    /_paper/clock            {"market_ms", "wall_ms", "speed", "epoch_ms", "processed_ms"}
- POST   /_paper/clock            {"advance_ms": N} | {"to_ms": T} | {"speed": X} (combinable
                                  with speed); matching and funding run through the jump
- GET/POST/DELETE /_paper/faults  list / add (see faults.py) / clear fault injections
- GET    /_paper/orders           audit log of order requests and trigger/liquidation events;
                                  filters: ?clientOrderId=…&symbol=…
- POST   /_paper/reset            initial account: no positions, orders, fills, audit, used client
                                  ids, pins or faults, initial balance; the clock is kept
- GET    /_paper/state            balances, positions, open orders, pins, clock
Errors: HTTP 400 {"error": "..."}.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from aiohttp import web

from paper_exchange import shapes
from paper_exchange.faults import FaultRule
from paper_exchange.service import PaperExchange, wall_ms


def _error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    data = await request.json()
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _clock(svc: PaperExchange) -> dict:
    wall = wall_ms()
    return {"market_ms": svc.now(wall), "wall_ms": wall, "speed": svc.clock.speed,
            "epoch_ms": svc.epoch, "processed_ms": svc.engine.processed_ms}


def _state(svc: PaperExchange) -> dict:
    engine = svc.engine
    views = shapes.views(engine)
    return {
        "clock": _clock(svc),
        "balance": shapes.usdt_asset(engine, views),
        "positions": [v.risk_v2() for v in views if v.position.qty],
        "open_orders": [shapes.order(o, engine.markets[s], query=True)
                        for s in engine.symbols for o in engine.open_orders[s].values()],
        "open_algo_orders": [shapes.algo_order(a, engine.markets[s])
                             for s in engine.symbols for a in engine.open_algos[s].values()],
        "prices": {s: engine.markets[s].fmt_price(engine.price_ticks(s)) for s in engine.symbols},
        "pins": {s: engine.markets[s].fmt_price(t) for s, t in engine.pins.items()},
    }


def add_routes(app: web.Application, service_key, faults_key) -> None:
    def svc_of(request: web.Request) -> PaperExchange:
        return request.app[service_key]

    async def set_price(request: web.Request) -> web.Response:
        svc = svc_of(request)
        try:
            data = await _body(request)
            symbol = str(data.get("symbol", "")).upper()
            market = svc.markets.get(symbol)
            if market is None:
                return _error(f"unknown symbol {symbol!r}")
            price = Decimal(str(data["price"]))
        except (ValueError, KeyError, InvalidOperation) as exc:
            return _error(f"bad request: {exc}")
        ticks = int((price / market.tick).to_integral_value())
        if ticks < 1:
            return _error("price must be at least one tick")
        now = svc.sync()
        svc.engine.pin(symbol, ticks, now)
        svc.flush(force=True)
        return web.json_response({"symbol": symbol, "price": market.fmt_price(ticks),
                                  "market_ms": now})

    async def release_price(request: web.Request) -> web.Response:
        svc = svc_of(request)
        symbol = request.match_info["symbol"].upper()
        if symbol not in svc.markets:
            return _error(f"unknown symbol {symbol!r}")
        now = svc.sync()
        svc.engine.release(symbol, now)
        svc.flush(force=True)
        market = svc.markets[symbol]
        return web.json_response({"symbol": symbol, "market_ms": now,
                                  "price": market.fmt_price(svc.engine.price_ticks(symbol))})

    async def get_clock(request: web.Request) -> web.Response:
        svc = svc_of(request)
        svc.sync()
        svc.flush()
        return web.json_response(_clock(svc))

    async def post_clock(request: web.Request) -> web.Response:
        svc = svc_of(request)
        try:
            data = await _body(request)
            svc.set_clock(
                advance_ms=int(data["advance_ms"]) if "advance_ms" in data else None,
                to_ms=int(data["to_ms"]) if "to_ms" in data else None,
                speed=float(data["speed"]) if "speed" in data else None,
            )
        except (ValueError, TypeError) as exc:
            return _error(str(exc))
        return web.json_response(_clock(svc))

    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response([r.to_dict() for r in request.app[faults_key].rules])

    async def add_fault(request: web.Request) -> web.Response:
        try:
            rule = FaultRule.parse(await _body(request))
        except (ValueError, TypeError) as exc:
            return _error(str(exc))
        request.app[faults_key].add(rule)
        return web.json_response(rule.to_dict())

    async def clear_faults(request: web.Request) -> web.Response:
        request.app[faults_key].clear()
        return web.json_response([])

    async def audit(request: web.Request) -> web.Response:
        svc = svc_of(request)
        svc.sync()
        svc.flush()
        q = request.query
        return web.json_response(svc.store.audit(client_id=q.get("clientOrderId"),
                                                 symbol=q.get("symbol")))

    async def reset(request: web.Request) -> web.Response:
        svc = svc_of(request)
        svc.reset()
        request.app[faults_key].clear()
        return web.json_response(_state(svc))

    async def state(request: web.Request) -> web.Response:
        svc = svc_of(request)
        svc.sync()
        svc.flush()
        return web.json_response(_state(svc))

    app.router.add_post("/_paper/price", set_price)
    app.router.add_delete("/_paper/price/{symbol}", release_price)
    app.router.add_get("/_paper/clock", get_clock)
    app.router.add_post("/_paper/clock", post_clock)
    app.router.add_get("/_paper/faults", list_faults)
    app.router.add_post("/_paper/faults", add_fault)
    app.router.add_delete("/_paper/faults", clear_faults)
    app.router.add_get("/_paper/orders", audit)
    app.router.add_post("/_paper/reset", reset)
    app.router.add_get("/_paper/state", state)
