"""`qt notify`: the notifier process (see notifications/notifier.py). SIGTERM / SIGINT stop it;
what was not delivered yet stays in the outbox and goes out when a notifier runs again."""

from __future__ import annotations

import asyncio
import logging
import signal

import redis.asyncio as aioredis

from notifications.notifier import Notifier
from notifications.settings import NotifySettings
from common.settings import StackSettings
from common.temporal import connect_when_up

log = logging.getLogger("qt.notify")


async def run_notifier() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settings, stack = NotifySettings(), StackSettings()
    if not settings.urls:
        log.warning("QT_NOTIFY_URLS is empty: events are collected in the outbox, nothing is sent")
    redis = aioredis.from_url(stack.effective_redis_url, decode_responses=True)
    try:
        temporal = await connect_when_up(stop, stack)
        if temporal is None:
            return 0
        await Notifier(redis, temporal, settings).run(stop)
        return 0
    finally:
        await redis.aclose()
