"""The one place that decides whether an exchange failure is worth retrying.

Every ccxt exception an activity sees goes through `classify_exchange_error`, which keeps the
Binance error code (`-2019`, `-2021`, ...) next to a stable `kind`, so callers branch on what
happened rather than on exception class names, and Temporal retries only what can succeed later.

`redact` is the one sanitizer of exchange error text: the client (`exchange/client.py`)
passes every error that leaves a request through it, so no signed URL (`…&signature=…`), API key
or secret reaches a workflow history or a log line.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

import ccxt.async_support as ccxt

_CODE_IN_BODY = re.compile(r'"code"\s*:\s*(-?\d+)')
# A URL's query string (and fragment): everything from `?` to the next blank or quote.
_URL_QUERY = re.compile(r"""(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#"'<>]*)[?#][^\s"'<>]*""")
# `name=value`, `"name": "value"`, `'name': 'value'` of parameters and headers that authenticate.
_SECRET_FIELD = re.compile(
    r"""(?i)(\b(?:signature|api[-_]?key|x-mbx-apikey|secret|listenkey)["']?\s*[=:]\s*["']?)"""
    r"""[^\s&"',;}\]]+""")
REDACTED = "***"
_MSG_IN_BODY = re.compile(r'"msg"\s*:\s*"((?:[^"\\]|\\.)*)"')


class FailureKind(str, enum.Enum):
    # Retryable: the same request may succeed later (client ids make order retries safe).
    NETWORK = "network"  # connection dropped, DNS, refused
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"  # HTTP 429/418, -1003
    EXCHANGE_BUSY = "exchange_busy"  # -1001 internal error / disconnected, 5xx
    CLOCK_SKEW = "clock_skew"  # -1021: a retry signs with a fresh timestamp
    # Not retryable: retrying the same request gets the same answer.
    ALREADY_SET = "already_set"  # -4046 margin type, no change needed: treat as success
    INSUFFICIENT_FUNDS = "insufficient_funds"  # -2019
    WOULD_TRIGGER_IMMEDIATELY = "would_trigger_immediately"  # -2021: act at market instead
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"  # -4116: already placed
    ORDER_NOT_FOUND = "order_not_found"  # -2011/-2013
    REDUCE_ONLY_REJECTED = "reduce_only_rejected"  # -2022: nothing left to reduce
    BELOW_MIN_NOTIONAL = "below_min_notional"  # -4164
    INVALID_ORDER = "invalid_order"  # bad price/qty/precision/type
    AUTH = "auth"  # -1022/-2015/-2014
    BAD_SYMBOL = "bad_symbol"
    BAD_REQUEST = "bad_request"
    EXCHANGE_ERROR = "exchange_error"  # anything else the exchange refused


# The circuit breaker's groups (activities/circuit_breaker.py): order failures that say "stop
# opening trades" when they pile up. Left out on purpose: the answers that are part of normal
# work (already set, already placed, not found, nothing left to reduce, would trigger now: each
# has its own handling) and clock skew (a late entry's refusal by design).
BREAKER_GROUPS: dict[FailureKind, str] = {
    FailureKind.INSUFFICIENT_FUNDS: "rejected",
    FailureKind.BELOW_MIN_NOTIONAL: "rejected",
    FailureKind.INVALID_ORDER: "rejected",
    FailureKind.AUTH: "rejected",
    FailureKind.BAD_SYMBOL: "rejected",
    FailureKind.BAD_REQUEST: "rejected",
    FailureKind.EXCHANGE_ERROR: "rejected",
    FailureKind.RATE_LIMITED: "rate_limited",
    FailureKind.EXCHANGE_BUSY: "unavailable",
    FailureKind.NETWORK: "unavailable",
    FailureKind.TIMEOUT: "unavailable",
}


# Codes whose meaning is more precise than the ccxt class they arrive as.
_KIND_BY_CODE: dict[int, FailureKind] = {
    -1001: FailureKind.EXCHANGE_BUSY,
    -1003: FailureKind.RATE_LIMITED,
    -1021: FailureKind.CLOCK_SKEW,
    -1022: FailureKind.AUTH,
    -2014: FailureKind.AUTH,
    -2015: FailureKind.AUTH,
    -2011: FailureKind.ORDER_NOT_FOUND,
    -2013: FailureKind.ORDER_NOT_FOUND,
    -2019: FailureKind.INSUFFICIENT_FUNDS,
    -2021: FailureKind.WOULD_TRIGGER_IMMEDIATELY,
    -2022: FailureKind.REDUCE_ONLY_REJECTED,
    -4046: FailureKind.ALREADY_SET,
    -4116: FailureKind.DUPLICATE_CLIENT_ORDER_ID,
    -4164: FailureKind.BELOW_MIN_NOTIONAL,
}

RETRYABLE_KINDS = frozenset(
    {
        FailureKind.NETWORK,
        FailureKind.TIMEOUT,
        FailureKind.RATE_LIMITED,
        FailureKind.EXCHANGE_BUSY,
        FailureKind.CLOCK_SKEW,
    }
)

# Ordered most specific first: the first isinstance match wins.
_KIND_BY_CLASS: tuple[tuple[type[Exception], FailureKind], ...] = (
    (ccxt.RequestTimeout, FailureKind.TIMEOUT),
    (ccxt.DDoSProtection, FailureKind.RATE_LIMITED),
    (ccxt.RateLimitExceeded, FailureKind.RATE_LIMITED),
    (ccxt.InvalidNonce, FailureKind.CLOCK_SKEW),
    # ccxt raises ExchangeNotAvailable both for 5xx answers and for a connection dropped
    # mid-request: either way the outcome of an order request is unknown, so order activities
    # look the order up by its client id before placing it again.
    (ccxt.ExchangeNotAvailable, FailureKind.EXCHANGE_BUSY),
    (ccxt.NetworkError, FailureKind.NETWORK),
    (ccxt.OperationFailed, FailureKind.EXCHANGE_BUSY),  # BadResponse, -1000/-1001, ...
    (ccxt.NoChange, FailureKind.ALREADY_SET),  # MarginModeAlreadySet and friends
    (ccxt.InsufficientFunds, FailureKind.INSUFFICIENT_FUNDS),
    (ccxt.OrderImmediatelyFillable, FailureKind.WOULD_TRIGGER_IMMEDIATELY),
    (ccxt.DuplicateOrderId, FailureKind.DUPLICATE_CLIENT_ORDER_ID),
    (ccxt.OrderNotFound, FailureKind.ORDER_NOT_FOUND),
    (ccxt.InvalidOrder, FailureKind.INVALID_ORDER),
    (ccxt.AuthenticationError, FailureKind.AUTH),
    (ccxt.BadSymbol, FailureKind.BAD_SYMBOL),
    (ccxt.BadRequest, FailureKind.BAD_REQUEST),
)


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """`text` without anything that authenticates a request: the given secret values (the
    client's API key and secret) wherever they appear, the query string of every URL (a signed
    GET carries `timestamp`, `recvWindow` and `signature` there), and the value of any
    `signature` / `apiKey` / `X-MBX-APIKEY` / `secret` / `listenKey` field left outside a URL
    (a signed POST body, a header dict). Scheme, host and path stay: they say what was asked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _URL_QUERY.sub(r"\1", text)
    return _SECRET_FIELD.sub(lambda m: m.group(1) + REDACTED, text)


@dataclass(frozen=True)
class ExchangeFailure:
    kind: FailureKind
    retryable: bool
    code: int | None  # the exchange's own error code, when it sent one
    message: str  # the exchange's message (or the exception text)
    exception_type: str  # the ccxt class it arrived as, for logs
    endpoint: str | None = None  # "GET /fapi/v1/order", set by the client on what it raised
    http_status: int | None = None  # the HTTP status of the answer, when there was one

    def as_details(self) -> dict:
        return {
            "kind": self.kind.value,
            "retryable": self.retryable,
            "code": self.code,
            "message": self.message,
            "exception_type": self.exception_type,
            "endpoint": self.endpoint,
            "http_status": self.http_status,
        }


def exchange_error_code(exc: BaseException) -> int | None:
    """The Binance error code carried in a ccxt exception's message, if any."""
    match = _CODE_IN_BODY.search(str(exc))
    return int(match.group(1)) if match else None


def _exchange_message(exc: BaseException) -> str:
    text = str(exc)
    match = _MSG_IN_BODY.search(text)
    if match:
        try:
            return json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            return match.group(1)
    return text


def classify_exchange_error(exc: BaseException) -> ExchangeFailure:
    """Classify any exception raised while talking to the exchange.

    Transport-level failures (HTTP 429, dropped connections) are decided by class first: a 429
    is rate limiting whatever code its body carries. Otherwise a known Binance code decides;
    the ccxt class is the fallback.
    """
    code = exchange_error_code(exc)
    kind: FailureKind | None = None
    if isinstance(exc, ccxt.RequestTimeout):
        kind = FailureKind.TIMEOUT
    elif isinstance(exc, ccxt.DDoSProtection):
        kind = FailureKind.RATE_LIMITED
    elif code is not None and code in _KIND_BY_CODE:
        kind = _KIND_BY_CODE[code]
    else:
        for cls, candidate in _KIND_BY_CLASS:
            if isinstance(exc, cls):
                kind = candidate
                break
    if kind is None:
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            kind = FailureKind.NETWORK
        else:
            kind = FailureKind.EXCHANGE_ERROR
    return ExchangeFailure(
        kind=kind,
        retryable=kind in RETRYABLE_KINDS,
        code=code,
        message=redact(_exchange_message(exc)),  # the client sanitized it; this is a second net
        exception_type=type(exc).__name__,
        endpoint=getattr(exc, "qt_endpoint", None),
        http_status=getattr(exc, "qt_http_status", None),
    )
