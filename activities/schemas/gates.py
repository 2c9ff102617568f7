"""Arguments and results of the gate activities (`activities/gates.py`): no Redis or ccxt here."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from activities.schemas.market import SymbolRules
from activities.schemas.policy import TradePolicy
from trading.entry_plan import EntryPlan
from trading.entry_checks import EntryGuard
from trading.features import MarketFeatures
from trading.intent import TradeIntent


class AdoptPosition(BaseModel):
    """A TradeWorkflow's 4th argument (and its gates') when it takes over an orphan position that
    reconcile found: no entry is sent; the trade starts from the exchange's size and entry price."""

    quantity: Decimal  # contracts, unsigned (the side is the intent's)
    entry_price: Decimal
    leverage: int | None = None
    seen_at_ms: int  # when the reconcile run saw it (wall clock)
    reconcile_run_id: str
    # The ended trade that kept the symbol's lock (it could not get flat): its gates take the
    # lock over from it in one step, so nothing else can enter the symbol in between.
    takes_lock_from: str | None = None


class GateRequest(BaseModel):
    workflow_id: str
    intent: TradeIntent
    now_ms: int | None = None  # market time; None: the exchange's clock
    # The trade's first run id (kept through continue-as-new): a later run started under the
    # same workflow id after this one traded is refused (`workflow_id_reuse`).
    first_run_id: str | None = None
    # Reconcile hands an orphan position over (`AdoptPosition`): only the
    # symbol lock is a gate then (the position exists; safe mode never blocks protecting it).
    adopt: AdoptPosition | None = None


class GateVerdict(BaseModel):
    name: str
    passed: bool
    detail: str
    # False: not evaluated because an earlier, cheaper gate already refused the intent (the
    # verdict then counts as not passed, and its detail says which gate refused).
    checked: bool = True


class GateReport(BaseModel):
    passed: bool
    verdicts: list[GateVerdict]
    rejection_reason: str | None = None  # the first failed gate's detail
    lock_acquired: bool = False  # this workflow now owns quantum:lock:symbol:{symbol}
    market_rules: SymbolRules | None = None
    price: Decimal | None = None
    price_time_ms: int | None = None
    equity: Decimal | None = None
    free_margin: Decimal | None = None
    # The rules this trade will live by, read with the gates' own config (one activity, not two:
    # every activity costs the trade's history ~6 events).
    policy: TradePolicy | None = None
    # Market features at the decision (the kill score's "at entry"), read only when every gate
    # passed; None when the exchange has too little candle history.
    features: MarketFeatures | None = None
    # What the entry order re-checks when it goes out late (deviation limit, the gates' price).
    entry_guard: EntryGuard | None = None
    # The entry the workflow opens: levels, size, leverage, binding cap, planned by the market gate
    # at `price` with `policy` (None when a gate failed, and in reports from before it existed).
    plan: EntryPlan | None = None

    def verdict(self, name: str) -> GateVerdict:
        return next(v for v in self.verdicts if v.name == name)


class ReleaseLockRequest(BaseModel):
    workflow_id: str
    symbol: str
    cooldown_s: int = 0
    # Market time (ms) the cooldown ends; the gates compare it with the market clock. None with
    # cooldown_s > 0 (an older workflow): the cooldown is a wall-clock TTL, as before.
    cooldown_until_ms: int | None = None


class ReleaseLockResult(BaseModel):
    released: bool  # this workflow owned the lock and it is gone
    owner: str | None = None  # who held it before the call
    cooldown_s: int = 0
