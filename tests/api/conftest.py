"""The real FastAPI app served by uvicorn on a free port, reached over HTTP with httpx, on the
real stack (Temporal dev server, redis-server, paper exchange through ccxt) with every worker
of the test rig running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
import uvicorn

from api.app import create_app
from api.services import Injected
from qt.settings import StackSettings
from tests.fixtures.ports import free_port

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


@pytest_asyncio.fixture
async def api(rig, temporal_client, redis_client, exchange, tmp_path) -> AsyncIterator[Api]:
    app = create_app(StackSettings(data_dir=tmp_path), Injected(temporal_client, redis_client, exchange),
                     token=TOKEN)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=90) as client:
        yield Api(client, base)
    server.should_exit = True
    await task
