"""`ExitState`s built from a few numbers, for the monitor's tests and benchmarks (not for trading)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from trading.exits import ExitState, StopKind
from trading.levels import Levels, TakeProfit
from trading.models import Side

D = Decimal


def exit_state(
    *,
    side: str | Side = "BUY",
    stop,
    take_profits: Sequence = (),
    fractions: Sequence | None = None,
    entry=None,
    tick="0.1",
    callback="0.01",
    tps_done: int = 0,
    extreme=None,
    opened_at_ms: int = 0,
    stop_kind: StopKind = StopKind.INITIAL,
) -> ExitState:
    """Levels anchored at `entry` (default: the stop ± 5 %); TPs close `fractions` (default: an
    equal share each). `tps_done` of them count as harvested already."""
    side = Side(side)
    stop = D(str(stop))
    entry = D(str(entry)) if entry is not None else (stop * D("1.05") if side is Side.BUY else stop * D("0.95"))
    prices = [D(str(p)) for p in take_profits]
    if fractions is None:
        fractions = [D(1) / len(prices)] * len(prices) if prices else []
    tps = tuple(TakeProfit(index=i, price=p, fraction=D(str(f)), distance_pct=abs(p - entry) / entry)
                for i, (p, f) in enumerate(zip(prices, fractions, strict=True), 1))
    levels = Levels(side=side, entry_price=entry, tick_size=D(tick), stop_loss=stop,
                    sl_distance_pct=abs(entry - stop) / entry, take_profits=tps,
                    trailing_callback_pct=D(callback))
    return ExitState(levels=levels, stop=stop, stop_kind=stop_kind, tps_done=tps_done,
                     extreme=D(str(extreme)) if extreme is not None else None,
                     opened_at=datetime.fromtimestamp(opened_at_ms / 1000, UTC))
