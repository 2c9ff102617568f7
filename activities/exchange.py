"""The exchange adapter: Binance USD-M futures through ccxt, pointed at paper, testnet or live.

Paper, testnet and live share this code path; only URLs and keys differ. Every client is a
`QtBinanceUsdm` (paper: `LocalBinanceUsdm`), which adds three things to ccxt's `binanceusdm`:

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
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.exchange_errors import redact
from common.settings import ExchangeSettings

Purpose = Literal["market", "orders"]
PURPOSES: tuple[Purpose, ...] = ("market", "orders")

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

# --- request weights ------------------------------------------------------------------------


@dataclass(frozen=True)
class BySymbol:
    """Weight with the `symbol` parameter, and without it (every symbol at once)."""

    one: float
    all: float


@dataclass(frozen=True)
class ByLimit:
    """Weight by the `limit` parameter: the first `(max_limit, weight)` step that covers it;
    `above` past the last step; `default` is the limit Binance assumes when none is sent."""

    steps: tuple[tuple[int, float], ...]
    above: float
    default: int


Weight = float | BySymbol | ByLimit

# Binance USD-M futures request weights against the IP limit (REQUEST_WEIGHT, 2,400 per minute:
# GET /fapi/v1/exchangeInfo `rateLimits`), one entry per endpoint we call, as documented on each
# endpoint's page under https://developers.binance.com/docs/derivatives/usds-margined-futures/
# (market-data/rest-api/…, trade/rest-api/…, account/rest-api/…; "Request Weight"). Where ccxt
# 4.5's own table (`api` in ccxt/binance.py) charges something else, the comment says what; an
# endpoint missing here costs what ccxt says.
BINANCE_USDM_WEIGHTS: dict[tuple[str, str], Weight] = {
    ("GET", "/fapi/v1/ping"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/ticker/price"): BySymbol(1, 2),
    ("GET", "/fapi/v2/ticker/price"): BySymbol(1, 2),  # ccxt: 0
    ("GET", "/fapi/v1/ticker/24hr"): BySymbol(1, 40),
    ("GET", "/fapi/v1/ticker/bookTicker"): BySymbol(2, 5),
    ("GET", "/fapi/v1/premiumIndex"): BySymbol(1, 10),  # ccxt: 1 without a symbol too
    # [1,100) 1, [100,500) 2, [500,1000] 5, > 1000 10; default limit 500.
    ("GET", "/fapi/v1/klines"): ByLimit(((99, 1), (499, 2), (1000, 5)), above=10, default=500),
    ("GET", "/fapi/v1/leverageBracket"): 1,
    ("GET", "/fapi/v1/symbolConfig"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,  # ccxt: 1
    ("GET", "/fapi/v3/positionRisk"): 5,  # ccxt: 1
    ("GET", "/fapi/v2/account"): 5,  # ccxt: 1
    ("GET", "/fapi/v3/account"): 5,  # ccxt: 1
    ("GET", "/fapi/v2/balance"): 5,  # ccxt: 1
    ("GET", "/fapi/v3/balance"): 5,  # ccxt: 1
    ("GET", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): BySymbol(1, 40),
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/income"): 30,
    # New order: 0 on the IP limit, 1 on the ORDERS limits (1,200/min, 300/10 s), which the
    # Temporal server enforces for the execution queue (QT_WORKER_EXECUTION_RATE_PER_S). ccxt: 4.
    ("POST", "/fapi/v1/order"): 0,
    ("DELETE", "/fapi/v1/order"): 1,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
}


def request_weight(method: str, path: str, params: dict | None = None) -> float | None:
    """What Binance charges the IP for `method path` with these parameters (None: not in the
    table). `path` is the server path, e.g. `/fapi/v3/positionRisk`."""
    weight = BINANCE_USDM_WEIGHTS.get((method.upper(), path))
    params = params or {}
    if weight is None or isinstance(weight, (int, float)):
        return None if weight is None else float(weight)
    if isinstance(weight, BySymbol):
        return float(weight.one if params.get("symbol") else weight.all)
    limit = int(params.get("limit") or weight.default)
    for max_limit, step_weight in weight.steps:
        if limit <= max_limit:
            return float(step_weight)
    return float(weight.above)


# Requests that only read history (fills, funding, account state): they queue behind every
# other request of their client and never take its balance below the budget's `reserve`, so a
# burst of trades closing at once (each reading its fills and funding: 35+ weight) never makes an
# order, a cancel or the lookup before them wait.
BULK_ENDPOINTS = frozenset({
    ("GET", "/fapi/v1/userTrades"),
    ("GET", "/fapi/v1/income"),
    ("GET", "/fapi/v1/allOrders"),
    ("GET", "/fapi/v1/symbolConfig"),
    ("GET", "/fapi/v2/account"),
    ("GET", "/fapi/v3/account"),
    ("GET", "/fapi/v2/balance"),
    ("GET", "/fapi/v3/balance"),
})


class ExchangeBudgetSettings(BaseSettings):
    """Request weight per minute each client of a process may spend (`QT_EXCHANGE_*`).

    Binance counts 2,400 per minute per IP for every process behind it: the defaults (1,200 +
    600, plus bursts: at most ~2,050 in one minute) leave room for another process (say
    `qt ingest`'s market feed); with one worker process per queue, lower them so that the sum
    over processes on one IP stays under 2,400.
    """

    model_config = SettingsConfigDict(env_prefix="QT_EXCHANGE_", extra="ignore")

    market_weight_per_min: float = Field(1200, gt=0)
    market_weight_burst: float = Field(10, ge=0)
    order_weight_per_min: float = Field(600, gt=0)
    # An idle order client may spend this much at once: a close (lookup, positions, order,
    # positions: 12) does not wait for refill, nor do the fills and funding of a few trades
    # closing together (lookups + userTrades + income: ~60 each; get_fills has 30 s).
    order_weight_burst: float = Field(240, ge=0)
    # What bulk reads (BULK_ENDPOINTS) always leave for orders.
    order_weight_reserve: float = Field(30, ge=0)


class WeightBudget:
    """Token bucket of request weight: `per_minute / 60` per second, holding up to `burst`
    (credited while idle, unlike ccxt's leaky bucket, which makes the next request pay the last
    one's cost however long ago it was). A request may start while the balance is not negative,
    then pays its weight, in arrival order; with a `reserve`, a `bulk` request only after every
    other waiting request, and only when paying leaves `reserve` (at most: a full bucket). Weight
    0 never waits.

    The counters are for tests and benchmarks: `queued` is how many requests wait right now.
    """

    def __init__(self, per_minute: float, burst: float = 0.0, reserve: float | None = None) -> None:
        self.per_minute, self.burst = float(per_minute), float(burst)
        # None: no bulk lane (every request in arrival order). A client whose requests always
        # queue (the market-data one, saturated by polls) must not have one: bulk would starve.
        self.reserve = None if reserve is None else float(reserve)
        self._rate = self.per_minute / 60.0
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lanes: tuple[deque, deque] = (deque(), deque())  # (normal, bulk) waiters
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self.queued = 0
        self.requests = 0
        self.weight = 0.0
        self.delayed = 0  # requests that waited (bulk ones included)
        self.wait_s = 0.0  # total time requests waited
        self.max_wait_s = 0.0  # the longest wait of a request that is not bulk
        self.bulk_delayed = 0
        self.bulk_max_wait_s = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def _needs(self, weight: float, bulk: bool) -> float:
        """The balance a request needs before it may start (never more than the bucket holds)."""
        return min(self.reserve + weight, self.burst) if bulk else 0.0

    def _pay(self, weight: float) -> None:
        self._tokens -= weight
        self.weight += weight

    async def acquire(self, weight: float, *, bulk: bool = False) -> None:
        self.requests += 1
        if weight <= 0:
            return
        bulk = bulk and self.reserve is not None
        self._refill()
        normal, bulk_lane = self._lanes
        if not normal and not (bulk and bulk_lane) and self._tokens >= self._needs(weight, bulk):
            self._pay(weight)  # nothing waits ahead of it and the balance allows: go
            return
        started = time.monotonic()
        granted = asyncio.get_running_loop().create_future()
        item = (weight, granted)
        self._lanes[bulk].append(item)
        self.queued += 1
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._grant(), name="weight-budget")
        try:
            await granted
        except asyncio.CancelledError:
            if not granted.done():
                granted.cancel()  # the scheduler skips it
            raise
        finally:
            self.queued -= 1
        waited = time.monotonic() - started
        self.delayed += 1
        self.wait_s += waited
        if bulk:
            self.bulk_delayed += 1
            self.bulk_max_wait_s = max(self.bulk_max_wait_s, waited)
        else:
            self.max_wait_s = max(self.max_wait_s, waited)

    async def _grant(self) -> None:
        """Hands the balance to the waiting requests, normal lane first."""
        while any(self._lanes):
            bulk = not self._lanes[0]
            lane = self._lanes[bulk]
            weight, granted = lane[0]
            if granted.done():  # cancelled while waiting
                lane.popleft()
                continue
            self._refill()
            need = self._needs(weight, bulk)
            if self._tokens >= need:
                lane.popleft()
                self._pay(weight)
                granted.set_result(None)
                continue
            self._arrived.clear()
            try:  # until the balance allows, or a new request arrives (it may go first)
                async with asyncio.timeout((need - self._tokens) / self._rate):
                    await self._arrived.wait()
            except TimeoutError:
                pass


def budget_for(purpose: Purpose, settings: ExchangeBudgetSettings | None = None) -> WeightBudget:
    settings = settings or ExchangeBudgetSettings()
    if purpose == "orders":
        return WeightBudget(settings.order_weight_per_min, settings.order_weight_burst,
                            settings.order_weight_reserve)
    return WeightBudget(settings.market_weight_per_min, settings.market_weight_burst)


# --- the client -----------------------------------------------------------------------------

# The HTTP status of the request in flight in this task (set by `on_rest_response`, read when
# `fetch` fails): concurrent requests run in their own tasks, so they never share one.
_http_status: contextvars.ContextVar[dict | None] = contextvars.ContextVar("qt_http_status", default=None)


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

    async def throttle(self, cost=None):
        bulk, self._bulk_next = getattr(self, "_bulk_next", False), False
        if self.budget is None:
            return await super().throttle(cost)
        await self.budget.acquire(1.0 if cost is None else float(cost), bulk=bulk)

    # -- errors --------------------------------------------------------------------------------

    def on_rest_response(self, code, reason, url, method, response_headers, response_body,
                         request_headers, request_body):
        box = _http_status.get()
        if box is not None:
            box["status"] = code
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
