"""The exchange adapter: Binance USD-M futures through ccxt, pointed at paper, testnet or live.

Paper, testnet and live share this code path; only URLs and keys differ. Every client is a
`QtBinanceUsdm` (paper: `LocalBinanceUsdm`), which adds four things to ccxt's `binanceusdm`:

- **No secrets in errors or logs.** Every exception leaving a request (`fetch`) is re-raised as
  the same ccxt class with its text passed through `redact` (no query string, no signature, no
  API key or secret), without the original chained to it, and tagged with the endpoint asked
  (`GET /fapi/v1/order`) and the HTTP status. ccxt's own DEBUG lines (URL and headers of every
  request) go through the same filter.
- **Binance's request weights.** The throttle charges each request what Binance charges the IP
  (`BINANCE_USDM_WEIGHTS`, where ccxt's table is wrong: positionRisk, account and balance cost
  5, not 1), against a `WeightBudget` per client, in which reads of history (fills, funding:
  `BULK_ENDPOINTS`) go last and leave a reserve for orders.
- **One client per purpose.** A worker process holds a `market` client (price polls of the
  `PriceHub`, market and gate activities) and an `orders` client (order activities), each with
  its own markets and its own budget, so an order never queues behind market-data polls
  (`shared_exchange(purpose)`; markets are loaded once per client and process, because
  `load_markets` is the heaviest call ccxt makes and market metadata does not change during a
  trade).
- **One back-off per client.** A 429/418 or a 5xx answer holds every request of that client
  (all the order activities of a worker share it) for Binance's `Retry-After` (up to an hour:
  an IP ban's 418 asks for minutes), else 0.5 s doubling while the answers keep failing (at most
  `BACKOFF_MAX_S`, 30 s): a storm is waited out together
  instead of each activity retrying on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt

from common.settings import ExchangeSettings
from exchange.errors import redact
from exchange.weights import BULK_ENDPOINTS, PURPOSES, Purpose, WeightBudget, budget_for, request_weight

# The HTTP status of the request in flight in this task (set by `on_rest_response`, read when
# `fetch` fails): concurrent requests run in their own tasks, so they never share one.
# The longest shared back-off after a 429/418/5xx (Binance's Retry-After is usually seconds; an
# IP ban (418) can be longer: the requests then keep failing and backing off in turn).
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 3600.0  # a Retry-After is honoured up to this

_http_status: contextvars.ContextVar[dict | None] = contextvars.ContextVar("qt_http_status", default=None)

# ccxt's URL keys for the USD-M futures API, and the path each maps to on the server.
_FAPI_URL_PATHS = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
}

class _RedactingLogger(logging.LoggerAdapter):
    """ccxt's logger (it logs every request's URL, headers and body at DEBUG), sanitized."""

    def __init__(self, logger: logging.Logger, exchange: QtBinanceUsdm) -> None:
        super().__init__(logger, {})
        self._exchange = exchange

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(a) for a in (msg, *args))
        self.logger.log(level, "%s", redact(text, self._exchange.secret_values()), **kwargs)


class QtBinanceUsdm(ccxt.binanceusdm):
    """`binanceusdm` with sanitized errors and logs, Binance's weights and a `WeightBudget`
    (see the module docstring). `budget = None` falls back to ccxt's own throttle and
    `binance_weights = False` to ccxt's own costs (the benchmark's "previous wiring")."""

    budget: WeightBudget | None = None
    binance_weights: bool = True
    purpose: str = "market"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config or {})
        self.logger = _RedactingLogger(logging.getLogger("ccxt.base.exchange"), self)

    def secret_values(self) -> tuple[str, ...]:
        return tuple(s for s in (self.apiKey, self.secret) if isinstance(s, str) and s)

    # -- throttle ------------------------------------------------------------------------------

    def calculate_rate_limiter_cost(self, api, method, path, params, config={}):  # noqa: B006 (ccxt's signature)
        # ccxt's fetch2 calls this, then at once `throttle`: no await in between, so the
        # request's lane can wait on the instance for it.
        self._bulk_next = False
        if self.binance_weights:
            name = api[0] if isinstance(api, (list, tuple)) else api
            prefix = _FAPI_URL_PATHS.get(name)
            if prefix is not None:
                server_path = f"{prefix}/{path}"
                self._bulk_next = (method.upper(), server_path) in BULK_ENDPOINTS
                weight = request_weight(method, server_path, params)
                if weight is not None:
                    return weight
        return super().calculate_rate_limiter_cost(api, method, path, params, config)

    async def fetch2(self, path, api=["public"], method="GET", params={}, config={}):  # noqa: B006 (ccxt's signature)
        # After a 429/418/5xx every request of this client waits together (`_back_off`), before
        # its throttle and before it is signed (its timestamp is then fresh), so a storm is not
        # answered by each activity retrying on its own.
        while (wait := self.hold_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        return await super().fetch2(path, api, method, params, config)

    async def throttle(self, cost=None):
        bulk, self._bulk_next = getattr(self, "_bulk_next", False), False
        if self.budget is None:
            return await super().throttle(cost)
        await self.budget.acquire(1.0 if cost is None else float(cost), bulk=bulk)

    hold_until: float = 0.0  # monotonic time before which no request of this client starts
    _backoff_streak: int = 0

    def _back_off(self, code: int, headers: Any) -> None:
        """Binance's Retry-After (seconds) when it sends one (at most `RETRY_AFTER_MAX_S`), else
        0.5 s doubling per answer in a row (at most `BACKOFF_MAX_S`); a good answer ends the streak."""
        retry_after = None
        try:
            retry_after = float((headers or {}).get("Retry-After"))
        except (TypeError, ValueError):
            pass
        if retry_after is not None:  # the exchange's word (an IP ban's 418 can ask for minutes)
            delay = min(RETRY_AFTER_MAX_S, max(0.0, retry_after))
        else:
            delay = min(BACKOFF_MAX_S, 0.5 * 2 ** min(self._backoff_streak, 8))
        self._backoff_streak += 1
        until = time.monotonic() + delay
        if until > self.hold_until:
            self.hold_until = until
            logging.getLogger("qt.exchange").warning(
                "HTTP %s from the exchange: every %s request waits %.1f s%s", code, self.purpose, delay,
                " (Retry-After)" if retry_after is not None else "")

    # -- errors --------------------------------------------------------------------------------

    def on_rest_response(self, code, reason, url, method, response_headers, response_body,
                         request_headers, request_body):
        box = _http_status.get()
        if box is not None:
            box["status"] = code
        if code in (418, 429) or 500 <= code < 600:
            self._back_off(code, response_headers)
        elif code < 400:
            self._backoff_streak = 0
        return super().on_rest_response(code, reason, url, method, response_headers, response_body,
                                        request_headers, request_body)

    async def fetch(self, url, method="GET", headers=None, body=None):
        box: dict = {}
        token = _http_status.set(box)
        try:
            return await super().fetch(url, method, headers, body)
        except Exception as exc:  # noqa: BLE001: every error leaves sanitized (CancelledError passes)
            clean = self.sanitized_error(exc, method, url, box.get("status"))
        finally:
            _http_status.reset(token)
        # Raised outside the `except`: no __context__, no __cause__, so neither a traceback nor
        # Temporal's failure converter ever sees the original text.
        raise clean

    def sanitized_error(self, exc: BaseException, method: str, url: str,
                        status: int | None = None) -> Exception:
        """A copy of `exc` (same ccxt class) whose text carries no secret; the endpoint and the
        HTTP status go into its text (when ccxt left them out) and onto `qt_endpoint` /
        `qt_http_status`. A transport error's cause (aiohttp's) is summarized in the text."""
        secrets = self.secret_values()
        base_url = redact(url, secrets)
        text = redact(str(exc), secrets)
        if base_url not in text:  # an answer of the exchange: ccxt kept only its body
            text += f" ({method} {base_url}" + (f", HTTP {status}" if status else "") + ")"
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if cause is not None:
            detail = redact(str(cause), secrets)
            text += f": {type(cause).__name__}" + (f": {detail}" if detail else "")
        if isinstance(exc, ccxt.BaseError):
            cls: type[Exception] = type(exc)
        elif isinstance(exc, (OSError, TimeoutError)):
            cls = ccxt.NetworkError
        else:
            cls = ccxt.ExchangeError
        try:
            clean = cls(text)
        except Exception:  # noqa: BLE001: a class with another constructor
            clean = ccxt.ExchangeError(text)
        clean.qt_endpoint = f"{method} {urlsplit(url).path}"
        clean.qt_http_status = status
        return clean


class LocalBinanceUsdm(QtBinanceUsdm):
    """The client for a server on a local address (the paper exchange).

    ccxt picks the Binance error-code map by URL prefix (`https://fapi.binance.com/...`); on
    127.0.0.1 it would find none, and -2019/-2021/-4116/-4164 would all arrive as a bare
    ExchangeError. Every call of this client is a USD-M futures call, so the map is `linear`.
    """

    def get_exceptions_by_url(self, url: str, exactOrBroad: str) -> dict:  # noqa: N803 (ccxt's name)
        if url is None:
            return {}
        return self.safe_dict(self.safe_dict(self.exceptions, "linear", {}), exactOrBroad, {})


def create_exchange(
    settings: ExchangeSettings | None = None,
    *,
    purpose: Purpose = "market",
    budget: WeightBudget | None = None,
    **overrides: Any,
) -> QtBinanceUsdm:
    """A new, not yet loaded client for the configured exchange.

    `purpose` picks its weight budget (`ExchangeBudgetSettings`) unless `budget` is given;
    `overrides` go into ccxt's constructor config (tests use it for timeouts, and
    `enableRateLimit=False` turns the throttle off).
    """
    settings = settings or ExchangeSettings()
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": settings.timeout_ms,
        "options": {
            "fetchCurrencies": False,  # spot/sapi endpoints: not part of USD-M futures
            "recvWindow": settings.recv_window_ms,
            "defaultType": "swap",
            # Reconciliation lists every symbol's open orders in one call (weight 40) on purpose.
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        },
    }
    if settings.mode == "paper":
        config["apiKey"] = settings.paper_api_key
        config["secret"] = settings.paper_api_secret.get_secret_value()
        config.update(overrides)
        exchange: QtBinanceUsdm = LocalBinanceUsdm(config)
        base = settings.paper_url
        urls = dict(exchange.urls["api"])
        for key, path in _FAPI_URL_PATHS.items():
            urls[key] = base + path
        exchange.urls["api"] = urls
    else:
        if settings.api_key is None or settings.api_secret is None:
            raise ValueError(
                f"QT_EXCHANGE_MODE={settings.mode} needs QT_EXCHANGE_API_KEY and QT_EXCHANGE_API_SECRET"
            )
        config["apiKey"] = settings.api_key.get_secret_value()
        config["secret"] = settings.api_secret.get_secret_value()
        config.update(overrides)
        exchange = QtBinanceUsdm(config)
        if settings.mode == "testnet":
            # Binance retired the futures testnet URLs in favour of "demo trading"; ccxt refuses
            # set_sandbox_mode for futures and points demo trading at the successor endpoints.
            exchange.enable_demo_trading(True)
    exchange.purpose = purpose
    exchange.budget = budget or budget_for(purpose)
    return exchange


# --- the process-wide clients -----------------------------------------------------------------

_shared: dict[str, QtBinanceUsdm] = {}
_shared_locks: dict[str, asyncio.Lock] = {}


async def shared_exchange(purpose: Purpose = "market") -> QtBinanceUsdm:
    """The process-wide client for `purpose`, with markets loaded on first use and never again."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown exchange client purpose {purpose!r} (one of {PURPOSES})")
    client = _shared.get(purpose)
    if client is not None:
        return client
    async with _shared_locks.setdefault(purpose, asyncio.Lock()):
        if purpose not in _shared:
            exchange = create_exchange(purpose=purpose)
            try:
                await exchange.load_markets()
            except BaseException:
                await exchange.close()
                raise
            _shared[purpose] = exchange
    return _shared[purpose]


async def shared_market_exchange() -> QtBinanceUsdm:
    """Market data: the PriceHub's polls, market and gate activities."""
    return await shared_exchange("market")


async def shared_order_exchange() -> QtBinanceUsdm:
    """Order activities only: its throttle never holds an order behind a price poll."""
    return await shared_exchange("orders")


async def close_shared_exchange() -> None:
    for purpose in list(_shared):
        await _shared.pop(purpose).close()


# What activity classes accept: a ready ccxt client (tests), or a zero-arg async factory such as
# `shared_market_exchange` / `shared_order_exchange` (workers), resolved on first use.
ExchangeSource = Any | Callable[[], Awaitable[Any]]


class ExchangeHolder:
    """An injected ccxt client or factory, resolved once, with markets loaded."""

    def __init__(self, source: ExchangeSource = shared_exchange) -> None:
        self._source = source
        self._client: Any | None = None
        self._lock = asyncio.Lock()

    async def exchange(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    source = self._source
                    # A ccxt client is itself callable-looking; tell it from a factory by its API.
                    client = source if hasattr(source, "create_order") else await source()
                    if not getattr(client, "markets", None):
                        await client.load_markets()
                    self._client = client
        return self._client
