"""The Binance route table and the per-request context its handlers receive.

Handlers are plain functions `(call) -> JSON body` registered with `@route(...)`; app.py does
the HTTP part (parameters, faults, authentication, catch-up, persistence, errors) once for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paper_exchange.engine import Engine
from paper_exchange.errors import BinanceError
from paper_exchange.faults import FaultRule
from paper_exchange.models import Market
from paper_exchange.order_params import integer, market_of
from paper_exchange.service import PaperExchange


@dataclass
class Call:
    svc: PaperExchange
    params: dict[str, str]
    now: int  # market time
    wall: int
    method: str
    path: str
    fault: FaultRule | None = None

    @property
    def engine(self) -> Engine:
        return self.svc.engine

    def market(self) -> Market:
        return market_of(self.params, self.svc.markets)

    def optional_market(self) -> Market | None:
        return self.market() if self.params.get("symbol") else None

    def int_param(self, name: str) -> int | None:
        return integer(self.params, name)

    def limit(self, default: int, maximum: int) -> int:
        value = self.int_param("limit")
        if value is None:
            return default
        if not 1 <= value <= maximum:
            raise BinanceError(-1130, "limit")
        return value

    def audit(self, result: str, **fields: Any) -> None:
        if self.fault is not None and self.fault.drop_after_accept:
            fields.setdefault("extra", {})["fault"] = "drop_after_accept"
        self.engine.audit(result, self.now, method=self.method, path=self.path, **fields)


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Route:
    handler: Handler
    private: bool  # signed: X-MBX-APIKEY + HMAC signature + timestamp
    audited: bool  # an order request: every outcome goes to the audit log


ROUTES: dict[tuple[str, str], Route] = {}


def route(method: str, path: str, *, private: bool = False, audited: bool = False):
    def register(handler: Handler) -> Handler:
        ROUTES[(method, path)] = Route(handler, private, audited)
        return handler

    return register


def window(call: Call, records: list, time_of: Callable[[Any], int], default_limit: int,
           max_limit: int, default_span: int | None = None) -> list:
    """Binance's startTime/endTime/limit selection over time-ordered records."""
    start, end = call.int_param("startTime"), call.int_param("endTime")
    limit = call.limit(default_limit, max_limit)
    if start is None and end is None and default_span is not None:
        start = call.now - default_span
    selected = [r for r in records if (start is None or time_of(r) >= start)
                and (end is None or time_of(r) <= end)]
    if call.params.get("startTime"):
        return selected[:limit]
    return selected[-limit:]
