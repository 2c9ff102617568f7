"""Classification of exchange failures, why the client overrides ccxt's error map, the
sanitizer of error text, and the request weights the client's throttle charges.

These run ccxt's own `handle_errors` on Binance-shaped error bodies (no server needed); the
integration tests in tests/paper_exchange/ provoke the same codes over HTTP, and
tests/workflows/test_trade_secrets.py checks histories and logs on the whole stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import traceback

import aiohttp
import ccxt.async_support as ccxt
import pytest

from exchange.weights import BINANCE_USDM_WEIGHTS, WeightBudget, request_weight
from exchange.client import LocalBinanceUsdm, QtBinanceUsdm, create_exchange
from exchange.errors import FailureKind, classify_exchange_error, exchange_error_code, redact
from activities.temporal_errors import to_application_error
from paper_exchange.config import PaperSettings
from common.settings import ExchangeSettings

LOCAL_URL = "http://127.0.0.1:8100/fapi/v1/order"

# code, message, HTTP status, expected ccxt class, expected kind, retryable
CASES = [
    (-2019, "Margin is insufficient.", 400, ccxt.InsufficientFunds, FailureKind.INSUFFICIENT_FUNDS, False),
    (-2021, "Order would immediately trigger.", 400, ccxt.OrderImmediatelyFillable, FailureKind.WOULD_TRIGGER_IMMEDIATELY, False),
    (-4116, "ClientOrderId is duplicated.", 400, ccxt.InvalidOrder, FailureKind.DUPLICATE_CLIENT_ORDER_ID, False),
    (-4164, "Order's notional must be no smaller than 5 (unless you choose reduce only).", 400, ccxt.InvalidOrder, FailureKind.BELOW_MIN_NOTIONAL, False),
    (-2022, "ReduceOnly Order is rejected.", 400, ccxt.InvalidOrder, FailureKind.REDUCE_ONLY_REJECTED, False),
    (-4006, "Stop price less than zero.", 400, ccxt.BadRequest, FailureKind.BAD_REQUEST, False),
    (-4015, "Client order id is not valid.", 400, ccxt.BadRequest, FailureKind.BAD_REQUEST, False),
    (-1111, "Precision is over the maximum defined for this asset.", 400, ccxt.BadRequest, FailureKind.BAD_REQUEST, False),
    (-4014, "Price not increased by tick size.", 400, ccxt.BadRequest, FailureKind.BAD_REQUEST, False),
    (-4023, "Quantity not increased by step size.", 400, ccxt.BadRequest, FailureKind.BAD_REQUEST, False),
    (-4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.", 400, ccxt.InvalidOrder, FailureKind.INVALID_ORDER, False),
    (-2013, "Order does not exist.", 400, ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND, False),
    (-2011, "Unknown order sent.", 400, ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND, False),
    (-1022, "Signature for this request is not valid.", 400, ccxt.AuthenticationError, FailureKind.AUTH, False),
    (-2015, "Invalid API-key, IP, or permissions for action.", 401, ccxt.AuthenticationError, FailureKind.AUTH, False),
    (-4046, "No need to change margin type.", 400, ccxt.MarginModeAlreadySet, FailureKind.ALREADY_SET, False),
    (-1021, "Timestamp for this request is outside of the recvWindow.", 400, ccxt.InvalidNonce, FailureKind.CLOCK_SKEW, True),
    (-1001, "Internal error; unable to process your request. Please try again.", 503, ccxt.OperationFailed, FailureKind.EXCHANGE_BUSY, True),
    (-1003, "Too many requests; current limit is 2400 requests per minute.", 429, ccxt.DDoSProtection, FailureKind.RATE_LIMITED, True),
]


def _raise_from(exchange, status: int, code: int, msg: str) -> BaseException:
    body = json.dumps({"code": code, "msg": msg})
    with pytest.raises(Exception) as info:
        exchange.handle_errors(status, "x", LOCAL_URL, "POST", {}, body, json.loads(body), {}, "")
    return info.value


@pytest.mark.parametrize("code,msg,status,cls,kind,retryable", CASES, ids=[str(c[0]) for c in CASES])
def test_each_binance_code_maps_to_ccxt_class_and_kind(code, msg, status, cls, kind, retryable):
    exchange = LocalBinanceUsdm()
    exc = _raise_from(exchange, status, code, msg)
    assert isinstance(exc, cls), f"{code} arrived as {type(exc).__name__}"
    failure = classify_exchange_error(exc)
    assert failure.kind is kind
    assert failure.retryable is retryable
    assert failure.code == code
    assert failure.message == msg


@pytest.mark.parametrize("code", [-2019, -2021, -4116, -4164])
def test_without_the_override_local_urls_lose_the_linear_map(code):
    """Why LocalBinanceUsdm exists: stock binanceusdm maps these to a bare ExchangeError."""
    msg = {c[0]: c[1] for c in CASES}[code]
    exc = _raise_from(ccxt.binanceusdm(), 400, code, msg)
    assert type(exc) is ccxt.ExchangeError
    # ...and the classifier still recovers the meaning from the code it carries.
    assert classify_exchange_error(exc).code == code


@pytest.mark.parametrize(
    "exc,kind",
    [
        (ccxt.RequestTimeout("binanceusdm GET http://127.0.0.1:8100/fapi/v1/time request timeout"), FailureKind.TIMEOUT),
        (ccxt.NetworkError("binanceusdm Server disconnected"), FailureKind.NETWORK),
        (ccxt.ExchangeNotAvailable("binanceusdm 503 Service Unavailable"), FailureKind.EXCHANGE_BUSY),
        (ConnectionResetError("reset by peer"), FailureKind.NETWORK),
    ],
)
def test_transport_failures_are_retryable(exc, kind):
    failure = classify_exchange_error(exc)
    assert failure.kind is kind and failure.retryable and failure.code is None


def test_unknown_exchange_error_is_not_retried():
    failure = classify_exchange_error(ccxt.ExchangeError('binanceusdm {"code":-9999,"msg":"odd"}'))
    assert failure.kind is FailureKind.EXCHANGE_ERROR
    assert not failure.retryable
    assert failure.code == -9999 and failure.message == "odd"


def test_code_extraction_ignores_text_without_code():
    assert exchange_error_code(ccxt.ExchangeError("no body here")) is None


def test_paper_client_points_every_fapi_url_at_the_paper_exchange():
    paper = PaperSettings(host="127.0.0.1", port=18100)
    exchange = create_exchange(paper.client_settings())
    fapi = {k: v for k, v in exchange.urls["api"].items() if k.startswith("fapi")}
    assert fapi and all(v.startswith("http://127.0.0.1:18100/") for v in fapi.values())
    assert exchange.apiKey == paper.api_key
    assert exchange.options["fetchCurrencies"] is False


def test_live_mode_without_keys_is_refused_clearly():
    with pytest.raises(ValueError, match="QT_EXCHANGE_API_KEY"):
        create_exchange(ExchangeSettings(mode="live"))


# --- the sanitizer ------------------------------------------------------------------------------

KEY, SECRET = "k3yABCDEFGHIJKLMNOP", "s3cretQRSTUVWXYZ0123"
SIGNED = ("http://127.0.0.1:8100/fapi/v1/order?timestamp=1735689600000&symbol=BTCUSDT"
          "&origClientOrderId=trade-x-entry&recvWindow=5000&signature=9f2c4e0b1a")


@pytest.mark.parametrize(("text", "kept"), [
    (f"binanceusdm GET {SIGNED}", "binanceusdm GET http://127.0.0.1:8100/fapi/v1/order"),
    (f"binanceusdm DELETE {SIGNED} 503 Service Unavailable <html>",
     "binanceusdm DELETE http://127.0.0.1:8100/fapi/v1/order 503 Service Unavailable <html>"),
    ("body symbol=BTCUSDT&side=BUY&timestamp=1&signature=9f2c4e0b1a", "body symbol=BTCUSDT&side=BUY&timestamp=1&signature=***"),
    (f"Request: {{'X-MBX-APIKEY': '{KEY}'}} None", "Request: {'X-MBX-APIKEY': '***'} None"),
    ('{"apiKey": "abcdefgh", "x": 1}', '{"apiKey": "***", "x": 1}'),
    (f"odd place for {KEY} and {SECRET}", "odd place for *** and ***"),
    # What Binance says stays readable.
    ('binanceusdm {"code":-1022,"msg":"Signature for this request is not valid."}',
     'binanceusdm {"code":-1022,"msg":"Signature for this request is not valid."}'),
    ("Invalid API-key, IP, or permissions for action.", "Invalid API-key, IP, or permissions for action."),
    ("binanceusdm GET http://127.0.0.1:8100/fapi/v1/time", "binanceusdm GET http://127.0.0.1:8100/fapi/v1/time"),
])
def test_redact_removes_query_strings_signatures_and_keys(text, kept):
    assert redact(text, (KEY, SECRET)) == kept


def _keyed() -> LocalBinanceUsdm:
    return LocalBinanceUsdm({"apiKey": KEY, "secret": SECRET})


def test_transport_error_is_re_raised_as_the_same_class_without_secrets():
    exchange = _keyed()
    try:
        raise ccxt.ExchangeNotAvailable(f"binanceusdm GET {SIGNED}") from aiohttp.ServerDisconnectedError()
    except ccxt.ExchangeNotAvailable as exc:
        clean = exchange.sanitized_error(exc, "GET", SIGNED)
    assert type(clean) is ccxt.ExchangeNotAvailable
    assert str(clean) == ("binanceusdm GET http://127.0.0.1:8100/fapi/v1/order: "
                          "ServerDisconnectedError: Server disconnected")
    assert clean.__cause__ is None and clean.__context__ is None
    failure = classify_exchange_error(clean)
    assert failure.kind is FailureKind.EXCHANGE_BUSY and failure.retryable
    assert failure.endpoint == "GET /fapi/v1/order"


def test_exchange_answer_gets_endpoint_and_status_and_keeps_its_code():
    exchange = _keyed()
    exc = _raise_from(exchange, 503, -1001, "Internal error; unable to process your request.")
    clean = exchange.sanitized_error(exc, "GET", SIGNED, 503)
    assert type(clean) is type(exc)
    assert "(GET http://127.0.0.1:8100/fapi/v1/order, HTTP 503)" in str(clean)
    error = to_application_error(clean)
    assert error.type == "exchange_busy" and not error.non_retryable
    assert error.message == ("exchange_busy (-1001): Internal error; unable to process your request. "
                             "[GET /fapi/v1/order, HTTP 503]")
    assert error.details[0]["endpoint"] == "GET /fapi/v1/order" and error.details[0]["http_status"] == 503


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_fetch_raises_nothing_that_carries_the_signed_url(caplog):
    """ccxt's own `fetch` against a port nobody listens on: ExchangeNotAvailable with the signed
    URL, chained to aiohttp's error. What leaves the client has neither, nor does its traceback,
    nor ccxt's DEBUG line of the request (URL and headers with the key)."""
    caplog.set_level(logging.DEBUG, logger="ccxt")
    exchange = _keyed()
    url = SIGNED.replace("8100", str(_closed_port()))
    try:
        with pytest.raises(ccxt.ExchangeNotAvailable) as info:
            await exchange.fetch(url, "GET", {"X-MBX-APIKEY": KEY})
    finally:
        await exchange.close()
    exc = info.value
    assert exc.__cause__ is None and exc.__context__ is None
    shown = "".join(traceback.format_exception(exc))
    assert "signature" not in shown and "?" not in str(exc) and KEY not in shown
    assert "/fapi/v1/order" in str(exc) and "ClientConnectorError" in str(exc)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ccxt")]
    assert any("X-MBX-APIKEY" in line for line in lines)
    assert not any(KEY in line or "signature=" in line for line in lines), lines


async def test_cancellation_passes_unchanged():
    """A request cancelled while it waits for an answer raises CancelledError, not a ccxt error."""
    exchange = QtBinanceUsdm({"apiKey": KEY, "secret": SECRET})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        task = asyncio.ensure_future(exchange.fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/x"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        listener.close()
        await exchange.close()


# --- request weights ----------------------------------------------------------------------------


@pytest.mark.parametrize(("api", "method", "path", "params", "weight"), [
    ("fapiPrivateV3", "GET", "positionRisk", {}, 5),  # ccxt: 1
    ("fapiPrivateV2", "GET", "positionRisk", {"symbol": "BTCUSDT"}, 5),  # ccxt: 1
    ("fapiPrivateV3", "GET", "account", {}, 5),  # ccxt: 1
    ("fapiPrivateV2", "GET", "balance", {}, 5),  # ccxt: 1
    ("fapiPublic", "GET", "ticker/price", {"symbol": "BTCUSDT"}, 1),
    ("fapiPublic", "GET", "ticker/price", {}, 2),
    ("fapiPublicV2", "GET", "ticker/price", {}, 2),  # ccxt: 0
    ("fapiPublic", "GET", "premiumIndex", {"symbol": "BTCUSDT"}, 1),
    ("fapiPublic", "GET", "premiumIndex", {}, 10),  # ccxt: 1
    ("fapiPublic", "GET", "ticker/24hr", {}, 40),
    ("fapiPublic", "GET", "klines", {"limit": 3}, 1),
    ("fapiPublic", "GET", "klines", {"limit": 99}, 1),
    ("fapiPublic", "GET", "klines", {"limit": 100}, 2),
    ("fapiPublic", "GET", "klines", {"limit": 500}, 5),
    ("fapiPublic", "GET", "klines", {"limit": 1000}, 5),
    ("fapiPublic", "GET", "klines", {"limit": 1500}, 10),
    ("fapiPublic", "GET", "klines", {}, 5),  # Binance's default limit is 500; ccxt: 1
    ("fapiPrivate", "GET", "order", {"symbol": "BTCUSDT"}, 1),
    ("fapiPrivate", "POST", "order", {"symbol": "BTCUSDT"}, 0),  # 0 on the IP limit; ccxt: 4
    ("fapiPrivate", "DELETE", "order", {"symbol": "BTCUSDT"}, 1),
    ("fapiPrivate", "GET", "openOrders", {"symbol": "BTCUSDT"}, 1),
    ("fapiPrivate", "GET", "openOrders", {}, 40),
    ("fapiPrivate", "GET", "userTrades", {"symbol": "BTCUSDT"}, 5),
    ("fapiPrivate", "GET", "income", {}, 30),
    ("fapiPublic", "GET", "exchangeInfo", {}, 1),
])
def test_client_charges_binance_weights(api, method, path, params, weight):
    exchange = LocalBinanceUsdm()
    config = {"cost": 1}  # what ccxt's table would say does not matter for these
    assert exchange.calculate_rate_limiter_cost([api], method, path, params, config) == weight


def test_endpoints_missing_from_the_table_cost_what_ccxt_says():
    exchange = LocalBinanceUsdm()
    assert ("POST", "/fapi/v1/algoOrder") not in BINANCE_USDM_WEIGHTS
    assert exchange.calculate_rate_limiter_cost(["fapiPrivate"], "POST", "algoOrder", {}, {"cost": 1}) == 1
    assert request_weight("GET", "/fapi/v1/nothing") is None


def test_stock_ccxt_undercounts_what_the_table_fixes():
    """The reason for the table: ccxt charges positionRisk v3 at 1 (Binance: 5)."""
    stock = ccxt.binanceusdm()
    assert stock.calculate_rate_limiter_cost(["fapiPrivateV3"], "GET", "positionRisk", {}, {"cost": 1}) == 1


async def test_weight_budget_credits_idle_time_and_keeps_order():
    budget = WeightBudget(per_minute=60 * 100, burst=5)  # 100 weight/s
    await asyncio.sleep(0.06)
    for weight in (5, 5):  # the burst, then one more while the balance is not negative
        await budget.acquire(weight)
    assert budget.delayed == 0
    order: list[int] = []

    async def req(i: int) -> None:
        await budget.acquire(1)
        order.append(i)
    await asyncio.gather(*(req(i) for i in range(3)))
    assert order == [0, 1, 2] and budget.delayed >= 1  # the debt of 5 was paid first (~50 ms)
    started = time.monotonic()
    await budget.acquire(0)  # weight 0 (a new order on Binance) never waits, whatever the debt
    assert time.monotonic() - started < 0.005
    assert budget.requests == 6 and budget.weight == 13 and budget.queued == 0


async def test_bulk_reads_go_after_orders_and_leave_them_the_reserve():
    budget = WeightBudget(per_minute=60 * 100, burst=40, reserve=20)  # 100 weight/s
    await budget.acquire(30, bulk=True)  # a full bucket: one trade's fills and funding (10 left)
    done: list[str] = []

    async def request(name: str, weight: float, bulk: bool) -> None:
        await budget.acquire(weight, bulk=bulk)
        done.append(name)
    fills = asyncio.create_task(request("fills", 5, True))  # needs 25: waits for the refill
    await asyncio.sleep(0)
    close = asyncio.create_task(request("close", 5, False))  # balance 10 ≥ 0: goes at once
    lookup = asyncio.create_task(request("lookup", 1, False))  # so does this one (balance 5)
    await asyncio.wait_for(asyncio.gather(fills, close, lookup), 2)
    assert done == ["close", "lookup", "fills"]


async def test_without_a_reserve_bulk_is_an_ordinary_request():
    """The market-data client: its polls always queue, so a bulk lane there would starve."""
    budget = WeightBudget(per_minute=60 * 100, burst=0)
    polls = [asyncio.create_task(budget.acquire(1)) for _ in range(5)]
    await asyncio.wait_for(budget.acquire(5, bulk=True), 2)
    await asyncio.gather(*polls)


async def test_cancelled_waiter_leaves_the_queue():
    budget = WeightBudget(per_minute=60, burst=0)  # 1 weight/s
    await budget.acquire(1)  # debt: the next one waits ~1 s
    waiter = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0.05)
    assert budget.queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.queued == 0


@pytest.mark.parametrize(("api", "path", "bulk"), [
    ("fapiPrivate", "income", True), ("fapiPrivate", "userTrades", True), ("fapiPrivateV3", "account", True),
    ("fapiPrivate", "order", False), ("fapiPrivateV2", "positionRisk", False), ("fapiPublic", "ticker/price", False),
])
async def test_history_reads_take_the_bulk_lane(api, path, bulk):
    exchange = LocalBinanceUsdm()
    lanes: list[bool] = []

    class Recorder(WeightBudget):
        async def acquire(self, weight, *, bulk=False):
            lanes.append(bulk)
    exchange.budget = Recorder(60)
    cost = exchange.calculate_rate_limiter_cost([api], "GET", path, {"symbol": "BTCUSDT"}, {"cost": 1})
    await exchange.throttle(cost)
    assert lanes == [bulk]


def test_the_paper_address_and_keys_come_from_the_paper_exchanges_own_variables(monkeypatch):
    monkeypatch.setenv("QT_PAPER_HOST", "10.1.2.3")
    monkeypatch.setenv("QT_PAPER_PORT", "18200")
    monkeypatch.setenv("QT_PAPER_API_KEY", "k-1")
    settings = ExchangeSettings()
    assert (settings.mode, settings.paper_url, settings.paper_api_key) == ("paper", "http://10.1.2.3:18200", "k-1")
    assert PaperSettings().base_url == settings.paper_url  # both ends read the same variables
    exchange = create_exchange(settings)
    assert all(v.startswith("http://10.1.2.3:18200/") for k, v in exchange.urls["api"].items() if k.startswith("fapi"))
    assert exchange.apiKey == "k-1"
