"""The operator API over HTTP on the real stack: submit (retry-safe), list, inspect, act, and the
account's safety switches. Every refusal is a 4xx that names what is wrong, and changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import pytest
from temporalio.api.enums.v1 import EventType

from tests.api.conftest import TOKEN
from trading.models import TradeStatus
from workflows.trade_state import TradeResult

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]


def flat(paper) -> bool:
    state = paper.state()
    return state["positions"] == [] and state["open_algo_orders"] == [] and state["open_orders"] == []


async def open_trade(api, rig, paper, symbol: str, price, side: str = "BUY") -> str:
    paper.set_price(symbol, price)
    reply = await api.post("/api/v1/intents", {"symbol": symbol, "side": side, "position_size_usd": "100",
                                               "leverage": 5, "confidence": 0.8})
    assert reply.status_code == 202, reply.text
    workflow_id = reply.json()["workflow_id"]
    await rig.wait_status(rig.client.get_workflow_handle(workflow_id), "OPEN")
    return workflow_id


async def update_events(handle) -> list[str]:
    history = await handle.fetch_history()
    return [EventType.Name(e.event_type) for e in history.events if "UPDATE" in EventType.Name(e.event_type)]


# ======================================================================================= access


async def test_a_token_is_needed_everywhere_but_health_and_metrics(api):
    async with httpx.AsyncClient(base_url=api.base_url) as anonymous:
        assert (await anonymous.get("/api/v1/trades")).status_code == 401
        wrong = await anonymous.get("/api/v1/trades", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert (await anonymous.post("/api/v1/intents", json={})).status_code == 401  # before validation
        health = await anonymous.get("/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["parts"] == {"temporal": "ok", "redis": "ok", "exchange": "ok"}
        assert body["task_queues"]["trade-workflows"]["pollers"] >= 1  # the rig's worker
        assert "lag" in body["intake"]
        assert (await anonymous.get("/metrics")).status_code == 200
        docs = await anonymous.get("/docs")
        assert docs.status_code == 200 and "/static/swagger-ui/swagger-ui-bundle.js" in docs.text
        assert (await anonymous.get("/static/swagger-ui/swagger-ui-bundle.js")).status_code == 200


# ====================================================================================== intents


async def test_a_manual_intent_retried_three_times_is_one_trade(api, rig, paper, temporal_client):
    paper.set_price("BTCUSDT", 63000)
    key = f"k-{uuid.uuid4().hex[:10]}"
    body = {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "100", "leverage": 5}
    replies = [await api.post("/api/v1/intents?wait=gates", body, headers={"Idempotency-Key": key})
               for _ in range(3)]
    assert [r.status_code for r in replies] == [202, 200, 200], [r.text for r in replies]
    ids = {r.json()["workflow_id"] for r in replies}
    assert ids == {f"trade-{key}"}
    first = replies[0].json()
    assert first["started"] is True and [r.json()["started"] for r in replies[1:]] == [False, False]
    assert first["intent"]["source"] == "api" and first["intent"]["entry_price"] == "63000.00"
    assert first["gates"] and all(v["passed"] for v in first["gates"]), first
    assert first["web_ui_url"].endswith(f"/workflows/trade-{key}/{first['run_id']}/history")
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = 'trade-{key}'")]
    assert len(runs) == 1
    await rig.wait_status(temporal_client.get_workflow_handle(f"trade-{key}"), "OPEN")
    closed = await api.post(f"/api/v1/trades/trade-{key}/close", {"reason": "test"})
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED", closed.text


async def test_the_same_key_with_other_content_is_a_conflict(api, rig, paper):
    paper.set_price("ETHUSDT", 3400)
    key = f"k-{uuid.uuid4().hex[:10]}"
    body = {"symbol": "ETHUSDT", "side": "BUY", "position_size_usd": "100", "leverage": 5}
    assert (await api.post("/api/v1/intents", body, headers={"Idempotency-Key": key})).status_code == 202
    other = await api.post("/api/v1/intents", {**body, "side": "SELL"}, headers={"Idempotency-Key": key})
    assert other.status_code == 409 and "side: BUY -> SELL" in other.json()["detail"], other.text
    await rig.wait_status(rig.client.get_workflow_handle(f"trade-{key}"), "OPEN")
    await api.post(f"/api/v1/trades/trade-{key}/kill")


@pytest.mark.parametrize(("change", "field"), [
    ({"side": "HOLD"}, "side"),
    ({"symbol": "DOGEUSDT"}, "symbol"),
    ({"leverage": 0}, "leverage"),
    ({"position_size_usd": "-5"}, "position_size_usd"),
    ({"confidence": 7}, "confidence"),
    ({"stop_loss": "99999"}, None),  # a BUY's stop above the entry: the model-level check
    ({"colour": "red"}, "colour"),  # unknown fields are refused, not ignored
])
async def test_invalid_intents_are_422_naming_the_field_and_start_nothing(api, paper, temporal_client, change, field):
    paper.set_price("BTCUSDT", 63000)
    key = f"bad-{uuid.uuid4().hex[:10]}"
    body = {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "100", "leverage": 5, **change}
    reply = await api.post("/api/v1/intents", body, headers={"Idempotency-Key": key})
    assert reply.status_code == 422, reply.text
    locs = [item["loc"] for item in reply.json()["detail"]]
    if field is not None:
        assert ["body", field] in locs, locs
    assert [w async for w in temporal_client.list_workflows(f"WorkflowId = 'trade-{key}'")] == []


# ======================================================================================= trades


async def test_list_filter_paginate_and_inspect(api, rig, paper):
    first = await open_trade(api, rig, paper, "BTCUSDT", 63000)
    second = await open_trade(api, rig, paper, "XRPUSDT", "2.0000")
    page = (await api.get("/api/v1/trades", params={"status": "OPEN", "page_size": 1})).json()
    assert len(page["trades"]) == 1 and page["next_page_token"]
    rest = (await api.get("/api/v1/trades", params={"status": "OPEN", "page_size": 1,
                                                    "page_token": page["next_page_token"]})).json()
    assert {page["trades"][0]["workflow_id"], rest["trades"][0]["workflow_id"]} == {first, second}
    only_xrp = (await api.get("/api/v1/trades", params={"symbol": "XRPUSDT", "status": "OPEN"})).json()
    assert [t["workflow_id"] for t in only_xrp["trades"]] == [second]
    assert only_xrp["trades"][0]["source"] == "api" and only_xrp["trades"][0]["side"] == "BUY"

    detail = (await api.get(f"/api/v1/trades/{first}")).json()
    assert detail["state"]["status"] == "OPEN" and detail["state"]["stage"] == "MONITORING"
    assert detail["state"]["gates"] and detail["state"]["exit"]["stop"]
    assert (await api.get("/api/v1/trades/trade-does-not-exist")).status_code == 404
    assert (await api.get("/api/v1/trades", params={"symbol": "x' OR 1=1"})).status_code == 422
    for workflow_id in (first, second):
        assert (await api.post(f"/api/v1/trades/{workflow_id}/close", {})).status_code == 200
    closed = (await api.get(f"/api/v1/trades/{first}")).json()
    assert closed["result"]["status"] == "CLOSED" and closed["result"]["exit_reason"] == "MANUAL"


async def test_adjust_with_a_wrong_side_stop_is_422_and_writes_no_history(api, rig, paper):
    workflow_id = await open_trade(api, rig, paper, "ETHUSDT", 3400)
    handle = rig.client.get_workflow_handle(workflow_id)
    reply = await api.post(f"/api/v1/trades/{workflow_id}/adjust", {"stop_loss": "3500"})
    assert reply.status_code == 422 and "stop" in reply.json()["detail"], reply.text
    assert await update_events(handle) == []  # the validator refused it: nothing in the history
    ok = await api.post(f"/api/v1/trades/{workflow_id}/adjust", {"stop_loss": "3300"})
    assert ok.status_code == 200 and ok.json()["stop_loss"] == "3300", ok.text
    await api.post(f"/api/v1/trades/{workflow_id}/close", {})


async def test_pause_resume_close_twice_kill_and_terminate(api, rig, paper):
    workflow_id = await open_trade(api, rig, paper, "XRPUSDT", "2.0000")
    handle = rig.client.get_workflow_handle(workflow_id)
    assert (await api.post(f"/api/v1/trades/{workflow_id}/pause")).status_code == 202
    await rig.wait_for(handle, lambda s: s.paused)
    assert (await api.post(f"/api/v1/trades/{workflow_id}/resume")).status_code == 202
    await rig.wait_for(handle, lambda s: not s.paused)
    closed = await api.post(f"/api/v1/trades/{workflow_id}/close", {"reason": "operator"})
    assert closed.status_code == 200 and closed.json()["exit_reason"] == "MANUAL"
    again = await api.post(f"/api/v1/trades/{workflow_id}/close", {})
    assert again.status_code == 409 and "COMPLETED" in again.json()["detail"]
    assert (await api.post(f"/api/v1/trades/{workflow_id}/kill")).status_code == 409
    assert flat(paper)

    killed_id = await open_trade(api, rig, paper, "BTCUSDT", 63000)
    assert (await api.post(f"/api/v1/trades/{killed_id}/kill")).status_code == 202
    result = await rig.result(rig.client.get_workflow_handle(killed_id, result_type=TradeResult))
    assert result.status is TradeStatus.KILLED and flat(paper)

    doomed = await open_trade(api, rig, paper, "ETHUSDT", 3400)
    assert (await api.post(f"/api/v1/trades/{doomed}/terminate", {})).status_code == 422  # reason required
    assert (await api.post(f"/api/v1/trades/{doomed}/terminate", {"reason": "test"})).status_code == 200
    desc = await rig.client.get_workflow_handle(doomed).describe()
    assert desc.status.name == "TERMINATED"
    await rig.exchange.cancel_all_orders("ETH/USDT:USDT", {"trigger": True})  # hard stop left them
    await rig.exchange.create_order("ETH/USDT:USDT", "market", "sell", abs(float(
        next(p for p in paper.state()["positions"] if p["symbol"] == "ETHUSDT")["positionAmt"])), None,
        {"reduceOnly": True})


# ======================================================================================= safety


async def test_safe_mode_on_with_who_and_why_refuses_new_trades_and_goes_off(api, paper):
    assert (await api.get("/api/v1/safe-mode")).json()["active"] is False
    on = await api.put("/api/v1/safe-mode", {"reason": "CPI release", "ttl_s": 600, "set_by": "alice"})
    assert on.status_code == 200
    assert on.json() | {"since_ms": None} == {"active": True, "reason": "CPI release", "set_by": "alice",
                                               "origin": "operator", "since_ms": None, "ttl_s": 600}
    paper.set_price("BTCUSDT", 63000)
    reply = await api.post("/api/v1/intents?wait=gates", {"symbol": "BTCUSDT", "side": "BUY",
                                                          "position_size_usd": "100", "leverage": 5})
    assert reply.json()["status"] == "REJECTED" and reply.json()["reason"].startswith("safe_mode: safe mode is on (CPI release")
    assert (await api.put("/api/v1/safe-mode", {"reason": "", "ttl_s": 0})).status_code == 422
    assert (await api.delete("/api/v1/safe-mode")).json()["active"] is False


async def test_kill_switch_kills_every_open_trade_and_reports_the_account_flat(api, rig, paper):
    ids = [await open_trade(api, rig, paper, symbol, price)
           for symbol, price in (("BTCUSDT", 63000), ("ETHUSDT", 3400), ("XRPUSDT", "2.0000"))]
    report = await api.post("/api/v1/kill-switch", {"reason": "exchange incident", "set_by": "bob"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert sorted(k["workflow_id"] for k in body["killed"]) == sorted(ids)
    assert {k["status"] for k in body["killed"]} == {"KILLED"}
    assert body["still_running"] == [] and body["open_positions"] == []
    assert body["safe_mode"]["active"] and body["safe_mode"]["set_by"] == "bob"
    assert flat(paper)
    off = await api.delete("/api/v1/kill-switch")
    assert off.json()["active"] is False and off.json()["safe_mode"]["active"] is True  # stays until cleared
    await api.delete("/api/v1/safe-mode")
    await asyncio.sleep(0)


async def test_a_partial_close_through_the_api(api, rig, paper):
    workflow_id = await open_trade(api, rig, paper, "BTCUSDT", 63000)
    state = (await api.get(f"/api/v1/trades/{workflow_id}")).json()["state"]
    whole, step = Decimal(state["open_qty"]), Decimal(state["rules"]["step_size"])
    off_grid = await api.post(f"/api/v1/trades/{workflow_id}/close", {"amount": str(step / 10)})
    assert off_grid.status_code == 422 and off_grid.json()["detail"].startswith("amount:"), off_grid.text
    part = (whole / 2 // step) * step
    partial = await api.post(f"/api/v1/trades/{workflow_id}/close", {"amount": str(part), "reason": "some off"})
    assert partial.status_code == 200 and partial.json()["status"] == "OPEN", partial.text
    after = (await api.get(f"/api/v1/trades/{workflow_id}")).json()["state"]
    assert Decimal(after["open_qty"]) == whole - part
    rest = await api.post(f"/api/v1/trades/{workflow_id}/close", {})
    assert rest.status_code == 200 and rest.json()["status"] == "CLOSED" and flat(paper)
