"""The gates of a trade that takes over an orphan position reconcile found (`GateRequest.adopt`):
a mixin of `GateActivities` (activities/gates.py), whose Redis and exchange reads it reuses.

Only the symbol lock is a gate then (nobody else may manage the symbol), and the kill switch (the
operator is flattening: nothing is taken over). The levels are planned at the position's entry
price with the trade's policy (`trading/entry_plan.plan_adoption`). Safe mode and the risk limits
do not apply: the position exists already, and protecting it is what they are for.
"""

from __future__ import annotations

from activities.schemas.gates import GateReport, GateRequest, GateVerdict
from common.redis_keys import LOCK_KEY
from common.safe_mode import parse_safe_mode
from activities.schemas.policy import TradePolicy
from trading.entry_plan import plan_adoption
from trading.levels import LevelsError

# Hand a symbol lock over from an ended owner (ARGV[1]) to the adopting trade (ARGV[2]).
_HANDOVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class AdoptionGates:
    async def _adoption_gates(self, request: GateRequest) -> GateReport:
        """The report of an adoption (see the module docstring); an ended owner's lock is handed
        over first, in one step, so nothing else can enter the symbol in between."""
        intent, adopt = request.intent, request.adopt
        snap = await self._read_redis(request)
        if adopt.takes_lock_from and snap.kill_switch is None and snap.lock_owner == adopt.takes_lock_from:
            # The ended owner's lock passes to this trade in one step: nothing enters in between.
            key = LOCK_KEY.format(symbol=intent.symbol.upper())
            if int(await self._redis.eval(_HANDOVER_LUA, 1, key, adopt.takes_lock_from, request.workflow_id)):
                snap.lock_owner = request.workflow_id
        await self._market_clock(snap)
        await self._read_exchange(intent.symbol, snap)
        policy = self._policy or TradePolicy()
        plan, verdicts = None, []
        if snap.kill_switch is not None:  # the operator is flattening: nothing is taken over
            reason = parse_safe_mode(snap.kill_switch, -1).reason
            verdicts.append(GateVerdict(name="kill_switch", passed=False,
                                        detail=f"kill switch is on ({reason}): not adopted"))
        elif snap.open_quantity.get(intent.symbol) != (adopt.quantity if intent.side.value == "BUY"
                                                       else -adopt.quantity):
            verdicts.append(GateVerdict(name="position", passed=False, detail=(
                f"the exchange holds {snap.open_quantity.get(intent.symbol, 0)} {intent.symbol}, reconcile saw "
                f"{intent.side.value} {adopt.quantity}: not adopted (the next run looks again)")))
        elif snap.rules is None:
            verdicts.append(GateVerdict(name="market", passed=False,
                                        detail=f"market {intent.symbol} does not exist on the exchange"))
        else:
            try:
                plan = plan_adoption(intent, quantity=adopt.quantity, leverage=adopt.leverage or intent.leverage,
                                     tick_size=snap.rules.tick_size, levels=policy.levels)
                verdicts.append(GateVerdict(name="market", passed=True,
                                            detail=f"adopting {adopt.quantity} @ {adopt.entry_price}, "
                                                   f"stop {plan.levels.stop_loss}"))
            except (LevelsError, ValueError) as err:
                verdicts.append(GateVerdict(name="market", passed=False, detail=f"no levels: {err}"))
        lock, acquired = await self._lock_verdict(request, snap.lock_owner, take=plan is not None)
        verdicts.append(lock)
        failed = [v for v in verdicts if not v.passed]
        return GateReport(
            passed=not failed, verdicts=verdicts,
            rejection_reason=f"{failed[0].name}: {failed[0].detail}" if failed else None,
            lock_acquired=acquired and not failed, market_rules=snap.rules, price=snap.price,
            price_time_ms=snap.price_time_ms, equity=snap.equity, free_margin=snap.free_margin,
            policy=self._policy, features=await self._features_of(intent.symbol) if not failed else None,
            plan=None if failed else plan)
