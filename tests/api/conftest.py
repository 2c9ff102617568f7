"""The real FastAPI app served by uvicorn on a free port, reached over HTTP with httpx, on the
real stack (Temporal dev server, redis-server, paper exchange through ccxt) with every worker
of the test rig running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest_asyncio
import uvicorn

from api.app import create_app
from api.services import Injected
from common.settings import StackSettings
from local_stack.ports import free_port

TOKEN = "test-token-0123456789"


class Api:
    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self.http, self.base_url = client, base_url

    async def get(self, path: str, **kw) -> httpx.Response:
        return await self.http.get(path, **kw)

    async def post(self, path: str, json=None, **kw) -> httpx.Response:
        return await self.http.post(path, json=json, **kw)

    async def put(self, path: str, json=None, **kw) -> httpx.Response:
        return await self.http.put(path, json=json, **kw)

    async def delete(self, path: str, **kw) -> httpx.Response:
        return await self.http.delete(path, **kw)


@asynccontextmanager
async def serving(app) -> AsyncIterator[Api]:
    """`app` served by uvicorn on a free port until the block ends, reached with the token."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=90) as client:
            yield Api(client, base)
    finally:
        server.should_exit = True
        await task


def app_on(temporal_client, redis_client, exchange, data_dir):
    return create_app(StackSettings(data_dir=data_dir), Injected(temporal_client, redis_client, exchange),
                      token=TOKEN)


@pytest_asyncio.fixture
async def api(rig, temporal_client, redis_client, exchange, tmp_path) -> AsyncIterator[Api]:
    async with serving(app_on(temporal_client, redis_client, exchange, tmp_path)) as client:
        yield client
