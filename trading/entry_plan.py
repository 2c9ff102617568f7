"""The one entry plan: the adaptive levels, the size, the leverage and the binding cap of an
intent at a price. The gates plan with it (their min-notional and margin checks are checks of
this plan) and hand it to the workflow in their report, which opens exactly that plan: the gates
can no longer pass a trade the workflow would then size differently and refuse. Pure."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from trading.intent import TradeIntent
from trading.levels import LevelPolicy, Levels, levels_for_intent
from trading.sizing import MarketRules, SizingPolicy, SizingResult, size_position


class EntryPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    price: Decimal  # the price it was planned at (the gates' read of the market)
    levels: Levels
    sizing: SizingResult  # quantity, leverage, the binding cap; `rejected_reason` when it cannot open

    @property
    def ok(self) -> bool:
        return self.sizing.ok


def plan_entry(intent: TradeIntent, price: Decimal, *, tick_size: Decimal, market: MarketRules, equity: Decimal,
               free_margin: Decimal, levels: LevelPolicy, sizing: SizingPolicy,
               leverage: int | None = None) -> EntryPlan:
    """Levels from the intent at `price` (re-based on the real fill later), then the size those
    levels allow (`leverage`: the intent's, unless the caller caps it first). Raises `LevelsError` /
    `ValueError` for an intent no levels can be planned for."""
    planned = levels_for_intent(intent, tick_size=tick_size, entry_price=price, policy=levels)
    size = size_position(
        side=intent.side, entry_price=price, stop_price=planned.stop_loss, confidence=intent.confidence,
        equity=equity, free_margin=free_margin, intent_size_usd=intent.position_size_usd,
        intent_leverage=leverage if leverage is not None else intent.leverage, market=market, policy=sizing)
    return EntryPlan(price=price, levels=planned, sizing=size)


def plan_adoption(intent: TradeIntent, *, quantity: Decimal, leverage: int, tick_size: Decimal,
                  levels: LevelPolicy) -> EntryPlan:
    """The plan of a position found on the exchange (reconcile's adopt): the levels the policy
    gives at its entry price (`intent.entry_price`), and its real size (nothing is sized: the
    position exists). Raises `LevelsError` / `ValueError` like `plan_entry`."""
    price = intent.entry_price
    planned = levels_for_intent(intent, tick_size=tick_size, entry_price=price, policy=levels)
    notional = quantity * price
    loss = abs(price - planned.stop_loss) * quantity
    size = SizingResult(quantity=quantity, notional=notional, margin=notional / max(1, leverage), leverage=leverage,
                        risk_budget=loss, loss_at_stop=loss, binding_cap="adopted",
                        cap_quantities={"adopted": quantity})
    return EntryPlan(price=price, levels=planned, sizing=size)
