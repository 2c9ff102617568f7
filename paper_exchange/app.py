"""The HTTP server: Binance USD-M routes (api_*.py) and test controls (controls.py) on aiohttp.

Per Binance request, in this order: fault injection (an injected error answers at once; latency
waits first), authentication for signed routes, catch-up of matching to the market clock, the
handler, persistence of what changed (before answering: a SIGKILL after a response loses
nothing), the JSON answer (or, for `drop_after_accept`, a closed connection).

Signed requests (ccxt's `sign()`): `X-MBX-APIKEY` header; HMAC-SHA256 with the secret over the
URL-encoded parameters exactly as sent (query string, then form body), `signature` last.
`timestamp` is checked against the WALL clock (`recvWindow`, default 5000 ms, and at most
1000 ms ahead): ccxt stamps requests with local time, and with the market clock running at
100x the exchange's own clock would be far ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from urllib.parse import parse_qsl

from aiohttp import web

from paper_exchange import api_account, api_market, api_orders, controls  # noqa: F401 (routes)
from paper_exchange.api import ROUTES, Call
from paper_exchange.config import PaperSettings
from paper_exchange.errors import BinanceError
from paper_exchange.faults import Faults
from paper_exchange.service import PaperExchange, wall_ms

log = logging.getLogger("paper_exchange")

SERVICE = web.AppKey("service", PaperExchange)
FAULTS = web.AppKey("faults", Faults)
TICKER = web.AppKey("ticker", asyncio.Task)


def _params(raw: str) -> dict[str, str]:
    return dict(parse_qsl(raw, keep_blank_values=True))


def _without_signature(raw: str) -> tuple[str, str | None]:
    """The signed payload (raw `k=v` pairs in order, minus signature) and the signature."""
    kept, signature = [], None
    for pair in raw.split("&") if raw else []:
        if pair.startswith("signature="):
            signature = pair[len("signature="):]
        else:
            kept.append(pair)
    return "&".join(kept), signature


def _authenticate(request: web.Request, svc: PaperExchange, raw_query: str, body: str,
                  params: dict[str, str], wall: int) -> None:
    settings = svc.settings
    key = request.headers.get("X-MBX-APIKEY")
    if not key or not hmac.compare_digest(key, settings.api_key):
        raise BinanceError(-2015)
    query_payload, query_sig = _without_signature(raw_query)
    body_payload, body_sig = _without_signature(body)
    signature = query_sig or body_sig
    if not signature:
        raise BinanceError(-1102, "signature")
    expected = hmac.new(settings.api_secret.encode(), (query_payload + body_payload).encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceError(-1022)
    timestamp = params.get("timestamp")
    if not timestamp:
        raise BinanceError(-1102, "timestamp")
    if not timestamp.isdigit():
        raise BinanceError(-1100, "timestamp", r"^[0-9]{1,20}$")
    window = params.get("recvWindow") or "5000"
    if not window.isdigit() or int(window) > settings.recv_window_max_ms:
        raise BinanceError(-1130, "recvWindow")
    ts = int(timestamp)
    if ts > wall + 1000 or wall - ts > int(window):
        raise BinanceError(-1021)


def _json(body, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type="application/json")


def _audit_rejection(call: Call, code: int, msg: str, result: str = "rejected") -> None:
    p = call.params
    call.audit(result, symbol=(p.get("symbol") or "").upper(), side=p.get("side", ""),
               type=p.get("type", ""), code=code, msg=msg,
               client_id=p.get("newClientOrderId") or p.get("clientAlgoId")
               or p.get("origClientOrderId") or "",
               order_id=int(p["orderId"]) if p.get("orderId", "").isdigit() else None,
               algo_id=int(p["algoId"]) if p.get("algoId", "").isdigit() else None)


async def binance_handler(request: web.Request) -> web.StreamResponse:
    svc, faults = request.app[SERVICE], request.app[FAULTS]
    path, method = request.path, request.method
    route = ROUTES.get((method, path))
    if route is None:
        return _json(BinanceError(-5000, path, method).body(), 404)
    raw_query = request.raw_path.partition("?")[2]
    body = await request.text() if request.can_read_body else ""
    params = {**_params(raw_query), **_params(body)}
    fault = faults.take(method, path)
    if fault is not None and fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    wall = wall_ms()
    now = svc.sync(wall)
    call = Call(svc, params, now, wall, method, path, fault)
    if fault is not None and fault.status is not None:
        if route.audited:
            _audit_rejection(call, fault.code, fault.msg, "fault")
        svc.flush()
        answer = _json({"code": fault.code, "msg": fault.msg}, fault.status)
        if fault.retry_after_s is not None:
            answer.headers["Retry-After"] = str(fault.retry_after_s)
        return answer
    try:
        if route.private:
            _authenticate(request, svc, raw_query, body, params, wall)
        result, status = route.handler(call), 200
    except BinanceError as exc:
        if route.audited:
            _audit_rejection(call, exc.code, exc.msg)
        result, status = exc.body(), exc.status
    except Exception:  # a bug: answer like Binance's unknown error, keep serving
        log.exception("%s %s failed", method, path)
        result, status = BinanceError(-1000).body(), 500
    svc.flush()
    if fault is not None and fault.drop_after_accept:
        # Processed and persisted; now the connection goes without an answer. Cancelling the
        # handler makes aiohttp drop the request instead of writing to the aborted transport.
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    return _json(result, status)


async def _ticker(app: web.Application) -> None:
    """Background replay: keeps matching up with the clock between requests."""
    svc = app[SERVICE]
    interval = svc.settings.tick_interval_ms / 1000
    while True:
        await asyncio.sleep(interval)
        try:
            if svc.clock.speed > 0:
                svc.sync()
                svc.flush()
        except Exception:  # keep ticking; the next request surfaces a persistent fault
            log.exception("replay tick failed")


async def _start_ticker(app: web.Application) -> None:
    # Catch up over the time the exchange was down (the clock kept running) before serving.
    svc = app[SERVICE]
    svc.sync()
    svc.flush()
    app[TICKER] = asyncio.create_task(_ticker(app))


async def _shutdown(app: web.Application) -> None:
    app[TICKER].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[TICKER]
    svc = app[SERVICE]
    svc.sync()
    svc.flush(force=True)
    svc.close()
    log.info("paper exchange stopped (state flushed)")


def create_app(settings: PaperSettings) -> web.Application:
    app = web.Application()
    app[SERVICE] = PaperExchange(settings)
    app[FAULTS] = Faults()
    controls.add_routes(app, SERVICE, FAULTS)
    app.router.add_route("*", "/fapi/{tail:.*}", binance_handler)
    app.router.add_route("*", "/futures/{tail:.*}", binance_handler)
    app.on_startup.append(_start_ticker)
    app.on_cleanup.append(_shutdown)
    return app


def serve(settings: PaperSettings) -> None:
    """Serve until SIGTERM/SIGINT (aiohttp's run_app turns both into a clean shutdown)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("paper exchange on http://%s:%s (db %s)", settings.host, settings.port,
             settings.database_path)
    web.run_app(create_app(settings), host=settings.host, port=settings.port,
                print=None, access_log=None, handle_signals=True)
