"""Gate activities against the real paper exchange and real Redis: one test per gate.

Every report must carry every gate's verdict; a rejection names the first failed gate in
readable words; the symbol lock belongs to exactly one workflow id.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.testing import ActivityEnvironment

from activities.gates import GATE_ORDER, GateActivities, GateRequest, ReleaseLockRequest, cooldown_key, lock_key
from activities.schemas.gates import AdoptPosition
from common.safe_mode import clear_safe_mode, set_safe_mode
from common.redis_keys import GATE_REJECTIONS_KEY, KILL_SWITCH_KEY, SAFE_MODE_KEY
from activities.risk_settings import RiskSettings
from signals_ingest.feed_settings import FeedSettings
from signals_ingest.market_feed import MarketFeed
from common.redis_keys import latest_price_key
from trading.intent import TradeIntent

pytestmark = pytest.mark.integration
BTC = "BTCUSDT"


async def run(fn, arg):
    return await ActivityEnvironment().run(fn, arg)


@pytest.fixture
def market_now(paper) -> datetime:
    paper.set_price(BTC, 63000)
    return datetime.fromtimestamp(paper.clock()["market_ms"] / 1000, tz=UTC)


def make_intent(now: datetime, **changes) -> TradeIntent:
    fields = dict(symbol=BTC, side="BUY", confidence=0.8, entry_price="63000", stop_loss="62000",
                  take_profit="65000", position_size_usd="100", leverage=5, timestamp=now)
    fields.update(changes)
    return TradeIntent.model_validate(fields)


def gates(exchange, redis_client, **risk) -> GateActivities:
    return GateActivities(redis_client, RiskSettings(**risk), exchange)


async def check(acts, intent, workflow_id="trade-a"):
    return await run(acts.run_gates, GateRequest(workflow_id=workflow_id, intent=intent))


async def assert_rejected_by(acts, intent, gate: str, *words: str, workflow_id: str = "trade-a"):
    report = await check(acts, intent, workflow_id)
    assert not report.passed and not report.lock_acquired
    assert [v.name for v in report.verdicts] == list(GATE_ORDER)  # every verdict, always
    assert [v.name for v in report.verdicts if not v.passed and v.checked] == [gate]
    # Once an exchange-free gate refused, the exchange gates are not evaluated (no calls spent).
    skipped = [v for v in report.verdicts if not v.checked]
    assert all(not v.passed and v.detail == f"not checked: already refused by {gate}" for v in skipped)
    assert report.rejection_reason.startswith(f"{gate}: ")
    for word in words:
        assert word in report.rejection_reason, report.rejection_reason
    return report


async def test_all_gates_pass_and_report_everything(exchange, redis_client, market_now):
    report = await check(gates(exchange, redis_client), make_intent(market_now))
    assert report.passed and report.lock_acquired and report.rejection_reason is None
    assert [v.name for v in report.verdicts] == list(GATE_ORDER)
    assert all(v.passed and v.detail for v in report.verdicts)
    assert report.price == Decimal("63000.00") and report.equity == Decimal("10000")
    assert report.market_rules.min_notional == Decimal("100") and report.free_margin > 0
    assert await redis_client.get(lock_key(BTC)) == "trade-a"
    # The entry plan the workflow will open, planned at the gates' price (trading/entry_plan.py).
    plan = report.plan
    assert plan.ok and plan.price == report.price and plan.levels.stop_loss < report.price
    assert plan.sizing.notional >= report.market_rules.min_notional
    assert f"{plan.sizing.quantity} contracts" in report.verdict("market").detail


async def test_safe_mode_with_ttl(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    await set_safe_mode(redis_client, reason="5 order failures in 60 s", ttl_s=1, set_by="test")
    assert 0 < await redis_client.ttl(SAFE_MODE_KEY) <= 1
    await assert_rejected_by(acts, make_intent(market_now), "safe_mode", "5 order failures", "expires in")
    await asyncio.sleep(1.1)  # the TTL ends safe mode by itself
    assert (await check(acts, make_intent(market_now))).passed


async def test_clear_safe_mode(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    await set_safe_mode(redis_client, reason="price error", ttl_s=600, set_by="test")
    await assert_rejected_by(acts, make_intent(market_now), "safe_mode", "price error")
    await clear_safe_mode(redis_client)
    assert (await check(acts, make_intent(market_now))).passed


async def test_kill_switch(exchange, redis_client, market_now):
    await redis_client.set(KILL_SWITCH_KEY, "operator")
    await assert_rejected_by(gates(exchange, redis_client), make_intent(market_now), "kill_switch", "kill switch is on")


async def test_allowlist(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client, allowlist=["ETHUSDT"])
    await assert_rejected_by(acts, make_intent(market_now), "allowlist", "BTCUSDT is not in the allowlist")


async def test_stale_intent_by_market_time(exchange, redis_client, market_now):
    intent = make_intent(market_now - timedelta(seconds=300))
    await assert_rejected_by(gates(exchange, redis_client), intent, "stale_intent", "300 s old", "max 120 s")


async def test_confidence_threshold(exchange, redis_client, market_now):
    await assert_rejected_by(gates(exchange, redis_client), make_intent(market_now, confidence=0.4),
                             "confidence", "0.4 is below the threshold 0.55")


async def test_cooldown_after_close(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    await run(acts.release_symbol_lock, ReleaseLockRequest(workflow_id="trade-old", symbol=BTC, cooldown_s=300))
    assert 290 < await redis_client.ttl(cooldown_key(BTC)) <= 300
    await assert_rejected_by(acts, make_intent(market_now), "cooldown", "cooling down", "expires in")


async def test_max_open_trades_counts_exchange_positions(exchange, redis_client, market_now, paper):
    paper.set_price("ETHUSDT", 3400)
    await exchange.create_order("ETH/USDT:USDT", "market", "buy", 0.1)
    await assert_rejected_by(gates(exchange, redis_client, max_open_trades=1), make_intent(market_now),
                             "max_open_trades", "1 trades are open (max 1)")


async def test_max_total_exposure(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client, max_total_exposure_usd=Decimal("400"))
    # This trade counts with its entry plan's notional: the intent's 500 USDT floored to the step,
    # 0.007 BTC at 63,000 = 441 (the plan the workflow would open), not the intent's upper bound.
    await assert_rejected_by(acts, make_intent(market_now), "max_total_exposure", "this trade 441.00", "max 400")


async def test_free_margin(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client, min_free_margin_usd=Decimal("20000"))
    await assert_rejected_by(acts, make_intent(market_now), "free_margin", "below 20000 USDT")


async def test_min_notional_not_reachable(exchange, redis_client, market_now):
    intent = make_intent(market_now, position_size_usd="2")  # 10 USDT notional at 5x, min 100
    await assert_rejected_by(gates(exchange, redis_client), intent, "market", "min notional not reachable")


async def test_market_does_not_exist(exchange, redis_client, market_now):
    report = await check(gates(exchange, redis_client), make_intent(market_now, symbol="DOGEUSDT"))
    assert not report.passed and report.rejection_reason == "market: market DOGEUSDT does not exist on the exchange"
    assert [v.name for v in report.verdicts] == list(GATE_ORDER)


async def test_price_deviation(exchange, redis_client, market_now):
    intent = make_intent(market_now, entry_price="61500", stop_loss="60500", take_profit="64000")
    await assert_rejected_by(gates(exchange, redis_client), intent, "price_deviation", "2.44 %", "max 1 %")


async def test_a_fresh_market_feed_price_is_used_and_a_stale_one_is_not(exchange, redis_client, market_now, paper):
    assert await MarketFeed(redis_client, exchange, FeedSettings(symbols=[BTC])).poll_ticks() == 1
    feed_time = int(await redis_client.hget(latest_price_key(BTC), "timestamp"))
    paper.advance(1_000)
    paper.set_price(BTC, 63050)  # the exchange moved after the feed's poll
    report = await check(gates(exchange, redis_client), make_intent(market_now))
    assert report.passed and (report.price, report.price_time_ms) == (Decimal("63000.00"), feed_time)

    stale_ms = int(time.time() * 1000) - 2_500  # received longer ago than the 2 s allowed
    await redis_client.hset(latest_price_key(BTC), "received_ms", stale_ms)
    report = await check(gates(exchange, redis_client), make_intent(market_now))
    assert (report.price, report.price_time_ms) == (Decimal("63050.00"), feed_time + 1_000)  # the ticker's

    await redis_client.hset(latest_price_key(BTC), "received_ms", int(time.time() * 1000))
    report = await check(gates(exchange, redis_client, feed_price_max_age_ms=0), make_intent(market_now))
    assert report.price == Decimal("63050.00")  # 0: the feed is never used


async def test_symbol_lock_is_exclusive_idempotent_and_released_only_by_its_owner(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    intent = make_intent(market_now)
    assert (await check(acts, intent, "trade-a")).lock_acquired
    again = await check(acts, intent, "trade-a")  # a retried activity: still ours
    assert again.passed and "already held by this workflow" in again.verdict("symbol_lock").detail
    other = await assert_rejected_by(acts, intent, "symbol_lock", "workflow trade-a", workflow_id="trade-b")
    assert other.verdict("symbol_lock").passed is False

    not_owner = await run(acts.release_symbol_lock, ReleaseLockRequest(workflow_id="trade-b", symbol=BTC))
    assert not not_owner.released and not_owner.owner == "trade-a"
    assert await redis_client.get(lock_key(BTC)) == "trade-a"
    owner = await run(acts.release_symbol_lock, ReleaseLockRequest(workflow_id="trade-a", symbol=BTC))
    assert owner.released and await redis_client.get(lock_key(BTC)) is None
    assert (await check(acts, intent, "trade-b")).lock_acquired


async def test_lock_race_has_one_winner(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    intent = make_intent(market_now)
    reports = await asyncio.gather(*(check(acts, intent, f"trade-{i}") for i in range(5)))
    assert sum(r.lock_acquired for r in reports) == 1


async def test_no_lock_taken_when_another_gate_fails(exchange, redis_client, market_now):
    await check(gates(exchange, redis_client), make_intent(market_now, confidence=0.1), "trade-a")
    assert await redis_client.get(lock_key(BTC)) is None


async def test_release_by_a_non_owner_keeps_the_lock_and_starts_no_cooldown(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    assert (await check(acts, make_intent(market_now), workflow_id="trade-a")).lock_acquired
    result = await run(acts.release_symbol_lock,
                       ReleaseLockRequest(workflow_id="trade-b", symbol=BTC, cooldown_s=300))
    assert not result.released and result.owner == "trade-a"
    assert await redis_client.get(lock_key(BTC)) == "trade-a"
    assert await redis_client.exists(cooldown_key(BTC)) == 0


async def test_a_stale_intent_spends_no_exchange_budget(exchange, redis_client, market_now):
    """A replayed backlog of stale intents must not eat the request weight live trades need:
    the stale gate refuses with the market clock alone, before balance/positions/ticker."""
    urls: list[str] = []
    real_fetch = exchange.fetch

    def counting_fetch(url, *args, **kwargs):  # observes ccxt's HTTP calls, changes nothing
        urls.append(url)
        return real_fetch(url, *args, **kwargs)

    exchange.fetch = counting_fetch
    try:
        intent = make_intent(market_now - timedelta(seconds=300))
        report = await assert_rejected_by(gates(exchange, redis_client), intent, "stale_intent")
    finally:
        exchange.fetch = real_fetch
    exchange_gates = GATE_ORDER[GATE_ORDER.index("cooldown") + 1:-1]
    assert [v.name for v in report.verdicts if not v.checked] == list(exchange_gates)
    assert report.equity is None and report.market_rules is None
    assert [u.split("?")[0].rsplit("/", 1)[-1] for u in urls] == ["time"]  # the market clock only


# -- holes found by an adversary (issue 10) ------------------------------------------------------


@pytest.mark.parametrize("ahead_s", [3600, 7200])
async def test_an_intent_from_the_future_is_refused_and_counted(exchange, redis_client, market_now, ahead_s):
    acts = gates(exchange, redis_client)
    intent = make_intent(market_now + timedelta(seconds=ahead_s))
    await assert_rejected_by(acts, intent, "future_intent", f"{ahead_s} s in the future", "max 5 s")
    assert await redis_client.hget(GATE_REJECTIONS_KEY, "future_intent") == "1"


async def test_an_iso_time_with_a_wrong_offset_is_from_the_future(exchange, redis_client, market_now):
    """A local wall time labelled UTC (+01:00 written as +00:00): an hour early."""
    local_as_utc = (market_now + timedelta(hours=1)).replace(tzinfo=None).isoformat() + "+00:00"
    await assert_rejected_by(gates(exchange, redis_client), make_intent(market_now, timestamp=local_as_utc),
                             "future_intent")


async def test_a_little_clock_skew_is_tolerated(exchange, redis_client, market_now):
    report = await check(gates(exchange, redis_client, max_intent_future_s=5),
                         make_intent(market_now + timedelta(seconds=2)))
    assert report.passed, report.rejection_reason


async def test_a_lagging_feed_clock_does_not_make_a_fresh_intent_early(exchange, redis_client, market_now, paper):
    """The feed's last price is a poll behind (at a fast replay: minutes of market time); before
    calling an intent early the gate asks the exchange's own clock."""
    behind_ms = int(market_now.timestamp() * 1000) - 600_000
    await redis_client.hset(latest_price_key(BTC), mapping={
        "price": "63000", "timestamp": str(behind_ms), "received_ms": str(int(time.time() * 1000))})
    report = await check(gates(exchange, redis_client), make_intent(market_now))
    assert report.verdict("future_intent").passed, report.verdict("future_intent").detail


async def test_cooldown_runs_in_market_time(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    now_ms = int(market_now.timestamp() * 1000)
    await run(acts.release_symbol_lock, ReleaseLockRequest(
        workflow_id="trade-a", symbol=BTC, cooldown_s=300, cooldown_until_ms=now_ms + 300_000))
    intent = make_intent(market_now)
    before = await run(acts.run_gates, GateRequest(workflow_id="trade-b", intent=intent, now_ms=now_ms + 299_000))
    assert not before.verdict("cooldown").passed
    assert "market time (1 s left)" in before.verdict("cooldown").detail, before.verdict("cooldown").detail
    # 300 s of market time later the symbol may trade again, however little wall time passed.
    after = await run(acts.run_gates, GateRequest(workflow_id="trade-b", intent=make_intent(
        market_now + timedelta(seconds=300)), now_ms=now_ms + 300_000))
    assert after.verdict("cooldown").passed, after.verdict("cooldown").detail
    assert await redis_client.ttl(cooldown_key(BTC)) >= 86_400  # the key only cleans up


async def test_a_size_the_account_could_never_margin_is_refused(exchange, redis_client, market_now):
    await assert_rejected_by(gates(exchange, redis_client), make_intent(market_now, position_size_usd="999999999999"),
                             "position_size", "could never be margined")


async def test_a_second_run_of_a_workflow_id_that_traded_is_refused(exchange, redis_client, market_now):
    acts = gates(exchange, redis_client)
    first = await run(acts.run_gates, GateRequest(workflow_id="trade-r", intent=make_intent(market_now),
                                                  first_run_id="run-1"))
    assert first.passed and first.lock_acquired
    again = await run(acts.run_gates, GateRequest(workflow_id="trade-r", intent=make_intent(market_now),
                                                  first_run_id="run-1"))
    assert again.passed  # a retried attempt of the same run
    await run(acts.release_symbol_lock, ReleaseLockRequest(workflow_id="trade-r", symbol=BTC))
    report = await run(acts.run_gates, GateRequest(workflow_id="trade-r", intent=make_intent(market_now),
                                                   first_run_id="run-2"))
    assert not report.passed and not report.lock_acquired
    assert report.rejection_reason.startswith("workflow_id_reuse: ") and "run run-1" in report.rejection_reason
    assert await redis_client.get(lock_key(BTC)) is None


# -- adoption (reconcile hands an orphan position over) -----------------------------------------


async def adopt(acts, market_now, quantity, workflow_id="adopt-btc-1", takes_lock_from=None):
    intent = make_intent(market_now, stop_loss=None, take_profit=None, source="reconcile")
    return await run(acts.run_gates, GateRequest(workflow_id=workflow_id, intent=intent, adopt=AdoptPosition(
        quantity=Decimal(quantity), entry_price=Decimal("63000"), leverage=5, seen_at_ms=0,
        reconcile_run_id="run-1", takes_lock_from=takes_lock_from)))


async def test_an_adoption_needs_only_the_lock_and_the_same_position_on_the_exchange(exchange, redis_client,
                                                                                    market_now):
    await exchange.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
    await set_safe_mode(redis_client, reason="storm", ttl_s=600, set_by="test")  # never blocks protecting
    await redis_client.set(lock_key(BTC), "trade-dead")  # the ended trade kept it (not flat)
    acts = gates(exchange, redis_client)

    changed = await adopt(acts, market_now, "0.02", takes_lock_from="trade-dead")
    assert not changed.passed and changed.verdict("position").detail.startswith("the exchange holds 0.01")
    assert await redis_client.get(lock_key(BTC)) == "adopt-btc-1"  # handed over in one step even so

    report = await adopt(acts, market_now, "0.01")
    assert report.passed and report.lock_acquired, report.verdicts
    assert report.plan.sizing.quantity == Decimal("0.01") and report.plan.levels.stop_loss < Decimal("63000")

    await redis_client.set(KILL_SWITCH_KEY, "operator")
    refused = await adopt(acts, market_now, "0.01", workflow_id="adopt-btc-2")
    assert not refused.passed and refused.verdict("kill_switch").detail.startswith("kill switch is on")
