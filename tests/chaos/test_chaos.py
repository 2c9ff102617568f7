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
crossed on the restarted server.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from exchange.parse import balance_of
from common.redis_keys import LOCK_KEY, TRADE_INTENT_STREAM
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
    stack.kill("temporal")
    stack.up()
    client = await stack.temporal()
    eth = await wait_for(stack, ids["ETHUSDT"], lambda st: st.status.value == "OPEN", timeout=120)
    tp1 = eth.exit.levels.take_profits[0].price
    stack.paper.set_price("ETHUSDT", str(tp1 + (tp1 - PRICES["ETHUSDT"]) * D("0.2")))
    await wait_for(stack, ids["ETHUSDT"], lambda st: st.exit.tps_done >= 1, timeout=120)

    # Every trade closed by the operator.
    for wf in ids.values():
        closed = stack.qt("close", wf, "--reason", "chaos over")
        assert closed.returncode == 0, closed.stdout + closed.stderr
    results = {s: await client.get_workflow_handle(wf, result_type=TradeResult).result() for s, wf in ids.items()}

    # -- the account's invariants
    assert all(r.status.value == "CLOSED" for r in results.values()), results
    listed = await _trades(client)
    assert sorted(w.id for w in listed) == sorted(ids.values())  # one workflow per intent, no more
    assert all(w.status is WorkflowExecutionStatus.COMPLETED for w in listed)
    for symbol, wf in ids.items():
        audit = trade_audit(stack.paper, wf)
        twice = {cid: n for cid, n in placements(audit).items() if n > 1}
        assert not twice, (symbol, twice)
        protection = Protection.replay(audit)
        assert protection.final_position == 0 and not protection.unprotected, protection.describe()
    assert await exchange.fetch_positions() == [] or all(not p["contracts"] for p in await exchange.fetch_positions())
    assert await exchange.fetch_open_orders(None) == []
    assert await exchange.fetch_open_orders(None, params={"trigger": True}) == []
    wallet_after = balance_of(await exchange.fetch_balance()).wallet_balance
    pnl = sum((r.realized_pnl for r in results.values()), D(0))
    assert abs((wallet_after - wallet_before) - pnl) <= D("1e-8"), (wallet_after - wallet_before, pnl)
    reconciled = stack.qt("reconcile")
    assert reconciled.returncode == 0 and "nothing to fix" in reconciled.stdout, reconciled.stdout + reconciled.stderr
    await exchange.close()
    await redis.aclose()
