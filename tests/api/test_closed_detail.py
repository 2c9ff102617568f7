"""A closed trade's detail is read once: its run's history never changes, so the API keeps what
the `state` query (a worker replaying the whole history) and the result said, and a closed trade
stays readable, in full, when no worker runs."""

from __future__ import annotations

import pytest

from activities.risk_settings import RiskSettings
from tests.api.conftest import app_on, serving
from tests.fixtures.trading import TEST_POLICY, TradeRig, running_workers

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]


async def test_a_closed_trade_stays_readable_when_no_worker_runs(temporal_client, redis_client, exchange, paper,
                                                                  tmp_path):
    rig = TradeRig(temporal_client, paper, redis_client, exchange)
    async with serving(app_on(temporal_client, redis_client, exchange, tmp_path)) as api:
        async with running_workers(temporal_client, exchange, redis_client, TEST_POLICY, RiskSettings(cooldown_s=0)):
            ids = []
            for symbol, price in (("BTCUSDT", 63000), ("XRPUSDT", "2.0000")):
                paper.set_price(symbol, price)
                reply = await api.post("/api/v1/intents", {"symbol": symbol, "side": "BUY", "leverage": 5,
                                                           "position_size_usd": "100"})
                assert reply.status_code == 202, reply.text
                ids.append(reply.json()["workflow_id"])
                await rig.wait_status(temporal_client.get_workflow_handle(ids[-1]), "OPEN")
            for workflow_id in ids:
                assert (await api.post(f"/api/v1/trades/{workflow_id}/close", {})).status_code == 200
            read = (await api.get(f"/api/v1/trades/{ids[0]}")).json()  # the BTC trade only
        assert read["execution_status"] == "COMPLETED" and read["note"] is None
        assert read["state"]["status"] == "CLOSED" and read["state"]["orders"]
        assert read["result"]["exit_reason"] == "MANUAL"

        # The workers are gone: the kept detail answers, in full; a trade never read says why it can't.
        again = await api.get(f"/api/v1/trades/{ids[0]}")
        assert again.status_code == 200 and again.json() == read
        unread = (await api.get(f"/api/v1/trades/{ids[1]}")).json()
        assert unread["state"] is None and "state not available" in unread["note"]
        assert unread["result"]["exit_reason"] == "MANUAL"
