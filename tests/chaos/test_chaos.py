"""Chaos on the whole stack: `qt up` in a temp dir (Temporal dev server on SQLite, redis-server
with AOF, the paper exchange on its data dir, `qt worker --queue all`, `qt ingest`, `qt api`),
three trades on three symbols from the intent stream, and each process SIGKILLed in turn at a
point of the trades' lifecycle, then brought back by `qt up` (what an operator runs after a
crash: it starts what is dead and reuses what runs). Afterwards the account's invariants:

- every intent has exactly one workflow, and every workflow ended;
- each client order id was accepted by the exchange at most once;
- from each trade's first stop until it was flat, a stop of it rested on the exchange;
- the exchange is flat with no open order once all trades ended;
- the wallet balance changed by the sum of the trades' net PnL (to 1e-8);
- a reconcile run afterwards finds nothing to fix.

Kill points: the intake while the intents are published (nothing started twice, nothing lost);
the worker while a take-profit is crossed (harvested once, after the restart); the paper exchange
while trades are open (their stops persist); redis-server (the locks come back from the AOF);
the Temporal dev server (histories persist; workers and intake reconnect), then a take-profit
crossed on the restarted server. The second test kills each process again mid-entry and
mid-close, in five rounds of three fresh trades (`test_each_process_killed_mid_entry_and_mid_close`).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from decimal import Decimal

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from exchange.parse import balance_of
from common.latest_price import parse_latest_price
from common.redis_keys import LOCK_KEY, TRADE_INTENT_STREAM, latest_price_key
from local_stack.chaos_stack import ChaosStack
from local_stack.intents import intent_fields
from tests.fixtures.protection import Protection, placements, trade_audit
from workflows.trade_state import TradeResult, TradeState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
D = Decimal
PRICES = {"BTCUSDT": D("63000"), "ETHUSDT": D("3400"), "XRPUSDT": D("2.5")}


async def state(stack: ChaosStack, workflow_id: str) -> TradeState:
    return await stack.client.get_workflow_handle(workflow_id).query("state", result_type=TradeState)


async def wait_for(stack: ChaosStack, workflow_id: str, check, timeout: float = 90) -> TradeState:
    deadline, last, error = time.monotonic() + timeout, None, None
    while time.monotonic() < deadline:
        try:
            last = await state(stack, workflow_id)
            if check(last):
                return last
        except Exception as exc:  # noqa: BLE001 - a server or worker on its way back
            error = exc
        await asyncio.sleep(0.3)
    raise AssertionError(f"{workflow_id}: not reached in {timeout} s; last {last and last.status} "
                         f"{last and last.notes}; error {error!r}\n{stack.logs()}")


@pytest.fixture
def stack(tmp_path):
    chaos = ChaosStack(tmp_path)
    chaos.up()
    yield chaos
    chaos.down()


async def _trades(client: Client) -> list:
    return [w async for w in client.list_workflows("WorkflowType = 'TradeWorkflow'")]


async def assert_account_whole(stack: ChaosStack, exchange, results: dict[str, TradeResult],
                               wallet_before: Decimal) -> None:
    """The account's invariants once every trade of `results` (workflow id -> result) ended."""
    assert all(r.status.value == "CLOSED" for r in results.values()), results
    listed = await _trades(stack.client)
    assert sorted(w.id for w in listed) == sorted(results)  # one workflow per intent, no more
    assert all(w.status is WorkflowExecutionStatus.COMPLETED for w in listed)
    for wf in results:
        audit = trade_audit(stack.paper, wf)
        assert audit, f"{wf}: no order of it in the exchange's audit log"
        twice = {cid: n for cid, n in placements(audit).items() if n > 1}
        assert not twice, (wf, twice)
        protection = Protection.replay(audit)
        assert protection.final_position == 0 and not protection.unprotected, protection.describe()
    assert all(not p["contracts"] for p in await exchange.fetch_positions())
    assert await exchange.fetch_open_orders(None) == []
    assert await exchange.fetch_open_orders(None, params={"trigger": True}) == []
    wallet_after = balance_of(await exchange.fetch_balance()).wallet_balance
    pnl = sum((r.realized_pnl for r in results.values()), D(0))
    assert abs((wallet_after - wallet_before) - pnl) <= D("1e-8"), (wallet_after - wallet_before, pnl)
    reconciled = stack.qt("reconcile")
    assert reconciled.returncode == 0 and "nothing to fix" in reconciled.stdout, reconciled.stdout + reconciled.stderr


async def test_every_process_killed_in_turn_and_the_account_stays_whole(stack):
    client = await stack.temporal()
    redis = stack.redis()
    exchange = stack.exchange()
    await exchange.load_markets()
    wallet_before = balance_of(await exchange.fetch_balance()).wallet_balance
    for symbol, price in PRICES.items():
        stack.paper.set_price(symbol, str(price))
    market_ms = stack.paper.clock()["market_ms"]
    intents = {symbol: intent_fields(symbol, "BUY", price, market_ms, id_prefix="chaos")
               for symbol, price in PRICES.items()}
    ids = {symbol: f"trade-{fields['intent_id']}" for symbol, fields in intents.items()}

    # 1. The intake dies while the intents are published: started after its restart, once each.
    stack.kill("ingest")
    for fields in intents.values():
        await redis.xadd(TRADE_INTENT_STREAM, fields)
    stack.up()
    opened = {s: await wait_for(stack, wf, lambda st: st.status.value == "OPEN") for s, wf in ids.items()}

    # 2. The worker dies; BTC crosses its TP1 while no worker runs: harvested once after the restart.
    stack.kill("worker")
    tp1 = opened["BTCUSDT"].exit.levels.take_profits[0].price
    stack.paper.set_price("BTCUSDT", str(tp1 + (tp1 - PRICES["BTCUSDT"]) * D("0.2")))
    stack.up()
    await wait_for(stack, ids["BTCUSDT"], lambda st: st.exit.tps_done >= 1, timeout=120)

    # 3. The paper exchange dies with three positions and their stops: all still there after it.
    stack.kill("paper-exchange")
    stack.up()
    for symbol in ("ETHUSDT", "XRPUSDT"):
        stack.paper.set_price(symbol, str(PRICES[symbol]))
    stops = {o["clientOrderId"] for o in await exchange.fetch_open_orders(None, params={"trigger": True})}
    for symbol, wf in ids.items():
        assert (await state(stack, wf)).stop_client_id in stops, (symbol, stops)

    # 4. redis-server dies: the symbol locks come back from the AOF.
    stack.kill("redis")
    stack.up()
    await redis.aclose()
    redis = stack.redis()  # (this test's connection died with the server; the workers' reconnect)
    locks = {s: await redis.get(LOCK_KEY.format(symbol=s)) for s in PRICES}
    assert locks == {s: ids[s] for s in PRICES}, locks

    # 5. The Temporal dev server dies: histories persist; ETH's TP1 is harvested on the new one.
    await _kill_and_restart(stack, "temporal")
    client = stack.client
    eth = await wait_for(stack, ids["ETHUSDT"], lambda st: st.status.value == "OPEN", timeout=120)
    tp1 = eth.exit.levels.take_profits[0].price
    stack.paper.set_price("ETHUSDT", str(tp1 + (tp1 - PRICES["ETHUSDT"]) * D("0.2")))
    await wait_for(stack, ids["ETHUSDT"], lambda st: st.exit.tps_done >= 1, timeout=120)

    # Every trade closed by the operator.
    for wf in ids.values():
        closed = stack.qt("close", wf, "--reason", "chaos over")
        assert closed.returncode == 0, closed.stdout + closed.stderr
    results = {wf: await client.get_workflow_handle(wf, result_type=TradeResult).result() for wf in ids.values()}
    await assert_account_whole(stack, exchange, results, wallet_before)
    await exchange.close()
    await redis.aclose()


async def _first_to_reach(stack: ChaosStack, workflow_ids, statuses: set[str], timeout: float = 60) -> dict:
    """Poll until one of the trades reaches one of `statuses`; then every trade's status, as seen
    at that moment (what the kill that follows interrupted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {}
        for wf in workflow_ids:
            try:
                seen[wf] = (await state(stack, wf)).status.value
            except Exception:  # noqa: BLE001 - not started yet
                seen[wf] = "-"
        if statuses & set(seen.values()):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"none of {list(workflow_ids)} reached {statuses} in {timeout} s\n{stack.logs()}")


@pytest.mark.timeout(900)
async def test_each_process_killed_mid_entry_and_mid_close(stack):
    """Round after round, three trades on three symbols; in each round one process dies while the
    trades enter (gates, entry order, first stop) and again while they close (closing orders, the
    stops' cancels), and `qt up` brings it back. Every trade still opens protected and closes
    flat, each order once; the account is whole at the end."""
    await stack.temporal()
    exchange = stack.exchange()
    await exchange.load_markets()
    wallet_before = balance_of(await exchange.fetch_balance()).wallet_balance
    every_trade: list[str] = []
    interrupted: list[str] = []  # what each kill interrupted: the trades' statuses at that moment
    for n, part in enumerate(("worker", "redis", "paper-exchange", "temporal", "ingest")):
        # (short ids: client ids keep the workflow id whole, so the audit finds every order)
        ids = await _publish_round(stack, prefix=f"mid{n}-")
        every_trade += ids
        # Mid-entry: the intake dies with the intents still in its stream; every other part as
        # soon as one trade has passed its gates and sent its entry order.
        if part != "ingest":
            interrupted.append(f"{part} mid-entry: {await _first_to_reach(stack, ids, {'OPENING', 'OPEN'})}")
        await _kill_and_restart(stack, part)
        for wf in ids:
            await wait_for(stack, wf, lambda st: st.status.value == "OPEN", timeout=120)
        # Mid-close: every trade's close asked for at once (`qt close`, as an operator would);
        # the part dies once one of them is CLOSING.
        closes = [stack.qt_background("close", wf, "--reason", f"chaos {part}") for wf in ids]
        if part != "ingest":  # (the intake plays no part in a close)
            interrupted.append(f"{part} mid-close: {await _first_to_reach(stack, ids, {'CLOSING', 'CLOSED'})}")
            await _kill_and_restart(stack, part)
        for wf in ids:
            await wait_for(stack, wf, lambda st: st.status.is_final, timeout=120)
        for close in closes:  # (its answer may have been lost with the part; the close was not)
            try:
                close.wait(timeout=60)
            except subprocess.TimeoutExpired:
                close.kill()
                close.wait()
    print("\n".join(interrupted))
    results = {wf: await stack.client.get_workflow_handle(wf, result_type=TradeResult).result()
               for wf in every_trade}
    await assert_account_whole(stack, exchange, results, wallet_before)
    await exchange.close()


async def _publish_round(stack: ChaosStack, prefix: str) -> list[str]:
    """One fresh intent per symbol on the intent stream, at today's prices; their workflow ids."""
    redis = stack.redis()  # (a connection per round: redis-server may have died since the last)
    for symbol, price in PRICES.items():
        stack.paper.set_price(symbol, str(price))
    await _until_the_feed_has(redis, PRICES)
    market_ms = stack.paper.clock()["market_ms"]
    ids = []
    for symbol, price in PRICES.items():
        fields = intent_fields(symbol, "BUY", price, market_ms, id_prefix=prefix)
        await redis.xadd(TRADE_INTENT_STREAM, fields)
        ids.append(f"trade-{fields['intent_id']}")
    await redis.aclose()
    return ids


async def _until_the_feed_has(redis, prices: dict[str, Decimal], timeout: float = 30) -> None:
    """Wait until the market feed's latest prices (what the gates read) are the ones just set:
    an intent read before would meet the previous round's price and be rejected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        feed = {s: parse_latest_price(await redis.hgetall(latest_price_key(s))) for s in prices}
        if all(f is not None and f.price == prices[s] for s, f in feed.items()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the market feed never showed {prices}: {feed}")


async def _kill_and_restart(stack: ChaosStack, part: str) -> None:
    stack.kill(part)
    stack.up()
    if part == "temporal":
        await stack.temporal()  # (this test's connection died with the server; the workers' reconnect)
