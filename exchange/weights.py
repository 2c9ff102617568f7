"""Binance's request weights and the budget each client's throttle charges them against.

ccxt's own table is wrong for a few USD-M endpoints (positionRisk, account and balance cost 5,
not 1): `BINANCE_USDM_WEIGHTS` holds what Binance charges the IP. Each client gets a
`WeightBudget` (`budget_for(purpose)`), in which reads of history (fills, funding:
`BULK_ENDPOINTS`) go last and leave a reserve for orders.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Purpose = Literal["market", "orders"]
PURPOSES: tuple[Purpose, ...] = ("market", "orders")


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
