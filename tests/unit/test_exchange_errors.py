"""Classification of exchange failures, and why the client overrides ccxt's error map.

These run ccxt's own `handle_errors` on Binance-shaped error bodies (no server needed); the
integration tests in tests/paper_exchange/ provoke the same codes over HTTP.
"""

from __future__ import annotations

import json

import ccxt.async_support as ccxt
import pytest

from activities.exchange import LocalBinanceUsdm, create_exchange
from activities.exchange_errors import FailureKind, classify_exchange_error, exchange_error_code
from paper_exchange.config import PaperSettings
from qt.settings import ExchangeSettings

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
    exchange = create_exchange(ExchangeSettings(mode="paper"), paper=paper)
    fapi = {k: v for k, v in exchange.urls["api"].items() if k.startswith("fapi")}
    assert fapi and all(v.startswith("http://127.0.0.1:18100/") for v in fapi.values())
    assert exchange.apiKey == paper.api_key
    assert exchange.options["fetchCurrencies"] is False


def test_live_mode_without_keys_is_refused_clearly():
    with pytest.raises(ValueError, match="QT_EXCHANGE_API_KEY"):
        create_exchange(ExchangeSettings(mode="live"))
