"""`qt ingest`: the intake (Redis Streams → TradeWorkflow starts), the market feed and the
signal engine, in one process by default; `--only` runs a subset (scale each on its own).

SIGTERM / SIGINT stop it cleanly: no new entries are read, starts in flight get a few seconds,
whatever is left stays pending in the consumer group for the next consumer.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import redis.asyncio as aioredis
from prometheus_client import start_http_server

from common.settings import StackSettings
from common.temporal import connect_when_up
from signals_ingest.intake import IntentIntake
from signals_ingest.intake_settings import IntakeSettings

log = logging.getLogger("qt.ingest")

PARTS = ("intake", "feed", "signals")


async def run_intake(stop: asyncio.Event, settings: IntakeSettings | None = None) -> None:
    stack = StackSettings()
    redis = aioredis.from_url(stack.effective_redis_url, decode_responses=False,
                              health_check_interval=30)
    try:
        client = await connect_when_up(stop, stack)
        if client is not None:
            await IntentIntake(redis, client, settings).run(stop)
    finally:
        await redis.aclose()


async def _run_feed(stop: asyncio.Event) -> None:
    from signals_ingest.market_feed import run_market_feed

    await run_market_feed(stop=stop)


async def _run_signals(stop: asyncio.Event) -> None:
    from signals_ingest.signal_engine import run_signal_engine

    await run_signal_engine(stop=stop)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_ingest(parts: tuple[str, ...] = PARTS) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        log.error("unknown part(s) %s; choose from %s", ", ".join(unknown) or "(none)", ", ".join(PARTS))
        return 2
    settings = IntakeSettings()
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, addr="127.0.0.1")
            log.info("metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)
        except OSError as err:  # a second `qt ingest` on this host: give it its own port
            log.warning("metrics port %d unavailable (%s): set QT_INGEST_METRICS_PORT; running without",
                        settings.metrics_port, err)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    runners = {"intake": lambda: run_intake(stop, settings), "feed": lambda: _run_feed(stop),
               "signals": lambda: _run_signals(stop)}
    tasks = {asyncio.create_task(runners[p](), name=p): p for p in parts}
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    failed = [t for t in done if t.exception() is not None]
    if failed:
        stop.set()
        for task in failed:
            log.error("%s stopped: %r", tasks[task], task.exception())
    await asyncio.gather(*tasks, return_exceptions=True)
    return 1 if failed else 0
