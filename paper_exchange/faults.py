"""Fault injection for tests (`/_paper/faults`): what the next matching requests suffer.

A rule matches a path (exact, e.g. `/fapi/v1/order`) and optionally a method, for its next
`count` requests (default 1), and does one of:
- `status` (+ `code`, `msg`): answer with that Binance error instead of processing;
- `latency_ms`: wait, then process normally (a client with a shorter timeout gives up while
  the order still happens: the "timed out but filled" case);
- `drop_after_accept`: process the request (the order exists), then close the connection
  without answering.
Rules live in memory only: a restart of the exchange clears them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from paper_exchange.errors import default_message, default_status


@dataclass
class FaultRule:
    path: str
    method: str | None = None
    count: int = 1
    status: int | None = None
    code: int | None = None
    msg: str | None = None
    latency_ms: int | None = None
    drop_after_accept: bool = False
    retry_after_s: int | None = None  # the `Retry-After` header Binance sends with 429 / 418

    @classmethod
    def parse(cls, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data.get("path"), str) or not data["path"].startswith("/"):
            raise ValueError("'path' (starting with /) is required")
        rule = cls(
            path=data["path"],
            method=data["method"].upper() if data.get("method") else None,
            count=int(data.get("count", 1)),
            status=int(data["status"]) if data.get("status") is not None else None,
            code=int(data["code"]) if data.get("code") is not None else None,
            msg=data.get("msg"),
            latency_ms=int(data["latency_ms"]) if data.get("latency_ms") is not None else None,
            drop_after_accept=bool(data.get("drop_after_accept", False)),
            retry_after_s=int(data["retry_after_s"]) if data.get("retry_after_s") is not None else None,
        )
        if rule.count < 1:
            raise ValueError("'count' must be ≥ 1")
        if rule.code is not None and rule.status is None:
            rule.status = default_status(rule.code)
        if rule.status is not None and rule.code is None:
            rule.code = -1001 if rule.status >= 500 else -1000
        if rule.status is not None and rule.msg is None:
            rule.msg = default_message(rule.code)
        if rule.status is None and rule.latency_ms is None and not rule.drop_after_accept:
            raise ValueError("give 'status'/'code', 'latency_ms' or 'drop_after_accept'")
        return rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first rule for this request, consuming one of its uses."""
        for rule in self.rules:
            if rule.path == path and rule.method in (None, method):
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
                return rule
        return None
