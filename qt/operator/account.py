"""`qt portfolio` (what the exchange holds, beside the trades that own it) and `qt performance`
(what the closed trades made)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from qt.operator.client import API, ApiClient, run_with_api
from qt.operator.render import grid, json_out, link, money, num, pct, ratio, side_text, status_text


def portfolio_cmd(as_json: bool = typer.Option(False, "--json", help="print the API's JSON")) -> None:
    """Open positions as the exchange reports them, beside the trades that own them; exposure,
    margin and unrealized PnL (GET /api/v1/portfolio). An orphan position (no open trade owns it)
    is shown in red."""

    def action(api: ApiClient, out: Console) -> None:
        view = api.call("GET", f"{API}/portfolio")
        if as_json:
            json_out(view)
            return
        out.print(render_portfolio(view))

    run_with_api(action)


def render_portfolio(view: dict) -> Group:
    account = grid([
        ("equity", money(view.get("equity"), signed=False) + " USDT" if view.get("equity") is not None else ""),
        ("wallet", money(view.get("wallet_balance"), signed=False) + " USDT"
         if view.get("wallet_balance") is not None else ""),
        ("free margin", money(view.get("free_margin"), signed=False) + " USDT"
         if view.get("free_margin") is not None else ""),
        ("exposure", money(view.get("total_exposure"), signed=False) + " USDT"),
        ("unrealized PnL", money(view.get("unrealized_pnl")) + " USDT"),
    ])
    parts: list[Any] = [Panel(account, title="[bold]account[/]", title_align="left", expand=False)]
    positions = view.get("positions") or []
    if positions:
        table = Table(title=f"positions on the exchange ({len(positions)})", title_justify="left")
        for column, justify in (("symbol", "left"), ("side", "left"), ("quantity", "right"), ("entry", "right"),
                                ("mark", "right"), ("notional", "right"), ("unrealized", "right"),
                                ("liquidation", "right"), ("owned by", "left")):
            table.add_column(column, justify=justify)
        for p in positions:
            owners = ", ".join(p.get("owners") or []) or "[bold red]nobody (orphan)[/]"
            table.add_row(escape(p["symbol"]), side_text({"LONG": "BUY", "SHORT": "SELL"}.get(p["side"], p["side"])),
                          num(p.get("quantity")), num(p.get("entry_price")), num(p.get("mark_price")),
                          money(p.get("notional"), signed=False), money(p.get("unrealized_pnl")),
                          num(p.get("liquidation_price")), owners)
        parts.append(table)
    else:
        parts.append("[green]no open position on the exchange[/]")
    trades = view.get("open_trades") or []
    if trades:
        table = Table(title=f"open trades ({len(trades)})", title_justify="left")
        for column in ("trade", "status", "symbol", "side", "lev"):
            table.add_column(column)
        for t in trades:
            lev = t.get("leverage")
            table.add_row(link(t.get("web_ui_url"), t["workflow_id"]), status_text(t.get("status")),
                          escape(t.get("symbol") or ""), side_text(t.get("side")), f"{lev:g}x" if lev else "")
        parts.append(table)
    return Group(*parts)

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
            json_out(report)
            return
        out.print(render_performance(report, days))

    run_with_api(action)


def render_performance(report: dict, days: int = 14) -> Group:
    totals, risk = report.get("totals") or {}, report.get("risk") or {}
    if not totals.get("trades"):
        return Group("[dim]no closed trades in this window[/]")
    window = f"{report.get('first_day')} .. {report.get('last_day')}"
    rows = [
        ("trades", f"{totals['trades']}  ([green]{totals.get('wins', 0)} won[/], [red]{totals.get('losses', 0)} lost[/],"
                   f" {totals.get('flat', 0)} flat)"),
        ("win rate", pct(totals.get("win_rate"))),
        ("net PnL", money(totals.get("net")) + " USDT"),
        ("gross / fees / funding", f"{money(totals.get('gross'))} / {money(totals.get('fees'), signed=False)} / "
                                   f"{money(totals.get('funding'))}"),
        ("profit factor", ratio(totals.get("profit_factor"))),
        ("expectancy", f"{money(totals.get('expectancy'))} USDT per trade"
                       + (f", {ratio(totals.get('expectancy_r'))} R (over {totals.get('r_trades')} with an R)"
                          if totals.get("expectancy_r") is not None else "")),
        ("equity", f"{money(report.get('starting_equity'), signed=False)} → "
                   f"{money(report.get('ending_equity'), signed=False)} USDT"),
        ("max drawdown", f"{money(risk.get('max_drawdown'), signed=False)} USDT ({pct(risk.get('max_drawdown_fraction'))})"),
        ("Sharpe / Sortino", f"{ratio(risk.get('sharpe'))} / {ratio(risk.get('sortino'))} "
                             f"[dim]({risk.get('days')} daily returns, {risk.get('periods_per_year')} per year)[/]"),
    ]
    parts: list[Any] = [Panel(grid(rows), title=f"[bold]performance[/] {window} (UTC)", title_align="left", expand=False)]
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
            table.add_row(str(d.get("day")), str(d.get("trades")), money(d.get("net")),
                          money(d.get("fees"), signed=False), money(d.get("equity_end"), signed=False),
                          pct(d.get("daily_return")))
        parts.append(table)
    return Group(*parts)


def _groups_table(title: str, groups: dict[str, dict]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (title.split()[-1], "trades", "won", "lost", "win rate", "net", "fees"):
        table.add_column(column, justify="left" if column == title.split()[-1] else "right")
    for name, g in groups.items():
        table.add_row(escape(name), str(g.get("trades")), str(g.get("wins")), str(g.get("losses")),
                      pct(g.get("win_rate")), money(g.get("net")), money(g.get("fees"), signed=False))
    return table
