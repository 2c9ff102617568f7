"""The HTTP API. OpenAPI at /docs. Routers per resource arrive with their issues."""

from __future__ import annotations

from fastapi import FastAPI

from api.routers import health


def create_app() -> FastAPI:
    app = FastAPI(
        title="Quantum Trader",
        description="Trades as durable Temporal workflows: submit, inspect, close, kill.",
        version="0.1.0",
    )
    app.include_router(health.router)
    return app
