"""Reconciliation through what an operator touches: the Schedule a worker keeps, `POST/GET
/api/v1/reconcile`, `qt reconcile [--last]`, and the report in /metrics (the real API over HTTP,
the rig's workers, the real stack)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import pytest_asyncio

from common.reconcile_settings import ReconcileSettings
from common.redis_keys import LOCK_KEY
from tests.api.test_qt_commands import qt
from workflows.reconcile_schedule import SCHEDULE_ID, ensure_reconcile_schedule, run_reconcile_now

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest_asyncio.fixture
async def schedule_env(monkeypatch, temporal_client):
    monkeypatch.setenv("QT_RECONCILE_ORPHANS", "report")
    monkeypatch.setenv("QT_RECONCILE_CONFIRM_S", "0.5")
    yield
    try:  # other tests share this dev server: no reconcile may run behind them
        await temporal_client.get_schedule_handle(SCHEDULE_ID).delete()
    except Exception:  # noqa: BLE001 - never created
        pass


async def interval_of(client) -> timedelta:
    described = await client.get_schedule_handle(SCHEDULE_ID).describe()
    return described.schedule.spec.intervals[0].every


async def test_the_schedule_is_created_once_and_updated_in_place(schedule_env, rig, temporal_client):
    await ensure_reconcile_schedule(temporal_client, ReconcileSettings(interval_s=3600))
    await ensure_reconcile_schedule(temporal_client, ReconcileSettings(interval_s=3600))  # a second worker
    assert await interval_of(temporal_client) == timedelta(hours=1)
    await ensure_reconcile_schedule(temporal_client, ReconcileSettings(interval_s=1800, orphans="flatten"))
    described = await temporal_client.get_schedule_handle(SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals[0].every == timedelta(minutes=30)
    assert described.schedule.policy.overlap.name == "SKIP"
    assert json.loads(described.schedule.action.args[0].data)["orphans"] == "flatten"  # (raw payloads)
    assert [s.id async for s in await temporal_client.list_schedules()].count(SCHEDULE_ID) == 1


async def test_with_the_schedule_turned_off_a_run_now_creates_no_schedule(schedule_env, rig, temporal_client,
                                                                         redis_client):
    await redis_client.set(LOCK_KEY.format(symbol="XRPUSDT"), "trade-gone-too")
    report = await run_reconcile_now(temporal_client, ReconcileSettings(schedule=False, orphans="report",
                                                                          confirm_s=0.5), timeout_s=60)
    assert report.complete and any(f.kind == "orphan_lock" for f in report.findings), report
    assert await redis_client.get(LOCK_KEY.format(symbol="XRPUSDT")) is None
    assert SCHEDULE_ID not in [s.id async for s in await temporal_client.list_schedules()]


async def test_qt_reconcile_runs_it_fixes_an_orphan_lock_and_reports(schedule_env, api, rig, redis_client, paper):
    missing = await qt(api, "reconcile", "--last")
    assert missing.error_line.startswith("error: HTTP 404 not found: no reconcile run has reported yet")
    await redis_client.set(LOCK_KEY.format(symbol="ETHUSDT"), "trade-long-gone")

    ran = await qt(api, "reconcile")

    assert ran.code == 0, ran
    assert "complete" in ran.out and "orphan_lock" in ran.out and "released" in ran.out, ran.out
    assert await redis_client.get(LOCK_KEY.format(symbol="ETHUSDT")) is None
    run_id = ran.out.split("reconcile run ", 1)[1].split()[0]
    last = await qt(api, "reconcile", "--last")
    assert last.code == 0 and f"reconcile run {run_id}" in last.out
    metrics = (await api.get("/metrics")).text
    assert 'qt_reconcile_findings{kind="orphan_lock"} 1.0' in metrics and "qt_reconcile_last_run_complete 1.0" in metrics
    clean = await qt(api, "reconcile")
    assert clean.code == 0 and "nothing to fix" in clean.out, clean


async def test_qt_reconcile_exits_1_when_the_exchange_does_not_answer(schedule_env, api, rig, paper, redis_client):
    await redis_client.set(LOCK_KEY.format(symbol="ETHUSDT"), "trade-long-gone")
    paper.add_fault(path="/fapi/v3/positionRisk", status=503, code=-1001, count=20)
    paper.add_fault(path="/fapi/v2/positionRisk", status=503, code=-1001, count=20)

    ran = await qt(api, "reconcile")

    paper.clear_faults()
    assert ran.code == 1 and "INCOMPLETE" in ran.out and "problem:" in ran.out, ran
    assert await redis_client.get(LOCK_KEY.format(symbol="ETHUSDT")) == "trade-long-gone"  # nothing changed
    body = (await api.get("/api/v1/reconcile")).json()
    assert body["complete"] is False and body["findings"] == [] and body["outcomes"] == []
