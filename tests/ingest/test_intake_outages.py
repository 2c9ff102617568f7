"""The intake through outages: Temporal stopped for a while (entries wait in Redis, all start
after it returns, none acknowledged before), and an ingest process SIGKILLed mid-batch (its
pending entries are reclaimed by another consumer: none lost, none started twice)."""

from __future__ import annotations

import asyncio
import subprocess
import time

from signals_ingest.intake_status import read_intake_status
from common.redis_keys import TRADE_INTENT_STREAM
from tests.crash.harness import worker_command, worker_env
from local_stack.intents import intent_fields
from tests.ingest.conftest import intake_settings, wait_until
from tests.ingest.temporal_process import TemporalProcess
from trading.intent import parse_stream_fields, workflow_id_for


async def test_temporal_stopped_for_a_while_entries_stay_pending_then_all_start(
        start_intake, raw_redis, paper, tmp_path):
    server = TemporalProcess(tmp_path / "temporal")
    server.start()
    try:
        client = await server.client()
        rig = await start_intake(client=client)
        market_ms = paper.clock()["market_ms"]
        before = [intent_fields("BTCUSDT", "BUY", 63000, market_ms) for _ in range(5)]
        for fields in before:
            await rig.xadd(fields)
        await rig.wait_drained()
        assert rig.intake.counters.started == 5

        server.kill()
        during = [intent_fields("ETHUSDT", "SELL", 3400, market_ms) for _ in range(20)]
        for fields in during:
            await rig.xadd(fields)
        await wait_until(lambda: asyncio.sleep(0, rig.intake.counters.start_failures),
                         lambda failures: failures >= 3, 30, "no start was attempted")
        await asyncio.sleep(2)  # a while: several backoff rounds
        status = await rig.status()
        assert status.lag + status.pending == 20  # nothing acknowledged while Temporal is down
        assert rig.intake.counters.started == 5 and rig.intake.backoff.active
        assert (await rig.status()).consumers[0].stats["backing_off"] == "1"

        server.start()
        await rig.wait_drained(timeout=90)
        assert rig.intake.counters.started == 25 and rig.intake.counters.dead_lettered == 0
        client = await server.client()
        for fields in before + during:
            wid = workflow_id_for(parse_stream_fields(fields))
            assert (await client.get_workflow_handle(wid).describe()).id == wid
        count = await client.count_workflows(f"TaskQueue = '{rig.settings.task_queue}'")
        assert count.count == 25  # each once
    finally:
        server.stop()


async def test_sigkill_of_an_ingest_process_mid_batch_loses_nothing_and_starts_nothing_twice(
        start_intake, raw_redis, redis_server, temporal_env, temporal_client, paper, tmp_path):
    settings = intake_settings(consumer="ingest-a", max_in_flight=8, claim_idle_ms=1_500)
    market_ms = paper.clock()["market_ms"]
    intents = [intent_fields("XRPUSDT", "BUY", 1, market_ms, id_prefix="k") for _ in range(1_500)]
    async with raw_redis.pipeline(transaction=False) as pipe:
        for fields in intents:
            pipe.xadd(TRADE_INTENT_STREAM, fields)
        await pipe.execute()

    env = worker_env(temporal_env.client.service_client.config.target_host, redis_server.url, paper, tmp_path)
    env.update({"QT_INGEST_CONSUMER": "ingest-a", "QT_INGEST_MAX_IN_FLIGHT": "8",
                "QT_INGEST_TASK_QUEUE": settings.task_queue, "QT_INGEST_METRICS_PORT": "0",
                "QT_INGEST_CLAIM_IDLE_MS": "1500", "QT_INGEST_CLAIM_INTERVAL_S": "0.5"})
    log = open(tmp_path / "ingest-a.log", "wb")
    command = worker_command()[:-3] + ["ingest", "--only", "intake"]  # `qt ingest`, this venv
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def acked(status) -> bool:
            return status.group_exists and status.stream_length - status.lag - status.pending >= 300

        await wait_until(lambda: read_intake_status(raw_redis, settings), acked, 60,
                         "ingest-a did not start entries: " + (tmp_path / "ingest-a.log").read_text())
        process.kill()  # SIGKILL mid-batch: its in-flight entries stay in its PEL
        process.wait(timeout=10)
        status = await read_intake_status(raw_redis, settings)
        stranded = [c.pending for c in status.consumers if c.name == "ingest-a"][0]
        assert 0 < stranded <= 8
        assert status.lag > 0  # it died with work left

        began = time.monotonic()
        rig = await start_intake(consumer="ingest-b", task_queue=settings.task_queue, claim_idle_ms=1_500)
        final = await rig.wait_drained(timeout=120)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert final.dlq_length == 0
    assert rig.intake.counters.reclaimed == stranded
    # What A started but had not acknowledged comes back as "already started": a duplicate.
    assert rig.intake.counters.duplicates <= stranded
    assert took < 60
    # None lost: every intent's workflow exists (describe reads the execution itself).
    ids = [workflow_id_for(parse_stream_fields(fields)) for fields in intents]
    limit = asyncio.Semaphore(32)

    async def exists(wid: str) -> bool:
        async with limit:
            return (await temporal_client.get_workflow_handle(wid).describe()).id == wid

    assert all(await asyncio.gather(*(exists(w) for w in ids)))
    # None twice: one execution per intent on this queue (visibility is eventually consistent).
    count = await wait_until(lambda: temporal_client.count_workflows(f"TaskQueue = '{settings.task_queue}'"),
                             lambda c: c.count >= len(intents), 15, "visibility did not catch up")
    assert count.count == len(intents)
