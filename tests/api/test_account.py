"""`/portfolio` shows what the exchange holds beside the trades that own it (a position nobody
owns is flagged); `/performance` reports what the closed trades made, equal to their results."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.api.test_api import open_trade

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]
D = Decimal


async def test_portfolio_lists_positions_with_their_trades_and_flags_an_orphan(api, rig, paper):
    btc = await open_trade(api, rig, paper, "BTCUSDT", 63000)
    eth = await open_trade(api, rig, paper, "ETHUSDT", 3400, side="SELL")
    paper.set_price("XRPUSDT", "2.0000")
    await rig.exchange.create_order("XRP/USDT:USDT", "market", "buy", 50)  # by hand: no trade owns it
    body = (await api.get("/api/v1/portfolio")).json()
    by_symbol = {p["symbol"]: p for p in body["positions"]}
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT", "XRPUSDT"}
    assert by_symbol["BTCUSDT"]["owners"] == [btc] and by_symbol["BTCUSDT"]["side"] == "LONG"
    assert by_symbol["ETHUSDT"]["owners"] == [eth] and by_symbol["ETHUSDT"]["side"] == "SHORT"
    assert by_symbol["XRPUSDT"]["orphan"] is True and by_symbol["XRPUSDT"]["owners"] == []
    assert D(body["total_exposure"]) == sum(D(v) for v in body["exposure_by_symbol"].values()) > 0
    assert {t["workflow_id"] for t in body["open_trades"]} == {btc, eth}
    assert D(body["free_margin"]) > 0 and D(body["wallet_balance"]) > 0
    await rig.exchange.create_order("XRP/USDT:USDT", "market", "sell", 50, None, {"reduceOnly": True})
    for workflow_id in (btc, eth):
        assert (await api.post(f"/api/v1/trades/{workflow_id}/close", {})).status_code == 200


async def test_performance_adds_up_to_the_closed_trades(api, rig, paper):
    results = []
    for symbol, price in (("BTCUSDT", 63000), ("XRPUSDT", "2.0000")):
        workflow_id = await open_trade(api, rig, paper, symbol, price)
        results.append((await api.post(f"/api/v1/trades/{workflow_id}/close", {})).json())
    report = (await api.get("/api/v1/performance")).json()
    totals = report["totals"]
    assert totals["trades"] == 2
    assert D(totals["net"]) == sum(D(r["realized_pnl"]) for r in results)
    assert D(totals["fees"]) == sum(D(r["fees"]) for r in results) > 0
    assert set(report["by_symbol"]) == {"BTCUSDT", "XRPUSDT"} and set(report["by_exit_reason"]) == {"MANUAL"}
    # The default starting equity makes the curve end at today's wallet balance.
    wallet = D(paper.state()["balance"]["walletBalance"])
    assert D(report["equity_curve"][-1]["equity"]) == wallet
    assert (await api.get("/api/v1/performance", params={"starting_equity": "-5"})).status_code == 422
