"""The demo's operator actions go through the operator API, as a person's would: the real app,
served in the demo's process on a free port over the demo's own clients (its workers and
policy are the demo's), reached over HTTP with the token."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from api.security import load_or_create_token
from api.services import Injected
from common.settings import StackSettings
from workflows.trade_state import TradeResult


class ApiRefused(Exception):
    """A 4xx from the API: `detail` says why (the trade ended first, a conflict...)."""


class DemoApi:
    def __init__(self, settings: StackSettings, client: Any, redis: Any, exchange: Any) -> None:
        self.settings = settings
        self._app = create_app(settings, Injected(client, redis, exchange), token=load_or_create_token(settings))
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task | None = None
        self.http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> DemoApi:
        config = uvicorn.Config(self._app, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve(), name="demo api")
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, headers={
            "Authorization": f"Bearer {self._app.state.token}"})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self._server is not None:
            self._server.should_exit = True
            await self._serving

    async def _post(self, path: str, body: dict | None = None, **kw: Any) -> dict:
        reply = await self.http.post(path, json=body, **kw)
        if 400 <= reply.status_code < 500:
            raise ApiRefused(f"HTTP {reply.status_code}: {reply.json().get('detail')}")
        reply.raise_for_status()
        return reply.json()

    async def submit(self, body: dict, key: str) -> dict:
        return await self._post("/api/v1/intents", body, headers={"Idempotency-Key": key})

    async def close(self, workflow_id: str, reason: str) -> TradeResult:
        return TradeResult.model_validate(await self._post(f"/api/v1/trades/{workflow_id}/close", {"reason": reason}))

    async def kill(self, workflow_id: str) -> None:
        await self._post(f"/api/v1/trades/{workflow_id}/kill")


async def stack_page_url(settings: StackSettings) -> str | None:
    """The portfolio page of the stack's own `qt api`, if it answers."""
    url = f"http://{settings.api_host}:{settings.api_port}"
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            await http.get(f"{url}/health")
    except httpx.HTTPError:
        return None
    return f"{url}/"
