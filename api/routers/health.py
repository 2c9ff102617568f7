"""Health and metrics: what an operator or a load balancer asks first."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from activities.exchange import create_exchange
from qt.settings import StackSettings
from qt.temporal_setup import connect

router = APIRouter(tags=["health"])


async def _check_temporal(settings: StackSettings) -> str:
    client = await connect(settings)
    await client.service_client.check_health()
    return "ok"


async def _check_redis(settings: StackSettings) -> str:
    client = aioredis.from_url(settings.effective_redis_url, socket_connect_timeout=2)
    try:
        await client.ping()
        return "ok"
    finally:
        await client.aclose()


async def _check_exchange() -> str:
    exchange = create_exchange(timeout=3_000)
    try:
        await exchange.fetch_time()
        return "ok"
    finally:
        await exchange.close()


@router.get("/health", summary="Is every part this API depends on reachable?")
async def health() -> JSONResponse:
    settings = StackSettings()
    checks = {
        "temporal": _check_temporal(settings),
        "redis": _check_redis(settings),
        "exchange": _check_exchange(),
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(c, timeout=5) for c in checks.values()), return_exceptions=True
    )
    parts = {
        name: (result if not isinstance(result, BaseException) else f"down: {type(result).__name__}: {result}")
        for name, result in zip(checks, results)
    }
    ok = all(value == "ok" for value in parts.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "parts": parts}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
