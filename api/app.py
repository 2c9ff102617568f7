"""The HTTP API (`qt api`): one router per resource, OpenAPI at /docs (served from the installed
swagger-ui-bundle: no CDN), a bearer token on every call but /health and /metrics."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from api.routers import account, health, intents, page, reconcile, safety, trades
from api.security import load_or_create_token
from api.services import Injected, lifespan_for
from common.settings import StackSettings


def create_app(settings: StackSettings | None = None, injected: Injected | None = None,
               token: str | None = None) -> FastAPI:
    settings = settings or StackSettings()
    app = FastAPI(
        title="Quantum Trader",
        description="Trades as durable Temporal workflows: submit, inspect, close, kill. Every call but "
                    "`/health` and `/metrics` needs `Authorization: Bearer <token>` (QT_API_TOKEN, or the "
                    "file `.data/api_token` that `qt up` creates).",
        version="0.1.0", docs_url=None, redoc_url=None,
        lifespan=lifespan_for(settings, injected or Injected()),
    )
    app.state.token = token or load_or_create_token(settings)
    app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="Quantum Trader API",
                                   swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger-ui/favicon-32x32.png")

    for module in (health, intents, trades, safety, reconcile, account, page):
        app.include_router(module.router)
    return app
