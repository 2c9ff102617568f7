"""Gate activities (SPEC stage 1): may this intent trade now? Every check's verdict, in one call.

The old system spread these checks over services whose guards raced (60 s in-flight locks,
safe mode with no known trigger). Here one activity reads Redis and the exchange, evaluates
every gate even after the first failure (the UI shows the whole picture), and only then takes
the per-symbol lock, so a rejected intent never holds a symbol. The lock's value is the owning
workflow id: a retried activity finds its own lock and passes, nobody else can take or free it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
import time
from datetime import UTC, datetime
from decimal import Decimal

import redis.asyncio as aioredis
from pydantic import BaseModel
from temporalio import activity

from exchange.client import ExchangeHolder, ExchangeSource, shared_exchange
from activities.adoption_gates import AdoptionGates
from activities.market import rules_from_market
from activities.schemas.gates import (  # noqa: F401 (re-exported)
    GateReport, GateRequest, GateVerdict, ReleaseLockRequest, ReleaseLockResult,
)
from activities.schemas.market import SymbolRules
from activities.schemas.policy import TradePolicy
from trading.features import MarketFeatures
from activities.risk_settings import RiskSettings
from activities.temporal_errors import to_application_error
from common.redis_values import decoded
from common.latest_price import parse_latest_price
from exchange.parse import balance_of, last_price, positions_of
from common.redis_keys import (COOLDOWN_KEY, FIRST_RUN_KEY, GATE_REJECTIONS_KEY, KILL_SWITCH_KEY, LOCK_KEY,
                               SAFE_MODE_KEY, latest_price_key)
from trading.entry_checks import EntryGuard, deviation_problem, price_deviation_pct
from trading.intent import TradeIntent, intent_age_s, is_from_future, is_stale
from trading.entry_plan import EntryPlan, plan_entry
from trading.levels import LevelsError

FIRST_RUN_TTL_S = 90 * 86_400

GATE_ORDER = (
    "workflow_id_reuse", "safe_mode", "kill_switch", "allowlist", "stale_intent", "future_intent",
    "confidence", "cooldown",
    "max_open_trades", "max_total_exposure", "free_margin", "position_size", "market",
    "price_deviation", "symbol_lock",
)

# Take the symbol lock and record which run traded under this workflow id, in one atomic step:
# a second run of the same workflow id (the CLI's default reuse policy allows one after the
# first closed) is refused here even if it raced the first run's record.
_TAKE_LUA = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return {0, owner, ''} end
if ARGV[2] ~= '' then
  local run = redis.call('GET', KEYS[2])
  if run and run ~= ARGV[2] then return {0, '', run} end
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) end
return {1, '', ''}
"""

# Delete the lock only if this workflow owns it, and start the cooldown, in one atomic step.
# The cooldown starts when we released it or nobody holds it (a retried release after the
# first one succeeded), never while another trade owns the symbol. Its value is the market
# time it ends (ARGV[3], ms; the gates compare it with the market clock); the wall-clock TTL
# (ARGV[2]) only cleans the key up. An empty ARGV[3] (older workflows) stores the workflow id
# and the TTL is the cooldown, as before.
_RELEASE_LUA = """
local owner = redis.call('GET', KEYS[1])
local released = 0
if owner == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
if (released == 1 or not owner) and tonumber(ARGV[2]) > 0 then
  local value = ARGV[1]
  if ARGV[3] ~= '' then value = ARGV[3] end
  redis.call('SET', KEYS[2], value, 'EX', ARGV[2])
end
return {released, owner or ''}
"""
# A market-time cooldown's key outlives it in wall time (the market clock may run slower).
_COOLDOWN_KEY_TTL_MIN_S = 86_400


FeatureSource = Callable[[str], Awaitable[MarketFeatures | None]]


def lock_key(symbol: str) -> str:
    return LOCK_KEY.format(symbol=symbol.upper())


def cooldown_key(symbol: str) -> str:
    return COOLDOWN_KEY.format(symbol=symbol.upper())


def first_run_key(workflow_id: str) -> str:
    return FIRST_RUN_KEY.format(workflow_id=workflow_id)



def _ttl_text(ttl: int) -> str:
    return f"expires in {ttl} s" if ttl > 0 else "no expiry"


def _passed(verdicts: list[GateVerdict], name: str) -> bool:
    return next(v.passed for v in verdicts if v.name == name)


def _cooldown_verdict(symbol: str, snap: _Snapshot, now_ms: int) -> GateVerdict:
    """The cooldown ends at a market time (like every other lifecycle rule); a key written by an
    older workflow holds its id and lasts its wall-clock TTL."""
    name = "cooldown"
    if snap.cooldown_ttl == -2:  # no key (-1: a key without expiry)
        return GateVerdict(name=name, passed=True, detail=f"{symbol} is not cooling down")
    value = snap.cooldown_value or ""
    if not value.isdigit():
        return GateVerdict(name=name, passed=False,
                           detail=f"{symbol} is cooling down after a close ({_ttl_text(snap.cooldown_ttl)})")
    until_ms = int(value)
    until = datetime.fromtimestamp(until_ms / 1000, tz=UTC)
    if now_ms >= until_ms:
        return GateVerdict(name=name, passed=True,
                           detail=f"{symbol} cooled down (until {until:%H:%M:%S} UTC market time)")
    return GateVerdict(name=name, passed=False,
                       detail=f"{symbol} is cooling down after a close until {until:%Y-%m-%d %H:%M:%S} "
                              f"UTC market time ({(until_ms - now_ms) / 1000:.0f} s left)")


def _reason_of(raw: str) -> str:
    try:
        return str(json.loads(raw).get("reason", raw))
    except (ValueError, AttributeError):
        return raw


class _Snapshot(BaseModel):
    """Everything the gates read, gathered before any verdict is made."""

    safe_mode: str | None
    safe_mode_ttl: int
    kill_switch: str | None
    cooldown_ttl: int
    cooldown_value: str | None = None  # market time (ms) the cooldown ends; older: a workflow id
    first_run: str | None = None  # the run that already traded under this workflow id
    lock_owner: str | None
    locked_symbols: set[str]
    rules: SymbolRules | None = None
    price: Decimal | None = None
    price_time_ms: int | None = None
    clock_ms: int | None = None  # the market clock: the feed's price time, else the exchange's
    clock_from_exchange: bool = False
    read_at_ms: int | None = None  # wall clock when the exchange was read (the price's age)
    equity: Decimal | None = None
    free_margin: Decimal | None = None
    open_notional: dict[str, Decimal] = {}  # symbol id -> |notional| of open positions
    open_quantity: dict[str, Decimal] = {}  # symbol id -> signed size of open positions (adoption)
    plan: EntryPlan | None = None  # the market gate's entry plan, handed to the workflow


class GateActivities(AdoptionGates):
    def __init__(self, redis: aioredis.Redis, settings: RiskSettings | None = None,
                 exchange: ExchangeSource = shared_exchange, policy: TradePolicy | None = None,
                 features: FeatureSource | None = None) -> None:
        self._redis = redis
        self._features = features  # e.g. MarketActivities.features
        self._settings = settings or RiskSettings()
        self._policy = policy  # handed to the workflow with the report
        self._holder = ExchangeHolder(exchange)

    # -- reading ---------------------------------------------------------------------------------

    async def _read_redis(self, request: GateRequest) -> _Snapshot:
        """The flags, locks, cooldown and run record (one round trip), the feed's price if
        fresh, and the market clock: everything the exchange-free gates need."""
        r, symbol = self._redis, request.intent.symbol
        async with r.pipeline(transaction=False) as pipe:
            pipe.get(SAFE_MODE_KEY).ttl(SAFE_MODE_KEY).get(KILL_SWITCH_KEY)
            pipe.ttl(cooldown_key(symbol)).get(cooldown_key(symbol)).get(lock_key(symbol))
            pipe.get(first_run_key(request.workflow_id)).hgetall(latest_price_key(symbol))
            *replies, feed = await pipe.execute()
            safe, safe_ttl, kill, cool_ttl, cool_value, owner, first_run = map(decoded, replies)
        prefix = LOCK_KEY.format(symbol="")
        locked = {decoded(k)[len(prefix):] async for k in r.scan_iter(match=prefix + "*", count=500)}
        price, price_time = self._feed_price(feed)
        return _Snapshot(safe_mode=safe, safe_mode_ttl=safe_ttl, kill_switch=kill, cooldown_ttl=cool_ttl,
                         cooldown_value=cool_value, first_run=first_run, lock_owner=owner,
                         locked_symbols=locked, price=price, price_time_ms=price_time,
                         clock_ms=price_time)

    async def _market_clock(self, snap: _Snapshot) -> None:
        """Market time for the stale and future checks: the feed's price time, else the
        exchange's clock (`price_time_ms` then carries it, as the report always did)."""
        if snap.clock_ms is None:
            await self._exchange_clock(snap)
            snap.price_time_ms = snap.clock_ms

    async def _exchange_clock(self, snap: _Snapshot) -> None:
        exchange = await self._holder.exchange()
        try:
            snap.clock_ms = int(await exchange.fetch_time())
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        snap.clock_from_exchange = True

    async def _read_exchange(self, symbol: str, snap: _Snapshot) -> None:
        """Rules, price (unless the feed gave a fresh one), balance and positions: the calls that
        spend the exchange's request budget, made only for an intent the cheap gates let through."""
        exchange = await self._holder.exchange()
        market = (exchange.markets_by_id or {}).get(symbol)
        try:
            if market:
                unified = market[0]["symbol"]
                snap.rules = rules_from_market(exchange.market(unified), None)
                if snap.price is None:  # no fresh price from the market feed: ask the exchange
                    snap.price = last_price(await exchange.fetch_ticker(unified))
            balance = balance_of(await exchange.fetch_balance())
            positions = positions_of(await exchange.fetch_positions())
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        for position in positions:
            snap.open_notional[position.symbol] = position.notional
            snap.open_quantity[position.symbol] = position.quantity
        snap.read_at_ms = int(time.time() * 1000)
        snap.equity = balance.margin_balance
        snap.free_margin = balance.available_balance

    def _feed_price(self, fields: dict) -> tuple[Decimal | None, int | None]:
        """The market feed's latest price and its exchange time, if the feed received it within
        `feed_price_max_age_ms` of now (wall clock); else (None, None)."""
        max_age = self._settings.feed_price_max_age_ms
        feed = parse_latest_price(fields)
        if feed is None:
            return None, None
        fresh = max_age > 0 and abs(feed.age_ms(time.time() * 1000)) <= max_age
        usable = fresh and feed.price.is_finite() and feed.price > 0
        return (feed.price, feed.exchange_ms) if usable else (None, None)

    # -- verdicts --------------------------------------------------------------------------------

    def _redis_verdicts(self, request: GateRequest, snap: _Snapshot) -> list[GateVerdict]:
        """The gates decided by Redis and the market clock alone (no exchange budget spent)."""
        s, intent, symbol = self._settings, request.intent, request.intent.symbol
        out: list[GateVerdict] = []

        def gate(name: str, passed: bool, fail: str, ok: str) -> None:
            out.append(GateVerdict(name=name, passed=passed, detail=ok if passed else fail))

        if request.first_run_id is None:
            gate("workflow_id_reuse", True, "", "not checked: the workflow sent no run id")
        else:
            gate("workflow_id_reuse", snap.first_run in (None, request.first_run_id),
                 f"workflow id {request.workflow_id} was already used by run {snap.first_run}, "
                 "which passed the gates and may have traded: a trade id is used once (send a "
                 "new intent_id)",
                 f"first run under {request.workflow_id}")
        gate("safe_mode", snap.safe_mode is None,
             f"safe mode is on ({_reason_of(snap.safe_mode or '')}; {_ttl_text(snap.safe_mode_ttl)})",
             "safe mode is off")
        gate("kill_switch", snap.kill_switch is None,
             f"kill switch is on ({_reason_of(snap.kill_switch or '')})", "kill switch is off")
        gate("allowlist", not s.allowlist or symbol in s.allowlist,
             f"{symbol} is not in the allowlist ({', '.join(s.allowlist)})",
             "allowlist is empty: every market allowed" if not s.allowlist else f"{symbol} is allowed")

        now_ms = request.now_ms or snap.clock_ms or int(time.time() * 1000)
        now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        age = intent_age_s(intent, now)
        gate("stale_intent", not is_stale(intent, now, s.max_intent_age_s),
             f"intent is stale: {age:.0f} s old at market time (max {s.max_intent_age_s:g} s)",
             f"intent is {age:.0f} s old (max {s.max_intent_age_s:g} s)")
        gate("future_intent", not is_from_future(intent, now, s.max_intent_future_s),
             f"intent is stamped {-age:.0f} s in the future of the market clock "
             f"({intent.timestamp:%Y-%m-%d %H:%M:%S} UTC vs {now:%Y-%m-%d %H:%M:%S} UTC; max "
             f"{s.max_intent_future_s:g} s): the producer's clock or time unit is wrong",
             f"not from the future (tolerance {s.max_intent_future_s:g} s)")
        gate("confidence", intent.confidence >= s.min_confidence,
             f"confidence {intent.confidence:g} is below the threshold {s.min_confidence:g}",
             f"confidence {intent.confidence:g} >= {s.min_confidence:g}")
        out.append(_cooldown_verdict(symbol, snap, now_ms))
        return out

    def _exchange_verdicts(self, request: GateRequest, snap: _Snapshot) -> list[GateVerdict]:
        s, intent, symbol = self._settings, request.intent, request.intent.symbol
        out: list[GateVerdict] = []

        def gate(name: str, passed: bool, fail: str, ok: str) -> None:
            out.append(GateVerdict(name=name, passed=passed, detail=ok if passed else fail))

        others = (set(snap.open_notional) | snap.locked_symbols) - {symbol}
        gate("max_open_trades", len(others) < s.max_open_trades,
             f"{len(others)} trades are open (max {s.max_open_trades})",
             f"{len(others)} other trades open (max {s.max_open_trades})")

        leverage = min(intent.leverage, s.max_leverage)
        market = self._plan(intent, snap, leverage)  # the entry plan (snap.plan) or why there is none
        if snap.plan is not None:
            planned = snap.plan.sizing.notional  # what the workflow will open
        else:  # no plan (the market gate says why): the most the intent could open
            planned = intent.position_size_usd * leverage  # position_size_usd is margin (sizing.py)
        if s.max_notional_usd is not None:
            planned = min(planned, s.max_notional_usd)
        exposure = sum(snap.open_notional.values(), Decimal(0))
        gate("max_total_exposure", exposure + planned <= s.max_total_exposure_usd,
             f"total exposure would be {exposure + planned:.2f} USDT (open {exposure:.2f} + "
             f"this trade {planned:.2f}; max {s.max_total_exposure_usd})",
             f"total exposure {exposure:.2f} + {planned:.2f} <= {s.max_total_exposure_usd} USDT")
        free = snap.free_margin or Decimal(0)
        gate("free_margin", free >= s.min_free_margin_usd and free > 0,
             f"free margin {free:.2f} USDT is below {s.min_free_margin_usd} USDT",
             f"free margin {free:.2f} USDT")
        # More margin than the whole account can never be posted, so such a request is a
        # producer's mistake (a unit mix-up), not a trade to cap silently. position_size_usd is
        # margin, or notional when the sizing policy reads it so (then margin = size / leverage).
        equity = snap.equity or Decimal(0)
        size_is_margin = self._policy.sizing.intent_size_is_margin if self._policy else True
        margin = intent.position_size_usd if size_is_margin else intent.position_size_usd / leverage
        gate("position_size", margin <= equity,
             f"position_size_usd {intent.position_size_usd:f} is more than the account's equity "
             f"{equity:.2f} USDT: it could never be margined",
             f"position_size_usd {intent.position_size_usd:f} needs {margin:.2f} <= equity {equity:.2f} USDT")

        out.append(market)
        out.append(self._deviation_verdict(intent, snap))
        return out

    def _plan(self, intent: TradeIntent, snap: _Snapshot, leverage: int) -> GateVerdict:
        """The `market` verdict: the entry plan the workflow will open (trading/entry_plan.py),
        with the trade's own policy: its levels at today's price and the size they allow; kept in
        `snap.plan` when it can open (the exposure gate checks its notional)."""
        name = "market"
        if snap.rules is None or snap.price is None:
            return GateVerdict(name=name, passed=False,
                               detail=f"market {intent.symbol} does not exist on the exchange")
        policy = self._policy or TradePolicy()
        try:
            plan = plan_entry(intent, snap.price, tick_size=snap.rules.tick_size, market=snap.rules.sizing_rules(),
                              equity=snap.equity or Decimal(0), free_margin=snap.free_margin or Decimal(0),
                              levels=policy.levels, sizing=policy.sizing if self._policy else
                              self._settings.sizing_policy(), leverage=leverage)
        except (LevelsError, ValueError) as err:
            return GateVerdict(name=name, passed=False, detail=f"no entry plan: {err}")
        sizing = plan.sizing
        if not sizing.ok:
            return GateVerdict(name=name, passed=False,
                               detail=f"min notional not reachable: {sizing.rejected_reason}")
        snap.plan = plan
        return GateVerdict(name=name, passed=True,
                           detail=f"{sizing.quantity} contracts ({sizing.notional:.2f} USDT) ×{sizing.leverage} "
                                  f">= min notional {snap.rules.min_notional}, stop {plan.levels.stop_loss}")

    def _deviation_verdict(self, intent: TradeIntent, snap: _Snapshot) -> GateVerdict:
        name = "price_deviation"
        if snap.price is None:
            return GateVerdict(name=name, passed=False, detail="no market price")
        limit = self._settings.max_entry_deviation_pct
        problem = deviation_problem(intent.entry_price, snap.price, limit)
        if problem:
            return GateVerdict(name=name, passed=False, detail=problem)
        deviation = price_deviation_pct(intent.entry_price, snap.price)
        return GateVerdict(name=name, passed=True,
                           detail=f"price {snap.price} is {deviation:.2f} % from entry (max {limit:g} %)")

    async def _lock_verdict(self, request: GateRequest, owner: str | None,
                            take: bool) -> tuple[GateVerdict, bool]:
        workflow_id, symbol = request.workflow_id, request.intent.symbol
        name, key = "symbol_lock", lock_key(symbol)
        if take and owner is None:
            # One atomic step: of two workflows racing for the symbol exactly one wins, and a
            # second run of this workflow id racing the first one's record is refused.
            taken, owner, first_run = await self._redis.eval(
                _TAKE_LUA, 2, key, first_run_key(workflow_id), workflow_id,
                request.first_run_id or "", FIRST_RUN_TTL_S)
            owner, first_run = decoded(owner) or None, decoded(first_run) or None
            if int(taken):
                return GateVerdict(name=name, passed=True, detail=f"lock on {symbol} taken"), True
            if first_run is not None:
                return GateVerdict(name=name, passed=False,
                                   detail=f"workflow id {workflow_id} was already used by run "
                                          f"{first_run}"), False
        if owner == workflow_id:
            return GateVerdict(name=name, passed=True,
                               detail=f"lock on {symbol} already held by this workflow"), take
        if owner is not None:
            return GateVerdict(name=name, passed=False,
                               detail=f"{symbol} already has an open trade (workflow {owner})"), False
        return GateVerdict(name=name, passed=True,
                           detail=f"{symbol} is free (lock not taken: another gate failed)"), False

    # -- activities ------------------------------------------------------------------------------

    @activity.defn(name="run_gates")
    async def run_gates(self, request: GateRequest) -> GateReport:
        if request.adopt is not None:
            return await self._adoption_gates(request)
        symbol = request.intent.symbol
        snap = await self._read_redis(request)
        if request.now_ms is None:
            await self._market_clock(snap)
        verdicts = self._redis_verdicts(request, snap)
        if request.now_ms is None and not snap.clock_from_exchange and not _passed(verdicts, "future_intent"):
            # The feed's last price can be a poll behind the exchange's clock (at a fast replay,
            # minutes of market time): ask the exchange itself before calling an intent early.
            await self._exchange_clock(snap)
            verdicts = self._redis_verdicts(request, snap)
        refused = next((v.name for v in verdicts if not v.passed), None)
        if refused is None:
            await self._read_exchange(symbol, snap)
            verdicts += self._exchange_verdicts(request, snap)
        else:
            # A stale intent (a replayed backlog), safe mode, the kill switch...: it cannot trade,
            # so it spends none of the exchange's request budget that live trades need.
            verdicts += [GateVerdict(name=name, passed=False, checked=False,
                                     detail=f"not checked: already refused by {refused}")
                         for name in GATE_ORDER[len(verdicts):-1]]
        others_ok = all(v.passed for v in verdicts)
        lock, acquired = await self._lock_verdict(request, snap.lock_owner, take=others_ok)
        verdicts.append(lock)
        failed = [v for v in verdicts if not v.passed]
        features = await self._features_of(symbol) if not failed else None
        if failed:
            await self._count_rejection(failed[0].name)
        s = self._settings
        guard = EntryGuard(side=request.intent.side, intent_entry_price=request.intent.entry_price,
                           max_deviation_pct=s.max_entry_deviation_pct, gate_price=snap.price,
                           recheck_after_s=s.entry_recheck_after_s, gated_at_ms=snap.read_at_ms)
        return GateReport(
            passed=not failed, verdicts=verdicts,
            rejection_reason=f"{failed[0].name}: {failed[0].detail}" if failed else None,
            lock_acquired=acquired and not failed, market_rules=snap.rules, price=snap.price,
            price_time_ms=snap.price_time_ms, equity=snap.equity, free_margin=snap.free_margin,
            policy=self._policy, features=features, entry_guard=None if failed else guard,
            plan=None if failed else snap.plan,
        )

    async def _count_rejection(self, gate: str) -> None:
        """Counted per refusing gate (at least once: a retried activity may count twice)."""
        try:
            await self._redis.hincrby(GATE_REJECTIONS_KEY, gate, 1)
        except Exception as exc:  # noqa: BLE001 - a statistic never decides a trade
            activity.logger.warning("gate rejection not counted: %s", exc)

    async def _features_of(self, symbol: str) -> MarketFeatures | None:
        """Features are an input of the kill score, not a gate: a failure here costs the trade
        its kill score (logged), never its entry."""
        if self._features is None:
            return None
        try:
            return await self._features(symbol)
        except Exception as exc:  # noqa: BLE001
            activity.logger.warning("features for %s unavailable: %s", symbol, exc)
            return None

    @activity.defn(name="release_symbol_lock")
    async def release_symbol_lock(self, request: ReleaseLockRequest) -> ReleaseLockResult:
        cooldown_s, until = max(0, request.cooldown_s), request.cooldown_until_ms
        ttl = max(cooldown_s * 10, _COOLDOWN_KEY_TTL_MIN_S) if until is not None and cooldown_s else cooldown_s
        released, owner = await self._redis.eval(
            _RELEASE_LUA, 2, lock_key(request.symbol), cooldown_key(request.symbol),
            request.workflow_id, ttl, "" if until is None else str(until))
        return ReleaseLockResult(released=bool(int(released)), owner=decoded(owner) or None,
                                 cooldown_s=max(0, request.cooldown_s))
