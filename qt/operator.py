"""`qt` operator commands: thin clients of the HTTP API (`qt api`), answers as rich tables.

    qt trades [--status --symbol --side --limit]     trades, newest first
    qt trade ID                                      one trade: stage, levels, orders, PnL, gates, notes
    qt enter SYMBOL SIDE --size USD --leverage N     a manual intent (retry-safe: --id)
    qt close ID                                      close at market now
    qt adjust ID --stop P [--tp P ...]               move the stop / the pending take-profits
    qt kill ID                                       flatten, cancel the orders, end KILLED
    qt kill-switch on --reason R | off               safe mode on and every open trade killed
    qt safe-mode on --reason R [--ttl S] | off | status
    qt performance                                   realized performance of the closed trades

Where: `QT_API_URL`, else `http://{QT_API_HOST}:{QT_API_PORT}`. Token: `QT_API_TOKEN`, else the
token file the API uses (`{QT_DATA_DIR}/api_token`, `api/security.py`); read, never created.
Every refusal (4xx/5xx) and an unreachable API print one line on stderr and exit 1; the line
carries the API's `detail` (the fields of a 422, the reason of a 409).
"""

from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from qt.console import output_console
from trading.models import ExitReason, Side, TradeStatus

API = "/api/v1"
TIMEOUT_S = 30.0  # reads and quick actions
CLOSE_TIMEOUT_S = 120.0  # `close` answers once the trade is flat
ENTER_WAIT_TIMEOUT_S = 45.0  # ?wait=gates waits up to 15 s on the server

_STATUS_COLOURS = {
    "PENDING": "yellow", "OPENING": "yellow", "OPEN": "green", "CLOSING": "yellow", "CLOSED": "blue",
    "REJECTED": "magenta", "KILLED": "red", "FAILED": "bold red",
    "RUNNING": "green", "COMPLETED": "blue", "TERMINATED": "red", "CANCELED": "red", "TIMED_OUT": "red",
    "CONTINUED_AS_NEW": "cyan",
}
_PROBLEM = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 409: "conflict",
            422: "invalid", 500: "server error", 503: "unavailable"}


class ApiError(Exception):
    """One line for the operator: what the API said, or that it could not be reached."""


# ================================================================================ the API client


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    token_source: str  # "QT_API_TOKEN" or the token file's path


def api_target() -> Target:
    """The API's address (`QT_API_URL`, else QT_API_HOST/QT_API_PORT) and its token
    (`QT_API_TOKEN`, else the token file the API wrote; None when neither exists)."""
    from api.security import token_path
    from qt.settings import StackSettings

    settings = StackSettings()
    url = os.environ.get("QT_API_URL", "").strip().rstrip("/")
    if not url:
        host = settings.api_host
        if host in ("", "0.0.0.0", "::"):  # a listen-everywhere address: talk to this machine
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        url = f"http://{host}:{settings.api_port}"
    if settings.api_token is not None and settings.api_token.get_secret_value():
        return Target(url, settings.api_token.get_secret_value(), "QT_API_TOKEN")
    path = token_path(settings)
    try:
        token = path.read_text().strip() or None
    except FileNotFoundError:
        token = None
    except OSError as err:
        raise ApiError(f"cannot read the API token file {path}: {err}") from None
    return Target(url, token, str(path))


class ApiClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        headers = {"User-Agent": "qt-cli"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self.http = httpx.Client(base_url=target.url, headers=headers, timeout=TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
             headers: dict | None = None, timeout: float = TIMEOUT_S) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            reply = self.http.request(method, path, json=json_body, params=params, headers=headers,
                                      timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise ApiError(f"API not reachable at {self.target.url} (is `qt up` running?)") from None
        except httpx.TimeoutException:
            raise ApiError(f"API at {self.target.url} did not answer {method} {path} within {timeout:g} s") from None
        except httpx.TransportError as err:
            raise ApiError(f"API at {self.target.url}: {type(err).__name__}: {err}") from None
        if reply.status_code >= 400:
            raise ApiError(problem_line(reply, self.target))
        try:
            return reply.json()
        except ValueError:
            raise ApiError(f"HTTP {reply.status_code} from {method} {path}: the answer is not JSON") from None


def problem_line(reply: httpx.Response, target: Target | None = None) -> str:
    """`HTTP 422 invalid: side: must be BUY or SELL; leverage: ...` -- one line, the API's detail."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        text = "; ".join(_field_problem(item) for item in detail)
    elif detail:
        text = str(detail)
    else:
        text = reply.text.strip()[:300] or reply.reason_phrase
    code = reply.status_code
    line = f"HTTP {code} {_PROBLEM.get(code, reply.reason_phrase.lower())}: {text}"
    if code in (401, 403) and target is not None:
        line += (f" (token from {target.token_source})" if target.token else
                 f" (no token: set QT_API_TOKEN, or start the API so it writes {target.token_source})")
    return " ".join(line.split())


def _field_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc") or []]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    message = str(item.get("msg", "invalid"))
    return f"{'.'.join(loc)}: {message}" if loc else message


def _run(action: Callable[[ApiClient, Console], int | None]) -> None:
    """Call the API through one client; any ApiError is one red line on stderr and exit 1."""
    out = output_console()
    err = Console(stderr=True, soft_wrap=True)
    try:
        client = ApiClient(api_target())
    except ApiError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    try:
        code = action(client, out)
    except ApiError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    finally:
        client.close()
    if code:
        raise typer.Exit(code=code)


# ==================================================================================== formatting


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _num(value: Any) -> str:
    number = _dec(value)
    if number is None:
        return "" if value is None else str(value)
    text = format(number.normalize(), "f")
    return text


def _money(value: Any, signed: bool = True) -> str:
    number = _dec(value)
    if number is None:
        return "[dim]–[/]"
    cents = number.quantize(Decimal("0.01"))
    if not signed:
        return f"{cents:,}"
    if cents > 0:
        return f"[green]+{cents:,}[/]"
    if cents < 0:
        return f"[red]{cents:,}[/]"
    return f"[dim]{abs(cents):,}[/]"


def _ratio(value: Any, digits: int = 2) -> str:
    return "[dim]–[/]" if value is None else f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    return "[dim]–[/]" if value is None else f"{float(value) * 100:.2f}%"


def _status(value: Any) -> str:
    if not value:
        return "[dim]?[/]"
    text = str(value)
    return f"[{_STATUS_COLOURS.get(text, 'white')}]{escape(text)}[/]"


def _side(value: Any) -> str:
    text = str(value or "")
    return {"BUY": "[green]BUY[/]", "SELL": "[red]SELL[/]"}.get(text, escape(text))


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value)) if not isinstance(value, (int, float)) else \
            datetime.fromtimestamp(value / 1000, UTC)
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _link(url: str | None, text: str | None = None) -> str:
    if not url:
        return ""
    return f"[link={url}]{escape(text or url)}[/link]"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    from trading.pnl import format_duration

    return format_duration(float(seconds))


def _grid(rows: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        if value not in (None, ""):
            grid.add_row(key, value)
    return grid


def _gates_table(gates: list[dict]) -> Table:
    table = Table(title="gates", title_justify="left")
    table.add_column("gate")
    table.add_column("verdict")
    table.add_column("detail", overflow="fold")
    for gate in gates:
        if not gate.get("checked", True):
            verdict = "[dim]not checked[/]"
        else:
            verdict = "[green]pass[/]" if gate.get("passed") else "[red]FAIL[/]"
        table.add_row(escape(str(gate.get("name"))), verdict, escape(str(gate.get("detail", ""))))
    return table


def _result_grid(result: dict) -> Table:
    return _grid([
        ("status", _status(result.get("status"))),
        ("exit reason", escape(str(result.get("exit_reason") or ""))),
        ("realized PnL", _money(result.get("realized_pnl")) + " USDT"),
        ("symbol", f"{escape(str(result.get('symbol') or ''))} {_side(result.get('side'))}".strip()),
        ("quantity", _num(result.get("quantity"))),
        ("entry → exit", f"{_num(result.get('entry_price'))} → {_num(result.get('exit_price'))}"
         if result.get("entry_price") else ""),
        ("fees / funding", f"{_money(result.get('fees'), signed=False)} / {_money(result.get('funding'))}"
         if result.get("fees") is not None else ""),
        ("R", _ratio(result.get("r_multiple")) if result.get("r_multiple") is not None else ""),
        ("held", _duration(result.get("holding_s"))),
        ("reason", escape(str(result.get("reason") or ""))),
    ])


def _json_out(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2))


def _operator() -> str:
    try:
        return f"{getpass.getuser()}@cli"[:128]
    except Exception:  # noqa: BLE001 - no user name (a container without passwd entry)
        return "cli"


# ====================================================================================== commands


def trades_cmd(
    status: TradeStatus | None = typer.Option(None, "--status", case_sensitive=False, help="TradeStatus"),
    symbol: str | None = typer.Option(None, "--symbol", help="e.g. BTCUSDT"),
    side: Side | None = typer.Option(None, "--side", case_sensitive=False),
    exit_reason: ExitReason | None = typer.Option(None, "--exit-reason", case_sensitive=False),
    model: str | None = typer.Option(None, "--model", help="model version"),
    source: str | None = typer.Option(None, "--source", help="intent source (api, stream...)"),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10_000, help="at most this many trades"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON"),
) -> None:
    """List trades, newest first (GET /api/v1/trades)."""

    def action(api: ApiClient, out: Console) -> None:
        rows: list[dict] = []
        token: str | None = None
        while len(rows) < limit:
            page = api.call("GET", f"{API}/trades", params={
                "status": status.value if status else None, "symbol": symbol.strip().upper() if symbol else None,
                "side": side.value if side else None, "exit_reason": exit_reason.value if exit_reason else None,
                "model": model, "source": source, "page_size": min(limit - len(rows), 1000), "page_token": token})
            rows += page["trades"]
            token = page.get("next_page_token")
            if not token:
                break
        if as_json:
            _json_out({"trades": rows, "more": bool(token)})
            return
        table = Table(title=f"trades ({api.target.url})", title_justify="left")
        for column, justify in (("trade", "left"), ("status", "left"), ("symbol", "left"), ("side", "left"),
                                ("lev", "right"), ("PnL", "right"), ("exit", "left"), ("model / source", "left"),
                                ("started (UTC)", "left"), ("closed (UTC)", "left")):
            table.add_column(column, justify=justify)
        for t in rows:
            status_text = _status(t.get("status") or t.get("execution_status"))
            if t.get("status") and t.get("execution_status") not in ("RUNNING", "COMPLETED"):
                status_text += f" [dim]({escape(t['execution_status'])})[/]"
            lev = t.get("leverage")
            table.add_row(
                _link(t.get("web_ui_url"), t["workflow_id"]), status_text, escape(t.get("symbol") or ""),
                _side(t.get("side")), f"{lev:g}x" if lev else "",
                _money(t.get("realized_pnl")) if t.get("realized_pnl") is not None else "",
                escape(t.get("exit_reason") or ""),
                escape(" / ".join(x for x in (t.get("model"), t.get("source")) if x)),
                _when(t.get("started_at")), _when(t.get("closed_at")))
        if not rows:
            out.print("[dim]no trades match[/]")
            return
        table.caption = f"{len(rows)} trade{'s' * (len(rows) != 1)}" + \
            (f"; more with --limit {limit * 2}" if token else "") + "; the trade id links to the Web UI"
        out.print(table)

    _run(action)


def trade_cmd(
    workflow_id: str = typer.Argument(..., metavar="ID", help="the trade's workflow id (trade-...)"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON"),
) -> None:
    """One trade: stage, status, levels, orders, PnL, gates, notes (GET /api/v1/trades/ID)."""

    def action(api: ApiClient, out: Console) -> None:
        detail = api.call("GET", f"{API}/trades/{workflow_id}")
        if as_json:
            _json_out(detail)
            return
        out.print(render_trade(detail))

    _run(action)


def render_trade(detail: dict) -> Group:
    state: dict = detail.get("state") or {}
    result: dict = detail.get("result") or {}
    parts: list[Any] = []
    exit_state = state.get("exit") or {}
    levels = exit_state.get("levels") or state.get("planned_levels") or {}
    symbol = (state.get("rules") or {}).get("symbol") or result.get("symbol") or ""
    side = levels.get("side") or (state.get("pnl") or {}).get("side") or result.get("side")
    status = state.get("status") or result.get("status")
    head = f"[bold]{escape(detail['workflow_id'])}[/]  {_status(status)}"
    if state.get("stage"):
        head += f"  stage [bold]{escape(state['stage'])}[/]"
    head += f"  [dim]({escape(detail.get('execution_status', ''))})[/]"
    if state.get("paused"):
        head += "  [yellow]PAUSED[/]"

    rows: list[tuple[str, str]] = []
    if symbol or side:
        lev = state.get("leverage")
        rows.append(("market", f"{escape(symbol)} {_side(side)}" + (f" {lev}x" if lev else "")))
    if state.get("entry_price"):
        rows.append(("entry", f"{_num(state['entry_price'])}  qty {_num(state.get('entry_qty'))}, "
                              f"open {_num(state.get('open_qty'))}"))
    if exit_state.get("stop"):
        kind = exit_state.get("stop_kind") or ""
        rows.append(("stop", f"[red]{_num(exit_state['stop'])}[/] [dim]{escape(kind)}[/]"))
    elif levels.get("stop_loss"):
        rows.append(("stop (planned)", f"[red]{_num(levels['stop_loss'])}[/]"))
    tps = levels.get("take_profits") or []
    if tps:
        done = exit_state.get("tps_done", 0)
        rows.append(("take-profits", ", ".join(
            f"TP{tp.get('index', i + 1)} {_num(tp.get('price'))} ({float(tp.get('fraction', 0)) * 100:.0f}%)"
            + (" [green]done[/]" if i < done else "") for i, tp in enumerate(tps))))
    if levels.get("trailing_callback_pct"):
        rows.append(("trailing", f"{float(levels['trailing_callback_pct']) * 100:.2f}% callback"))
    if state.get("last_price"):
        rows.append(("last price", f"{_num(state['last_price'])} [dim]{_when(state.get('last_price_ms'))}[/]"))
    if state.get("liquidation_price"):
        rows.append(("liquidation", _num(state["liquidation_price"])))
    unrealized = _unrealized(state, side)
    if unrealized is not None:
        rows.append(("unrealized", f"{_money(unrealized)} USDT [dim](at the last price)[/]"))
    pnl = state.get("pnl")
    if pnl:
        rows.append(("realized PnL", f"{_money(pnl.get('net_pnl'))} USDT [dim](gross {_num(pnl.get('gross_pnl'))}, "
                                     f"fees {_num(pnl.get('fees'))}, funding {_num(pnl.get('funding'))}"
                                     + (f", R {_ratio(pnl.get('r_multiple'))}" if pnl.get("r_multiple") else "")
                                     + ")[/]"))
    kill = state.get("kill")
    if kill:
        rows.append(("kill score", f"{kill.get('score', 0):.3f} / {kill.get('threshold', 0):.2f}"))
    if state.get("opened_at_ms"):
        rows.append(("opened", _when(state["opened_at_ms"])))
    if state.get("closed_at_ms"):
        rows.append(("closed", _when(state["closed_at_ms"])))
    if state.get("exit_reason"):
        rows.append(("exit reason", escape(state["exit_reason"])))
    if state.get("reason"):
        rows.append(("reason", escape(state["reason"])))
    rows.append(("Web UI", _link(detail.get("web_ui_url"))))
    parts.append(Panel(_grid(rows), title=head, title_align="left", expand=False))

    if result:
        parts.append(Panel(_result_grid(result), title="result", title_align="left", expand=False))
    if state.get("gates"):
        parts.append(_gates_table(state["gates"]))
    orders = state.get("orders") or []
    if orders:
        table = Table(title="orders", title_justify="left")
        for column in ("step", "client id", "type", "side", "qty", "trigger", "filled", "avg price", "time (UTC)"):
            table.add_column(column, justify="right" if column in ("qty", "trigger", "filled", "avg price") else "left")
        for o in orders:
            table.add_row(escape(o.get("step", "")), escape(o.get("client_order_id", "")), escape(o.get("type", "")),
                          _side(o.get("side")), _num(o.get("quantity")), _num(o.get("trigger_price")),
                          _num(o.get("filled")), _num(o.get("average_price")), _when(o.get("time_ms")))
        parts.append(table)
    notes = state.get("notes") or []
    if notes:
        parts.append(Panel("\n".join(escape(n) for n in notes), title="notes", title_align="left", expand=False))
    if detail.get("note"):
        parts.append(f"[yellow]{escape(detail['note'])}[/]")
    return Group(*parts)


def _unrealized(state: dict, side: str | None) -> Decimal | None:
    entry, last, qty = _dec(state.get("entry_price")), _dec(state.get("last_price")), _dec(state.get("open_qty"))
    if entry is None or last is None or not qty or side not in ("BUY", "SELL"):
        return None
    return (1 if side == "BUY" else -1) * qty * (last - entry)


def enter_cmd(
    symbol: str = typer.Argument(..., help="e.g. BTCUSDT"),
    side: str = typer.Argument(..., help="BUY or SELL"),
    size: str = typer.Option(..., "--size", help="position size, USD (notional)"),
    leverage: int = typer.Option(..., "--leverage", help="leverage, e.g. 5"),
    confidence: float | None = typer.Option(None, "--confidence", help="0..1 (default: the API's, 1)"),
    entry: str | None = typer.Option(None, "--entry", help="entry price (default: the exchange's last price)"),
    stop: str | None = typer.Option(None, "--stop", help="stop-loss price (default: the adaptive levels)"),
    tp: str | None = typer.Option(None, "--tp", help="take-profit price"),
    reason: str = typer.Option("", "--reason", help="why (kept with the intent)"),
    intent_id: str | None = typer.Option(None, "--id", help="intent id (Idempotency-Key): the same id never "
                                                            "opens a second trade; default: a new one, printed"),
    wait: bool = typer.Option(False, "--wait", help="wait for the gates' verdicts (exit 1 if they refuse)"),
) -> None:
    """Submit a manual intent (POST /api/v1/intents): one TradeWorkflow, safe to retry with --id."""
    key = intent_id or f"cli-{uuid.uuid4().hex[:16]}"
    body: dict[str, Any] = {"symbol": symbol, "side": side, "position_size_usd": size, "leverage": leverage}
    for name, value in (("confidence", confidence), ("entry_price", entry), ("stop_loss", stop),
                        ("take_profit", tp)):
        if value is not None:
            body[name] = value
    if reason:
        body["reason"] = reason

    def action(api: ApiClient, out: Console) -> int:
        if intent_id is None:
            out.print(f"intent id [bold]{escape(key)}[/] [dim](retry safely with --id {escape(key)})[/]")
        accepted = api.call("POST", f"{API}/intents", json_body=body, headers={"Idempotency-Key": key},
                            params={"wait": "gates" if wait else None},
                            timeout=ENTER_WAIT_TIMEOUT_S if wait else TIMEOUT_S)
        intent = accepted.get("intent") or {}
        if accepted.get("started"):
            head = f"[green]trade started[/]: [bold]{escape(accepted['workflow_id'])}[/]"
        else:
            head = (f"[yellow]already submitted[/]: [bold]{escape(accepted['workflow_id'])}[/] "
                    "[dim](this intent id's trade; nothing new started)[/]")
        rows = [
            ("intent", f"{escape(str(intent.get('symbol')))} {_side(intent.get('side'))} "
                       f"{_num(intent.get('position_size_usd'))} USD at {intent.get('leverage')}x"),
            ("entry", _num(intent.get("entry_price"))),
            ("stop / tp", f"{_num(intent.get('stop_loss')) or '(adaptive)'} / {_num(intent.get('take_profit')) or '(adaptive)'}"),
            ("confidence", f"{intent.get('confidence')}"),
            ("intent id", escape(str(intent.get("intent_id") or key))),
            ("Web UI", _link(accepted.get("web_ui_url"))),
        ]
        if wait:
            rows.insert(0, ("status", _status(accepted.get("status"))))
        out.print(Panel(_grid(rows), title=head, title_align="left", expand=False))
        if not wait:
            return 0
        if accepted.get("gates"):
            out.print(_gates_table(accepted["gates"]))
        status = accepted.get("status")
        if status in (TradeStatus.REJECTED, TradeStatus.FAILED):
            Console(stderr=True, soft_wrap=True).print(
                f"[red]error:[/] {escape(status)}: {escape(str(accepted.get('reason') or ''))}")
            return 1
        if status is None:
            Console(stderr=True, soft_wrap=True).print(
                f"[red]error:[/] {escape(str(accepted.get('reason') or 'no verdict'))}")
            return 1
        return 0

    _run(action)


def close_cmd(
    workflow_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option("operator", "--reason", help="kept in the trade's result"),
    amount: str | None = typer.Option(None, "--amount", help="contracts to close now (a partial close: the "
                                                             "rest stays open and managed); default: all"),
) -> None:
    """Close a trade at market now, all or --amount contracts (POST /api/v1/trades/ID/close)."""

    def action(api: ApiClient, out: Console) -> None:
        body = {"reason": reason, **({"amount": amount} if amount is not None else {})}
        result = api.call("POST", f"{API}/trades/{workflow_id}/close", json_body=body, timeout=CLOSE_TIMEOUT_S)
        what = "closed" if result.get("status") != "OPEN" else f"partly closed ({amount} contracts)"
        out.print(Panel(_result_grid(result), title=f"[bold]{escape(workflow_id)}[/] {what}", title_align="left",
                        expand=False))

    _run(action)


def adjust_cmd(
    workflow_id: str = typer.Argument(..., metavar="ID"),
    stop: str | None = typer.Option(None, "--stop", help="new stop-loss price"),
    tp: list[str] | None = typer.Option(None, "--tp", help="new prices of the pending take-profits, nearest "
                                                             "first (repeat: --tp P1 --tp P2)"),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """Move the stop and/or the pending take-profits (POST /api/v1/trades/ID/adjust)."""
    if stop is None and not tp:
        raise typer.BadParameter("give --stop and/or --tp", param_hint="--stop / --tp")
    body: dict[str, Any] = {"reason": reason}
    if stop is not None:
        body["stop_loss"] = stop
    if tp:
        body["take_profits"] = list(tp)

    def action(api: ApiClient, out: Console) -> None:
        result = api.call("POST", f"{API}/trades/{workflow_id}/adjust", json_body=body, timeout=CLOSE_TIMEOUT_S)
        out.print(Panel(_grid([
            ("stop", f"[red]{_num(result.get('stop_loss'))}[/]"),
            ("take-profits", ", ".join(_num(p) for p in result.get("take_profits") or []) or "[dim]none pending[/]"),
            ("note", escape(str(result.get("note") or ""))),
        ]), title=f"[bold]{escape(workflow_id)}[/] adjusted", title_align="left", expand=False))

    _run(action)


def kill_cmd(
    workflow_id: str = typer.Argument(..., metavar="ID"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until the trade has ended and print its result"),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="seconds to wait with --wait"),
) -> None:
    """Kill a trade (POST /api/v1/trades/ID/kill): flatten, cancel its orders, end KILLED."""

    def action(api: ApiClient, out: Console) -> int:
        accepted = api.call("POST", f"{API}/trades/{workflow_id}/kill")
        out.print(f"[red]kill[/] {escape(workflow_id)}: {escape(accepted.get('detail', ''))}")
        if not wait:
            return 0
        deadline = time.monotonic() + timeout
        while True:
            detail = api.call("GET", f"{API}/trades/{workflow_id}")
            if detail.get("result") or detail.get("execution_status") != "RUNNING":
                out.print(render_trade(detail) if not detail.get("result") else
                          Panel(_result_grid(detail["result"]), title=f"[bold]{escape(workflow_id)}[/] ended",
                                title_align="left", expand=False))
                return 0
            if time.monotonic() > deadline:
                status = (detail.get("state") or {}).get("status")
                raise ApiError(f"{workflow_id} still running ({status or '?'}) after {timeout:g} s: "
                               f"follow it with `qt trade {workflow_id}`")
            time.sleep(0.5)

    _run(action)


def performance_cmd(
    since: str | None = typer.Option(None, "--since", help="closed at or after (ISO 8601 with a zone)"),
    until: str | None = typer.Option(None, "--until", help="closed before (ISO 8601 with a zone)"),
    starting_equity: str | None = typer.Option(None, "--starting-equity", help="equity before the first close "
                                               "(default: the API's: wallet balance minus what was made since)"),
    days: int = typer.Option(14, "--days", min=0, help="daily rows to show (the newest)"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON"),
) -> None:
    """Realized performance of the closed trades (GET /api/v1/performance)."""

    def action(api: ApiClient, out: Console) -> None:
        report = api.call("GET", f"{API}/performance",
                          params={"since": since, "until": until, "starting_equity": starting_equity})
        if as_json:
            _json_out(report)
            return
        out.print(render_performance(report, days))

    _run(action)


def render_performance(report: dict, days: int = 14) -> Group:
    totals, risk = report.get("totals") or {}, report.get("risk") or {}
    if not totals.get("trades"):
        return Group("[dim]no closed trades in this window[/]")
    window = f"{report.get('first_day')} .. {report.get('last_day')}"
    rows = [
        ("trades", f"{totals['trades']}  ([green]{totals.get('wins', 0)} won[/], [red]{totals.get('losses', 0)} lost[/],"
                   f" {totals.get('flat', 0)} flat)"),
        ("win rate", _pct(totals.get("win_rate"))),
        ("net PnL", _money(totals.get("net")) + " USDT"),
        ("gross / fees / funding", f"{_money(totals.get('gross'))} / {_money(totals.get('fees'), signed=False)} / "
                                   f"{_money(totals.get('funding'))}"),
        ("profit factor", _ratio(totals.get("profit_factor"))),
        ("expectancy", f"{_money(totals.get('expectancy'))} USDT per trade"
                       + (f", {_ratio(totals.get('expectancy_r'))} R (over {totals.get('r_trades')} with an R)"
                          if totals.get("expectancy_r") is not None else "")),
        ("equity", f"{_money(report.get('starting_equity'), signed=False)} → "
                   f"{_money(report.get('ending_equity'), signed=False)} USDT"),
        ("max drawdown", f"{_money(risk.get('max_drawdown'), signed=False)} USDT ({_pct(risk.get('max_drawdown_fraction'))})"),
        ("Sharpe / Sortino", f"{_ratio(risk.get('sharpe'))} / {_ratio(risk.get('sortino'))} "
                             f"[dim]({risk.get('days')} daily returns, {risk.get('periods_per_year')} per year)[/]"),
    ]
    parts: list[Any] = [Panel(_grid(rows), title=f"[bold]performance[/] {window} (UTC)", title_align="left", expand=False)]
    for title, key in (("by symbol", "by_symbol"), ("by exit reason", "by_exit_reason"), ("by model", "by_model")):
        groups = report.get(key) or {}
        if groups:
            parts.append(_groups_table(title, groups))
    daily = (report.get("daily") or [])[-days:] if days else []
    if daily:
        table = Table(title="daily (newest last)", title_justify="left")
        for column in ("day", "trades", "net", "fees", "equity end", "return"):
            table.add_column(column, justify="left" if column == "day" else "right")
        for d in daily:
            table.add_row(str(d.get("day")), str(d.get("trades")), _money(d.get("net")),
                          _money(d.get("fees"), signed=False), _money(d.get("equity_end"), signed=False),
                          _pct(d.get("daily_return")))
        parts.append(table)
    return Group(*parts)


def _groups_table(title: str, groups: dict[str, dict]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (title.split()[-1], "trades", "won", "lost", "win rate", "net", "fees"):
        table.add_column(column, justify="left" if column == title.split()[-1] else "right")
    for name, g in groups.items():
        table.add_row(escape(name), str(g.get("trades")), str(g.get("wins")), str(g.get("losses")),
                      _pct(g.get("win_rate")), _money(g.get("net")), _money(g.get("fees"), signed=False))
    return table


# ================================================================================ account safety

kill_switch_app = typer.Typer(help="The kill switch: safe mode on and every open trade killed (flattened).",
                              no_args_is_help=True, add_completion=False)
safe_mode_app = typer.Typer(help="Safe mode: the gates refuse every new trade; open trades go on.",
                            no_args_is_help=True, add_completion=False)


def _safe_mode_line(view: dict) -> str:
    if not view.get("active"):
        return "safe mode [green]off[/]: new trades allowed"
    since = f" since {_when(view['since_ms'])} UTC" if view.get("since_ms") else ""
    by = f" by {escape(str(view['set_by']))}" if view.get("set_by") else ""
    ttl = view.get("ttl_s")
    expiry = f", expires in {_duration(ttl)}" if ttl is not None else ", no expiry"
    return f"safe mode [bold red]ON[/]{since}{by}: {escape(str(view.get('reason') or ''))}{expiry}"


def _positions_line(symbols: list[str]) -> str:
    if not symbols:
        return "account [green]flat[/]: no open position on the exchange"
    return f"[bold red]open positions on the exchange[/]: {escape(', '.join(symbols))}"


@kill_switch_app.command("on")
def kill_switch_on(
    reason: str = typer.Option(..., "--reason", "-r", help="why (shown to every gate that refuses)"),
    by: str | None = typer.Option(None, "--by", help="who (default: USER@cli)"),
    wait: float = typer.Option(60.0, "--wait", min=0, max=300, help="seconds to wait for the killed trades to end"),
) -> None:
    """Kill switch ON: safe mode on, every open trade killed; exit 1 unless all ended and the account is flat."""

    def action(api: ApiClient, out: Console) -> int:
        report = api.call("POST", f"{API}/kill-switch",
                          json_body={"reason": reason, "set_by": by or _operator(), "wait_s": wait},
                          timeout=wait + TIMEOUT_S)
        out.print("kill switch [bold red]ON[/]")
        killed = report.get("killed") or []
        if killed:
            table = Table(title=f"killed ({len(killed)})", title_justify="left")
            for column in ("trade", "status", "exit", "PnL", "reason"):
                table.add_column(column, justify="right" if column == "PnL" else "left")
            for k in killed:
                table.add_row(escape(k["workflow_id"]), _status(k.get("status")), escape(str(k.get("exit_reason") or "")),
                              _money(k.get("realized_pnl")), escape(str(k.get("reason") or "")))
            out.print(table)
        else:
            out.print("[dim]no open trade to kill[/]")
        still = report.get("still_running") or []
        if still:
            out.print(f"[bold red]still running after {wait:g} s[/]: {escape(', '.join(still))}")
        out.print(_positions_line(report.get("open_positions") or []))
        out.print(_safe_mode_line(report.get("safe_mode") or {}))
        if still or report.get("open_positions"):
            Console(stderr=True, soft_wrap=True).print(
                "[red]error:[/] not flat: " + escape(", ".join([*still, *report.get("open_positions", [])])))
            return 1
        return 0

    _run(action)


@kill_switch_app.command("off")
def kill_switch_off() -> None:
    """Kill switch OFF (safe mode stays on until `qt safe-mode off`)."""

    def action(api: ApiClient, out: Console) -> None:
        report = api.call("DELETE", f"{API}/kill-switch")
        out.print("kill switch [green]off[/]")
        out.print(_positions_line(report.get("open_positions") or []))
        view = report.get("safe_mode") or {}
        out.print(_safe_mode_line(view))
        if view.get("active"):
            out.print("[dim]new trades stay refused until `qt safe-mode off`[/]")

    _run(action)


@safe_mode_app.command("on")
def safe_mode_on(
    reason: str = typer.Option(..., "--reason", "-r"),
    ttl: int = typer.Option(900, "--ttl", help="seconds until it ends by itself (1..604800)"),
    by: str | None = typer.Option(None, "--by", help="who (default: USER@cli)"),
) -> None:
    """Safe mode ON: the gates refuse every new trade (open trades go on) until off or the TTL ends."""

    def action(api: ApiClient, out: Console) -> None:
        view = api.call("PUT", f"{API}/safe-mode", json_body={"reason": reason, "ttl_s": ttl,
                                                              "set_by": by or _operator()})
        out.print(_safe_mode_line(view))

    _run(action)


@safe_mode_app.command("off")
def safe_mode_off() -> None:
    """Safe mode OFF: new trades allowed again."""
    _run(lambda api, out: out.print(_safe_mode_line(api.call("DELETE", f"{API}/safe-mode"))))


@safe_mode_app.command("status")
def safe_mode_status() -> None:
    """Is safe mode on, since when, why, set by whom, for how long."""
    _run(lambda api, out: out.print(_safe_mode_line(api.call("GET", f"{API}/safe-mode"))))


# ================================================================================== registration

COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("trades", trades_cmd), ("trade", trade_cmd), ("enter", enter_cmd), ("close", close_cmd),
    ("adjust", adjust_cmd), ("kill", kill_cmd), ("performance", performance_cmd),
]


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `qt` app."""
    for name, command in COMMANDS:
        app.command(name)(command)
    app.add_typer(kill_switch_app, name="kill-switch")
    app.add_typer(safe_mode_app, name="safe-mode")
