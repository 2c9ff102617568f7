"""The latest-price hash the market feed writes per symbol (`LATEST_PRICE_KEY`) and the gates
read, parsed in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from common.redis_values import decoded


@dataclass(frozen=True)
class LatestPrice:
    """The primary venue's fields of a LATEST_PRICE_KEY hash."""

    price: Decimal
    exchange_ms: int  # the exchange's time of the price (market clock)
    received_ms: int  # wall clock when the feed wrote it

    def age_ms(self, wall_ms: float) -> float:
        return wall_ms - self.received_ms


def parse_latest_price(fields: Mapping | None) -> LatestPrice | None:
    """The hash as HGETALL returns it (str or bytes); None when a field is missing or garbled."""
    text = {decoded(k): decoded(v) for k, v in (fields or {}).items()}
    try:
        return LatestPrice(Decimal(text["price"]), int(text["timestamp"]), int(text["received_ms"]))
    except (KeyError, ValueError, TypeError, InvalidOperation):
        return None
