"""Rich formatting shared by the operator commands: numbers, money, statuses, times, grids."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

_STATUS_COLOURS = {
    "PENDING": "yellow", "OPENING": "yellow", "OPEN": "green", "CLOSING": "yellow", "CLOSED": "blue",
    "REJECTED": "magenta", "KILLED": "red", "FAILED": "bold red",
    "RUNNING": "green", "COMPLETED": "blue", "TERMINATED": "red", "CANCELED": "red", "TIMED_OUT": "red",
    "CONTINUED_AS_NEW": "cyan",
}


def dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def num(value: Any) -> str:
    number = dec(value)
    if number is None:
        return "" if value is None else str(value)
    text = format(number.normalize(), "f")
    return text


def money(value: Any, signed: bool = True) -> str:
    number = dec(value)
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


def ratio(value: Any, digits: int = 2) -> str:
    return "[dim]–[/]" if value is None else f"{float(value):.{digits}f}"


def pct(value: Any) -> str:
    return "[dim]–[/]" if value is None else f"{float(value) * 100:.2f}%"


def status_text(value: Any) -> str:
    if not value:
        return "[dim]?[/]"
    text = str(value)
    return f"[{_STATUS_COLOURS.get(text, 'white')}]{escape(text)}[/]"


def side_text(value: Any) -> str:
    text = str(value or "")
    return {"BUY": "[green]BUY[/]", "SELL": "[red]SELL[/]"}.get(text, escape(text))


def when(value: Any) -> str:
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


def link(url: str | None, text: str | None = None) -> str:
    if not url:
        return ""
    return f"[link={url}]{escape(text or url)}[/link]"


def duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    from trading.pnl import format_duration

    return format_duration(float(seconds))


def grid(rows: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        if value not in (None, ""):
            grid.add_row(key, value)
    return grid


def gates_table(gates: list[dict]) -> Table:
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


def result_grid(result: dict) -> Table:
    return grid([
        ("status", status_text(result.get("status"))),
        ("exit reason", escape(str(result.get("exit_reason") or ""))),
        ("realized PnL", money(result.get("realized_pnl")) + " USDT"),
        ("symbol", f"{escape(str(result.get('symbol') or ''))} {side_text(result.get('side'))}".strip()),
        ("quantity", num(result.get("quantity"))),
        ("entry → exit", f"{num(result.get('entry_price'))} → {num(result.get('exit_price'))}"
         if result.get("entry_price") else ""),
        ("fees / funding", f"{money(result.get('fees'), signed=False)} / {money(result.get('funding'))}"
         if result.get("fees") is not None else ""),
        ("R", ratio(result.get("r_multiple")) if result.get("r_multiple") is not None else ""),
        ("held", duration(result.get("holding_s"))),
        ("reason", escape(str(result.get("reason") or ""))),
    ])


def json_out(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2))


def operator_name() -> str:
    try:
        return f"{getpass.getuser()}@cli"[:128]
    except Exception:  # noqa: BLE001 - no user name (a container without passwd entry)
        return "cli"
