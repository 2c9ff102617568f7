"""Every gate can stop a trade; a rejected trade sends nothing and holds no lock. Bad input
(an intent that does not parse) ends REJECTED with a readable reason; a duplicate start is
refused by the workflow id reuse policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.gates import cooldown_key, lock_key
from common.redis_keys import KILL_SWITCH_KEY, SAFE_MODE_KEY
from trading.models import TradeStatus
from common.task_queues import TRADE_WORKFLOWS
from workflows.starter import start_trade
from workflows.trade_state import TradeResult

pytestmark = pytest.mark.timeout(90)


def _stale(rig, fields):
    ts = datetime.fromisoformat(fields["timestamp"]) - timedelta(minutes=10)
    return {**fields, "timestamp": ts.astimezone(UTC).isoformat()}


def _future(rig, fields):
    ts = datetime.fromisoformat(fields["timestamp"]) + timedelta(hours=1)
    return {**fields, "timestamp": ts.astimezone(UTC).isoformat()}


# gate name, redis setup, intent change, risk settings
CASES = [
    ("safe_mode", {SAFE_MODE_KEY: '{"reason": "test"}'}, None, {}),
    ("kill_switch", {KILL_SWITCH_KEY: "on"}, None, {}),
    ("allowlist", {}, None, {"allowlist": ["ETHUSDT"]}),
    ("stale_intent", {}, _stale, {}),
    ("future_intent", {}, _future, {}),
    ("confidence", {}, lambda rig, f: {**f, "confidence": "0.2"}, {}),
    ("cooldown", {cooldown_key("BTCUSDT"): "trade-previous"}, None, {}),
    ("max_open_trades", {}, None, {"max_open_trades": 0}),
    ("max_total_exposure", {}, None, {"max_total_exposure_usd": 10}),
    ("free_margin", {}, None, {"min_free_margin_usd": 10_000_000}),
    ("position_size", {}, lambda rig, f: {**f, "position_size_usd": "500000"}, {}),
    ("market", {}, lambda rig, f: {**f, "symbol": "ABCUSDT"}, {}),
    ("price_deviation", {}, lambda rig, f: {**f, "entry_price": "70000"}, {}),
    ("symbol_lock", {lock_key("BTCUSDT"): "trade-someone-else"}, None, {}),
]


@pytest.mark.parametrize(("gate", "keys", "change", "risk_settings"), CASES,
                         ids=[c[0] for c in CASES], indirect=["risk_settings"])
async def test_each_gate_rejects_and_nothing_is_sent(rig, paper, redis_client, gate, keys, change,
                                                     risk_settings):
    paper.set_price("BTCUSDT", 63000)
    for key, value in keys.items():
        await redis_client.set(key, value, ex=300)
    fields = rig.intent("BTCUSDT", "BUY", 63000)
    if change:
        fields = change(rig, fields)
    handle = await rig.start(fields)
    result = await rig.result(handle)
    assert result.status is TradeStatus.REJECTED
    assert result.reason.startswith(f"{gate}:"), result.reason
    state = await rig.state(handle)
    assert not next(v for v in state.gates if v.name == gate).passed
    assert [r for r in paper.audit() if r.get("client_id", "").startswith(handle.id)] == []
    owner = await redis_client.get(lock_key("BTCUSDT"))
    assert owner != handle.id
    await rig.save_history(handle, f"rejected_{gate}")


@pytest.mark.parametrize(("fields", "problem"), [
    ({"symbol": "BTCUSDT"}, "side"),
    ({"symbol": "BTCUSDT", "side": "UP", "confidence": 0.8, "entry_price": 1, "position_size_usd": 10,
      "leverage": 5, "timestamp": 1735689600}, "BUY or SELL"),
    ({"symbol": "BTCUSDT", "side": "BUY", "confidence": 7, "entry_price": 1, "position_size_usd": 10,
      "leverage": 5, "timestamp": 1735689600}, "confidence"),
    ({"symbol": "BTCUSDT", "side": "BUY", "confidence": 0.8, "entry_price": "NaN",
      "position_size_usd": 10, "leverage": 5, "timestamp": 1735689600}, "entry_price"),
    ({"symbol": "BTCUSDT", "side": "BUY", "confidence": 0.8, "entry_price": 100, "stop_loss": 120,
      "position_size_usd": 10, "leverage": 5, "timestamp": 1735689600}, "stop_loss"),
])
async def test_invalid_input_from_the_cli_is_rejected_readably(rig, temporal_client, fields, problem):
    """`temporal workflow start --input '{...}'` bypasses every parser but the workflow's own."""
    handle = await temporal_client.start_workflow(
        "TradeWorkflow", fields, id=f"trade-bad-{problem.replace(' ', '')}-{id(fields)}",
        task_queue=TRADE_WORKFLOWS, result_type=TradeResult)
    result = await rig.result(handle)
    assert result.status is TradeStatus.REJECTED
    assert result.reason.startswith("invalid intent:") and problem in result.reason, result.reason


async def test_a_duplicate_intent_never_runs_twice(rig, paper, temporal_client):
    paper.set_price("BTCUSDT", 63000)
    fields = rig.intent("BTCUSDT", "BUY", 63000, confidence="0.2")  # rejected quickly
    handle, started = await start_trade(temporal_client, fields)
    assert started
    again, started_again = await start_trade(temporal_client, fields)
    assert not started_again and again.id == handle.id
    await rig.result(handle)
    # After it ended too: REJECT_DUPLICATE refuses a second run of the same id.
    _, started_after = await start_trade(temporal_client, fields)
    assert not started_after
    with pytest.raises(WorkflowAlreadyStartedError):
        await temporal_client.start_workflow(
            "TradeWorkflow", fields, id=handle.id, task_queue=TRADE_WORKFLOWS,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
