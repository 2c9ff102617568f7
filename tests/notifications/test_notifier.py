"""Notifications on the real stack, to a real local webhook through apprise's json:// target:
every event (trade opened, closed, rejected; safe mode on and off) reaches the receiver exactly
once, in order, although the receiver was down when they happened."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from common.redis_keys import SAFE_MODE_KEY
from notifications.notifier import Notifier
from notifications.settings import NotifySettings
from local_stack.ports import free_port
from trading.models import TradeStatus
from workflows.trade_state import TradeResult

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]


class Receiver:
    """A webhook that answers 503 while `down`, and records what it accepted."""

    def __init__(self) -> None:
        self.down, self.accepted, self.refused = True, [], 0
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.down:
            self.refused += 1
            return web.Response(status=503)
        self.accepted.append(body)
        return web.json_response({"ok": True})

    def keys(self) -> list[str]:
        return [line.removeprefix("event: ") for b in self.accepted
                for line in b["message"].splitlines() if line.startswith("event: ")]


async def test_each_event_reaches_the_webhook_once_across_an_outage(rig, paper, redis_client, temporal_client):
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    settings = NotifySettings(urls=[f"json://127.0.0.1:{receiver.port}/hook"], retry_initial_s=0.2,
                              retry_max_s=0.5, poll_interval_s=0.2)
    notifier = Notifier(redis_client, temporal_client, settings)
    try:
        await notifier.collect_once()  # cursors start at "now"
        await notifier.deliver_once()

        paper.set_price("BTCUSDT", 63000)
        handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
        await rig.wait_status(handle, "OPEN")
        closed = await handle.execute_update("close", {"reason": "test"}, result_type=TradeResult)
        await redis_client.set(SAFE_MODE_KEY, json.dumps({"reason": "notify test", "since_ms": 1}), ex=60)
        await notifier.collect_once()  # (the switches are polled: a flip seen by a poll is an event)
        rejected = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
        assert (await rig.result(rejected)).status is TradeStatus.REJECTED
        await redis_client.delete(SAFE_MODE_KEY)
        await notifier.collect_once()

        expected = {f"opened:{handle.id}", f"closed:{handle.id}", f"rejected:{rejected.id}:{rejected.result_run_id}",
                    'safe_mode_on:{"reason": "notify test", "since_ms": 1}',
                    'safe_mode_off:{"reason": "notify test", "since_ms": 1}'}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the receiver is down: everything is collected, nothing lands
            await notifier.collect_once()
            await notifier.deliver_once()
            if receiver.refused >= 2 and await redis_client.xlen("quantum:stream:notify.outbox") >= len(expected):
                break
            await asyncio.sleep(0.2)
        assert receiver.accepted == [] and receiver.refused >= 2

        receiver.down = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(receiver.keys()) != expected:
            await notifier.collect_once()
            await notifier.deliver_once()
            await asyncio.sleep(0.2)
        for _ in range(5):  # and nothing more comes after
            await notifier.collect_once()
            await notifier.deliver_once()
        assert sorted(receiver.keys()) == sorted(expected)  # each exactly once
        closed_msg = next(b for b in receiver.accepted if b["title"].startswith("Closed"))
        assert f"{closed.realized_pnl:+.2f} USDT (MANUAL)" in closed_msg["title"]
    finally:
        await runner.cleanup()
