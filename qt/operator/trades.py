"""`qt trades`, `qt trade`, `qt enter`, `qt close`, `qt adjust`, `qt pause`, `qt resume`, `qt kill`,
`qt terminate`: one trade's life through the API."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from qt.operator.client import API, CLOSE_TIMEOUT_S, ENTER_WAIT_TIMEOUT_S, TIMEOUT_S, ApiClient, ApiError, run_with_api
from qt.operator.render import (dec, gates_table, grid, json_out, link, money, num, ratio, result_grid, side_text,
                                status_text, when)
from trading.models import ExitReason, Side, TradeStatus

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
            json_out({"trades": rows, "more": bool(token)})
            return
        table = Table(title=f"trades ({api.target.url})", title_justify="left")
        for column, justify in (("trade", "left"), ("status", "left"), ("symbol", "left"), ("side", "left"),
                                ("lev", "right"), ("PnL", "right"), ("exit", "left"), ("model / source", "left"),
                                ("started (UTC)", "left"), ("closed (UTC)", "left")):
            table.add_column(column, justify=justify)
        for t in rows:
            shown = status_text(t.get("status") or t.get("execution_status"))
            if t.get("status") and t.get("execution_status") not in ("RUNNING", "COMPLETED"):
                shown += f" [dim]({escape(t['execution_status'])})[/]"
            lev = t.get("leverage")
            table.add_row(
                link(t.get("web_ui_url"), t["workflow_id"]), shown, escape(t.get("symbol") or ""),
                side_text(t.get("side")), f"{lev:g}x" if lev else "",
                money(t.get("realized_pnl")) if t.get("realized_pnl") is not None else "",
                escape(t.get("exit_reason") or ""),
                escape(" / ".join(x for x in (t.get("model"), t.get("source")) if x)),
                when(t.get("started_at")), when(t.get("closed_at")))
        if not rows:
            out.print("[dim]no trades match[/]")
            return
        table.caption = f"{len(rows)} trade{'s' * (len(rows) != 1)}" + \
            (f"; more with --limit {limit * 2}" if token else "") + "; the trade id links to the Web UI"
        out.print(table)

    run_with_api(action)


def trade_cmd(
    workflow_id: str = typer.Argument(..., metavar="ID", help="the trade's workflow id (trade-...)"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON"),
) -> None:
    """One trade: stage, status, levels, orders, PnL, gates, notes (GET /api/v1/trades/ID)."""

    def action(api: ApiClient, out: Console) -> None:
        detail = api.call("GET", f"{API}/trades/{workflow_id}")
        if as_json:
            json_out(detail)
            return
        out.print(render_trade(detail))

    run_with_api(action)


def render_trade(detail: dict) -> Group:
    state: dict = detail.get("state") or {}
    result: dict = detail.get("result") or {}
    parts: list[Any] = []
    exit_state = state.get("exit") or {}
    levels = exit_state.get("levels") or state.get("planned_levels") or {}
    symbol = (state.get("rules") or {}).get("symbol") or result.get("symbol") or ""
    side = levels.get("side") or (state.get("pnl") or {}).get("side") or result.get("side")
    status = state.get("status") or result.get("status")
    head = f"[bold]{escape(detail['workflow_id'])}[/]  {status_text(status)}"
    if state.get("stage"):
        head += f"  stage [bold]{escape(state['stage'])}[/]"
    head += f"  [dim]({escape(detail.get('execution_status', ''))})[/]"
    if state.get("paused"):
        head += "  [yellow]PAUSED[/]"

    rows: list[tuple[str, str]] = []
    if symbol or side:
        lev = state.get("leverage")
        rows.append(("market", f"{escape(symbol)} {side_text(side)}" + (f" {lev}x" if lev else "")))
    if state.get("entry_price"):
        rows.append(("entry", f"{num(state['entry_price'])}  qty {num(state.get('entry_qty'))}, "
                              f"open {num(state.get('open_qty'))}"))
    if exit_state.get("stop"):
        kind = exit_state.get("stop_kind") or ""
        rows.append(("stop", f"[red]{num(exit_state['stop'])}[/] [dim]{escape(kind)}[/]"))
    elif levels.get("stop_loss"):
        rows.append(("stop (planned)", f"[red]{num(levels['stop_loss'])}[/]"))
    tps = levels.get("take_profits") or []
    if tps:
        done = exit_state.get("tps_done", 0)
        rows.append(("take-profits", ", ".join(
            f"TP{tp.get('index', i + 1)} {num(tp.get('price'))} ({float(tp.get('fraction', 0)) * 100:.0f}%)"
            + (" [green]done[/]" if i < done else "") for i, tp in enumerate(tps))))
    if levels.get("trailing_callback_pct"):
        rows.append(("trailing", f"{float(levels['trailing_callback_pct']) * 100:.2f}% callback"))
    if state.get("last_price"):
        rows.append(("last price", f"{num(state['last_price'])} [dim]{when(state.get('last_price_ms'))}[/]"))
    if state.get("liquidation_price"):
        rows.append(("liquidation", num(state["liquidation_price"])))
    unrealized = _unrealized(state, side)
    if unrealized is not None:
        rows.append(("unrealized", f"{money(unrealized)} USDT [dim](at the last price)[/]"))
    pnl = state.get("pnl")
    if pnl:
        rows.append(("realized PnL", f"{money(pnl.get('net_pnl'))} USDT [dim](gross {num(pnl.get('gross_pnl'))}, "
                                     f"fees {num(pnl.get('fees'))}, funding {num(pnl.get('funding'))}"
                                     + (f", R {ratio(pnl.get('r_multiple'))}" if pnl.get("r_multiple") else "")
                                     + ")[/]"))
    kill = state.get("kill")
    if kill:
        rows.append(("kill score", f"{kill.get('score', 0):.3f} / {kill.get('threshold', 0):.2f}"))
    if state.get("opened_at_ms"):
        rows.append(("opened", when(state["opened_at_ms"])))
    if state.get("closed_at_ms"):
        rows.append(("closed", when(state["closed_at_ms"])))
    if state.get("exit_reason"):
        rows.append(("exit reason", escape(state["exit_reason"])))
    if state.get("reason"):
        rows.append(("reason", escape(state["reason"])))
    rows.append(("Web UI", link(detail.get("web_ui_url"))))
    parts.append(Panel(grid(rows), title=head, title_align="left", expand=False))

    if result:
        parts.append(Panel(result_grid(result), title="result", title_align="left", expand=False))
    if state.get("gates"):
        parts.append(gates_table(state["gates"]))
    orders = state.get("orders") or []
    if orders:
        table = Table(title="orders", title_justify="left")
        for column in ("step", "client id", "type", "side", "qty", "trigger", "filled", "avg price", "time (UTC)"):
            table.add_column(column, justify="right" if column in ("qty", "trigger", "filled", "avg price") else "left")
        for o in orders:
            table.add_row(escape(o.get("step", "")), escape(o.get("client_order_id", "")), escape(o.get("type", "")),
                          side_text(o.get("side")), num(o.get("quantity")), num(o.get("trigger_price")),
                          num(o.get("filled")), num(o.get("average_price")), when(o.get("time_ms")))
        parts.append(table)
    notes = state.get("notes") or []
    if notes:
        parts.append(Panel("\n".join(escape(n) for n in notes), title="notes", title_align="left", expand=False))
    if detail.get("note"):
        parts.append(f"[yellow]{escape(detail['note'])}[/]")
    return Group(*parts)


def _unrealized(state: dict, side: str | None) -> Decimal | None:
    entry, last, qty = dec(state.get("entry_price")), dec(state.get("last_price")), dec(state.get("open_qty"))
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
            ("intent", f"{escape(str(intent.get('symbol')))} {side_text(intent.get('side'))} "
                       f"{num(intent.get('position_size_usd'))} USD at {intent.get('leverage')}x"),
            ("entry", num(intent.get("entry_price"))),
            ("stop / tp", f"{num(intent.get('stop_loss')) or '(adaptive)'} / {num(intent.get('take_profit')) or '(adaptive)'}"),
            ("confidence", f"{intent.get('confidence')}"),
            ("intent id", escape(str(intent.get("intent_id") or key))),
            ("Web UI", link(accepted.get("web_ui_url"))),
        ]
        if wait:
            rows.insert(0, ("status", status_text(accepted.get("status"))))
        out.print(Panel(grid(rows), title=head, title_align="left", expand=False))
        if not wait:
            return 0
        if accepted.get("gates"):
            out.print(gates_table(accepted["gates"]))
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

    run_with_api(action)


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
        out.print(Panel(result_grid(result), title=f"[bold]{escape(workflow_id)}[/] {what}", title_align="left",
                        expand=False))

    run_with_api(action)


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
        out.print(Panel(grid([
            ("stop", f"[red]{num(result.get('stop_loss'))}[/]"),
            ("take-profits", ", ".join(num(p) for p in result.get("take_profits") or []) or "[dim]none pending[/]"),
            ("note", escape(str(result.get("note") or ""))),
        ]), title=f"[bold]{escape(workflow_id)}[/] adjusted", title_align="left", expand=False))

    run_with_api(action)


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
                          Panel(result_grid(detail["result"]), title=f"[bold]{escape(workflow_id)}[/] ended",
                                title_align="left", expand=False))
                return 0
            if time.monotonic() > deadline:
                status = (detail.get("state") or {}).get("status")
                raise ApiError(f"{workflow_id} still running ({status or '?'}) after {timeout:g} s: "
                               f"follow it with `qt trade {workflow_id}`")
            time.sleep(0.5)

    run_with_api(action)


def pause_cmd(workflow_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Stop managing a trade (take-profits, trailing, kill score, time limit); its exchange stop
    stays resting (POST /api/v1/trades/ID/pause)."""
    run_with_api(lambda api, out: _accepted(out, api.call("POST", f"{API}/trades/{workflow_id}/pause")))


def resume_cmd(workflow_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Resume managing a paused trade (POST /api/v1/trades/ID/resume)."""
    run_with_api(lambda api, out: _accepted(out, api.call("POST", f"{API}/trades/{workflow_id}/resume")))


def terminate_cmd(
    workflow_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option(..., "--reason", "-r", help="why (kept in the workflow's history)"),
) -> None:
    """Terminate a trade's workflow (POST /api/v1/trades/ID/terminate): hard, nothing is flattened
    and its orders stay on the exchange. To end a trade flat, use `qt kill` or `qt close`."""
    run_with_api(lambda api, out: _accepted(out, api.call("POST", f"{API}/trades/{workflow_id}/terminate",
                                                          json_body={"reason": reason})))


def _accepted(out: Console, accepted: dict) -> None:
    out.print(f"[bold]{escape(accepted.get('action', ''))}[/] {escape(accepted.get('workflow_id', ''))}: "
              f"{escape(accepted.get('detail', ''))}")
