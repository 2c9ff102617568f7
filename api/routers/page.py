"""The portfolio page at `/`: one server-rendered HTML page (Jinja2) for a person.

It shows the safe-mode / kill-switch state as a banner, the account (equity, margin, exposure),
the open trades with their levels (from each trade's `state` query) and unrealized PnL, the
positions the exchange reports, the equity curve and daily PnL as plotly charts, and the recent
closes with their exit reasons; every trade links to its page in the Temporal Web UI. The data
comes from the same functions the API routes use (`portfolio`, `performance`, `get_safe_mode`,
`summary_of`); a part that fails is shown as a note, the rest of the page still renders.

Access. A browser sends no `Authorization` header on a page load, so the page takes a cookie:
open `/?token=<API token>` once (or paste the token into the sign-in form, `POST /login`): the
token is compared in constant time, and a valid one sets `qt_page`, an HttpOnly, SameSite=Strict
cookie (Secure over https) and redirects to `/`, so the token leaves the address bar. The cookie
holds an HMAC of the token, not the token: it opens this page only, never the JSON API (which
still wants the bearer header), and changing the token signs every browser out. A bearer header
is accepted on `/` too (curl).

No front-end build and nothing from the internet: plotly's own bundled plotly.js
(`plotly.offline.get_plotlyjs()`) is served from `/static/plotly-<version>.min.js`, the page's
script and style from api/static/. The page's Content-Security-Policy allows scripts from this
origin only (no inline script: the figures ride as JSON in `<script type="application/json">`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import plotly
import plotly.graph_objects as go
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from common.redis_keys import KILL_SWITCH_KEY
from api.routers import account, safety
from api.routers.trades import _QUERY_TIMEOUT, summary_of
from api.schemas import Portfolio, PositionView, SafeModeView, TradeSummary
from api.services import Services, services
from trading.performance import PerformanceReport
from workflows.starter import WORKFLOW_TYPE
from workflows.trade_state import TradeState

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

COOKIE = "qt_page"
COOKIE_MAX_AGE_S = 12 * 3600
RECENT_CLOSES = 20
REFRESH_S = 15  # the page reloads itself (page.js) while its tab is visible; `?refresh=0` stops it
MIN_REFRESH_S = 5  # each reload costs a state query per open trade and a read of the journal
_HERE = Path(__file__).resolve().parent.parent
_STATIC = _HERE / "static"
_STATIC_FILES = {"page.css": "text/css", "page.js": "text/javascript"}
PLOTLY_JS_PATH = f"/static/plotly-{plotly.__version__}.min.js"
_SESSION_CONTEXT = b"quantum-trader portfolio page v1"
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
_UP, _DOWN = "#1a7f37", "#cf222e"


# ===================================================================================== access


def session_value(token: str) -> str:
    """The cookie's value: an HMAC of the API token (the token itself never sits in a cookie)."""
    return hmac.new(token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def _valid_token(candidate: str, expected: str) -> bool:
    return bool(candidate) and hmac.compare_digest(candidate.encode(), expected.encode())


def _signed_in(request: Request) -> bool:
    expected: str = request.app.state.token
    cookie = request.cookies.get(COOKIE)
    if cookie and hmac.compare_digest(cookie.encode(), session_value(expected).encode()):
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and _valid_token(credentials.strip(), expected)


def _sign_in(request: Request, token: str) -> Response:
    """A valid token: the session cookie and a redirect to `/` (the token leaves the URL)."""
    expected: str = request.app.state.token
    if not _valid_token(token, expected):
        return _login(request, status.HTTP_403_FORBIDDEN, "That token is not valid.")
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers=_HEADERS)
    response.set_cookie(COOKIE, session_value(expected), max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


def _login(request: Request, code: int, message: str | None = None) -> HTMLResponse:
    return _TEMPLATES.TemplateResponse(request, "login.html", {"message": message, "static": _static_urls()},
                                       status_code=code, headers=_HEADERS)


@router.get("/", response_class=HTMLResponse, summary="The portfolio page")
async def portfolio_page(request: Request, svc: Services = Depends(services),
                         token: Annotated[str | None, Query(max_length=512)] = None,
                         refresh: Annotated[int, Query(ge=0, le=3600, description="seconds between the page's "
                                                       "own reloads (at least 5; 0: never)")] = REFRESH_S) -> Response:
    if token is not None:
        return _sign_in(request, token)
    if not _signed_in(request):
        return _login(request, status.HTTP_401_UNAUTHORIZED)
    context = await page_context(svc)
    context["static"] = _static_urls()
    context["refresh_s"] = refresh and max(refresh, MIN_REFRESH_S)
    context["default_refresh_s"] = REFRESH_S
    return _TEMPLATES.TemplateResponse(request, "page.html", context, headers=_HEADERS)


@router.post("/login", summary="Sign in to the page with the API token (form field `token`)")
async def login(request: Request) -> Response:
    if int(request.headers.get("content-length") or 0) > 4096:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the form is too large")
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    return _sign_in(request, (form.get("token") or [""])[0].strip())


@router.post("/logout", summary="Sign out of the page (drops the cookie)")
async def logout() -> Response:
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers=_HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ================================================================================ static files


@cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs
    return get_plotlyjs().encode()


@cache
def _static_bytes(name: str) -> tuple[bytes, str]:
    data = (_STATIC / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def _static_urls() -> dict[str, str]:
    urls = {"plotly": PLOTLY_JS_PATH}
    for name in _STATIC_FILES:
        urls[name] = f"/static/page/{name}?v={_static_bytes(name)[1]}"
    return urls


@router.get(PLOTLY_JS_PATH, summary="plotly.js as the installed plotly package bundles it")
async def plotly_js() -> Response:
    return Response(_plotly_js(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=31536000, immutable",
                             "X-Content-Type-Options": "nosniff"})


@router.get("/static/page/{name}", summary="The page's own script and style")
async def page_static(name: str) -> Response:
    if name not in _STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(_STATIC / name, media_type=_STATIC_FILES[name],
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


# ======================================================================================= data


async def page_context(svc: Services) -> dict[str, Any]:
    """Everything the page shows; each part that fails becomes an `errors[part]` note."""
    parts = await asyncio.gather(
        account.portfolio(svc=svc),
        account.performance(svc=svc, since=None, until=None, starting_equity=None),
        recent_closes(svc),
        safety.get_safe_mode(svc=svc),
        kill_switch_state(svc),
        return_exceptions=True)
    names = ("portfolio", "performance", "closes", "safe_mode", "kill_switch")
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in zip(names, parts):
        if isinstance(value, BaseException):
            if not isinstance(value, Exception):
                raise value
            log.warning("portfolio page: %s not available: %r", name, value)
            errors[name] = f"{type(value).__name__}: {value}"
            value = None
        values[name] = value
    portfolio: Portfolio | None = values["portfolio"]
    if portfolio is not None:
        holding = portfolio.open_trades
    else:  # the exchange is down: the trades are still listed, from visibility alone
        try:
            holding = await holding_trades(svc)
        except Exception as err:  # noqa: BLE001
            holding, errors["open_trades"] = [], f"{type(err).__name__}: {err}"
    open_rows = await open_trade_rows(svc, holding, portfolio.positions if portfolio else [])
    report: PerformanceReport | None = values["performance"]
    return {
        "now": datetime.now(UTC),
        "portfolio": portfolio,
        "open_trades": open_rows,
        "open_unrealized": sum((r["unrealized_pnl"] for r in open_rows if r["unrealized_pnl"] is not None),
                               Decimal(0)),
        "report": report,
        "closes": values["closes"] or [],
        "safe_mode": values["safe_mode"],
        "kill_switch": values["kill_switch"],
        "charts": charts(report) if report is not None and report.equity_curve else [],
        "errors": errors,
        "temporal_ui_url": svc.settings.temporal_ui_url,
    }


async def holding_trades(svc: Services) -> list[TradeSummary]:
    """The trades that may hold a position, as `portfolio()` lists them (its own query)."""
    holding = " OR ".join(f"TradeStatus = '{s}'" for s in account._HOLDING)
    return [summary_of(svc, w) async for w in svc.temporal.list_workflows(
        f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND ({holding})")]


async def recent_closes(svc: Services, limit: int = RECENT_CLOSES) -> list[TradeSummary]:
    """Ended TradeWorkflows that were not rejected at the gates, newest close first."""
    query = (f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus != 'Running' "
             f"AND TradeStatus != 'REJECTED'")
    pages = svc.temporal.list_workflows(query, page_size=limit)
    await pages.fetch_next_page()
    closes = [summary_of(svc, w) for w in pages.current_page or []]
    closes.sort(key=lambda t: (t.closed_at or t.started_at, t.started_at), reverse=True)
    return closes[:limit]


async def kill_switch_state(svc: Services) -> SafeModeView:
    """The kill switch flag (the gates' Redis key), read like safe mode: on, why, by whom."""
    raw = await svc.redis.get(KILL_SWITCH_KEY)
    if raw is None:
        return SafeModeView(active=False)
    try:
        value = json.loads(raw)
    except ValueError:
        value = {"reason": raw}
    if not isinstance(value, dict):
        value = {"reason": str(value)}
    return SafeModeView(active=True, reason=value.get("reason"), set_by=value.get("set_by"),
                        since_ms=value.get("since_ms"))


async def _trade_state(svc: Services, trade: TradeSummary) -> tuple[TradeState | None, str | None]:
    handle = svc.temporal.get_workflow_handle(trade.workflow_id, run_id=trade.run_id)
    try:
        return await handle.query("state", result_type=TradeState, rpc_timeout=_QUERY_TIMEOUT), None
    except Exception as err:  # noqa: BLE001 - no worker, or the query failed: the row says so
        return None, f"levels not available: the state query failed ({type(err).__name__}: {err})"


async def open_trade_rows(svc: Services, trades: list[TradeSummary],
                          positions: list[PositionView]) -> list[dict[str, Any]]:
    """One row per open trade: its summary, its levels from the `state` query, mark and PnL."""
    trades = sorted(trades, key=lambda t: t.started_at, reverse=True)
    states = await asyncio.gather(*(_trade_state(svc, t) for t in trades))
    by_symbol = {p.symbol: p for p in positions}
    rows = []
    for trade, (state, note) in zip(trades, states):
        position = by_symbol.get(trade.symbol or "")
        row: dict[str, Any] = {"trade": trade, "state": state, "note": note, "stop": None, "stop_kind": None,
                               "take_profits": [], "planned": False, "mark": None, "unrealized_pnl": None,
                               "entry_price": None, "quantity": None, "pnl_source": None}
        if position is not None:
            row["mark"] = position.mark_price
        if state is not None:
            row["entry_price"], row["quantity"] = state.entry_price, state.open_qty
            if state.exit is not None:
                done = state.exit.tps_done
                row["stop"], row["stop_kind"] = state.exit.stop, str(state.exit.stop_kind)
                row["take_profits"] = [(tp.index, tp.price, tp.index <= done) for tp in state.exit.levels.take_profits]
            elif state.planned_levels is not None:
                row["stop"], row["planned"] = state.planned_levels.stop_loss, True
                row["take_profits"] = [(tp.index, tp.price, False) for tp in state.planned_levels.take_profits]
            if row["mark"] is None:
                row["mark"] = state.last_price
            if state.paused:
                row["note"] = "paused: management stopped, the stop rests on the exchange"
        if position is not None and position.owners == [trade.workflow_id]:
            row["unrealized_pnl"], row["pnl_source"] = position.unrealized_pnl, "exchange"
        elif state is not None and state.entry_price is not None and row["mark"] is not None and state.open_qty:
            sign = 1 if (trade.side or "").upper() in ("BUY", "LONG") else -1
            row["unrealized_pnl"] = (row["mark"] - state.entry_price) * state.open_qty * sign
            row["pnl_source"] = "mark"
        rows.append(row)
    return rows


# ===================================================================================== charts


def charts(report: PerformanceReport) -> list[dict[str, str]]:
    """The equity curve and daily PnL as plotly figures (JSON for the page's script)."""
    layout = dict(template="plotly_white", height=280, margin=dict(l=60, r=20, t=10, b=40),
                  hovermode="x unified", showlegend=False, font=dict(size=12))
    equity = go.Figure(go.Scatter(
        x=[p.at for p in report.equity_curve], y=[float(p.equity) for p in report.equity_curve],
        mode="lines+markers", line=dict(color="#0969da", width=2), fill="tozeroy",
        fillcolor="rgba(9,105,218,0.08)", name="equity", hovertemplate="%{y:,.2f} USDT<extra></extra>"))
    low = min(float(p.equity) for p in report.equity_curve)
    high = max(float(p.equity) for p in report.equity_curve)
    pad = max((high - low) * 0.15, abs(high) * 0.002, 1.0)
    equity.update_layout(**layout, yaxis=dict(title="USDT", range=[low - pad, high + pad], tickformat=",.0f"),
                         xaxis=dict(title="UTC midnight"))
    nets = [float(d.net) for d in report.daily]
    daily = go.Figure(go.Bar(
        x=[d.day.isoformat() for d in report.daily], y=nets, marker_color=[_UP if n >= 0 else _DOWN for n in nets],
        customdata=[d.trades for d in report.daily], name="net PnL",
        hovertemplate="%{y:,.2f} USDT, %{customdata} trade(s)<extra></extra>"))
    slots = max(len(nets), 7)  # a few days: narrow bars in the middle, not one bar as wide as the chart
    spare = (slots - len(nets)) / 2
    daily.update_layout(**layout, bargap=0.3, yaxis=dict(title="USDT", tickformat=",.2f", zeroline=True),
                        xaxis=dict(title="UTC day", type="category", range=[-0.5 - spare, len(nets) - 0.5 + spare]))
    config = {"displaylogo": False, "responsive": True,
              "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}
    return [{"id": "equity-curve", "title": "Equity curve (realized, end of each UTC day)",
             "spec": _script_json({**equity.to_plotly_json(), "config": config})},
            {"id": "daily-pnl", "title": "Daily net PnL",
             "spec": _script_json({**daily.to_plotly_json(), "config": config})}]


def _script_json(value: Any) -> str:
    """JSON safe inside `<script type="application/json">` (no `</script>`, no HTML)."""
    text = json.dumps(value, cls=plotly.utils.PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ============================================================================= presentation


def _money(value: Decimal | float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{Decimal(str(value)):{'+' if signed else ''},.2f}"


def format_price(value: Decimal | float | None) -> str:
    """A price as a person reads it: thousands separated, trailing zeros dropped but 2 kept
    (63,000.00 · 62,550.80 · 0.5123)."""
    if value is None:
        return "–"
    number = Decimal(str(value)).normalize()
    if number.as_tuple().exponent > -2:
        number = number.quantize(Decimal("0.01"))
    return f"{number:,f}"


def _quantity(value: Decimal | float | None) -> str:
    return "–" if value is None else f"{Decimal(str(value)).normalize():,f}"


def _pnl_class(value: Decimal | float | None) -> str:
    if value is None or value == 0:
        return ""
    return "up" if value > 0 else "down"


def _when(value: datetime | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "no expiry"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f} %"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


_TEMPLATES = Jinja2Templates(directory=_HERE / "templates")
_TEMPLATES.env.filters.update(money=_money, price=format_price, qty=_quantity, pnl_class=_pnl_class, when=_when,
                              duration=_duration, pct=_pct, ratio=_ratio)
