"""Is the market still where the gates saw it? The price-deviation rule, decided here once.

The gates ask it before anything is sent (`price_deviation`); the entry order asks it again when
it goes out late (a retry after a worker crash, a queue backlog): an entry sent 13 s after the
gates with the market 2.5 % away is not the trade the gates let through.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from trading.levels import stop_would_trigger
from trading.models import Side


def price_deviation_pct(reference: Decimal, price: Decimal) -> Decimal:
    """|price - reference| as a percentage of `reference` (the intent's entry price)."""
    if reference <= 0:
        raise ValueError(f"reference price must be > 0, got {reference}")
    return abs(price - reference) / reference * 100


def deviation_problem(reference: Decimal, price: Decimal, max_pct: float) -> str | None:
    """None when `price` is within `max_pct` % of `reference`, else a readable refusal."""
    deviation = price_deviation_pct(reference, price)
    if deviation > Decimal(str(max_pct)):
        return (f"price moved {deviation:.2f} % from the intent's entry {reference} to {price} "
                f"(max {max_pct:g} %)")
    return None


class EntryGuard(BaseModel):
    """What a late entry order re-checks against the live price before it is sent.

    Built by the gates (their limit and price) and completed by the workflow (the planned stop
    and when the gates decided, wall clock of the workflow task)."""

    model_config = ConfigDict(frozen=True)

    side: Side
    intent_entry_price: Decimal
    max_deviation_pct: float
    gate_price: Decimal | None = None
    recheck_after_s: float = 3.0  # an order sent later than this after the gates re-checks
    planned_stop: Decimal | None = None
    gated_at_ms: int | None = None

    def is_late(self, now_ms: int, attempt: int) -> bool:
        """A retried attempt is always late; a first one when it runs after the window."""
        if attempt > 1:
            return True
        return self.gated_at_ms is not None and now_ms - self.gated_at_ms > self.recheck_after_s * 1000


def late_entry_problems(guard: EntryGuard, live_price: Decimal) -> list[str]:
    """Why an entry must not go out at `live_price` (empty: it may)."""
    problems = []
    if (problem := deviation_problem(guard.intent_entry_price, live_price, guard.max_deviation_pct)):
        problems.append(problem)
    if guard.planned_stop is not None and stop_would_trigger(guard.side, guard.planned_stop, live_price):
        problems.append(f"the price {live_price} is already beyond the planned stop {guard.planned_stop}")
    return problems
