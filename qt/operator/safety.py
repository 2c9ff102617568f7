"""`qt kill-switch on|off`, `qt safe-mode on|off|status`: the account's safety switches."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qt.operator.client import API, TIMEOUT_S, ApiClient, run_with_api
from qt.operator.render import duration, money, operator_name, status_text, when

kill_switch_app = typer.Typer(help="The kill switch: safe mode on and every open trade killed (flattened).",
                              no_args_is_help=True, add_completion=False)
safe_mode_app = typer.Typer(help="Safe mode: the gates refuse every new trade; open trades go on.",
                            no_args_is_help=True, add_completion=False)


def _safe_mode_line(view: dict) -> str:
    if not view.get("active"):
        return "safe mode [green]off[/]: new trades allowed"
    since = f" since {when(view['since_ms'])} UTC" if view.get("since_ms") else ""
    by = f" by {escape(str(view['set_by']))}" if view.get("set_by") else ""
    ttl = view.get("ttl_s")
    expiry = f", expires in {duration(ttl)}" if ttl is not None else ", no expiry"
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
                          json_body={"reason": reason, "set_by": by or operator_name(), "wait_s": wait},
                          timeout=wait + TIMEOUT_S)
        out.print("kill switch [bold red]ON[/]")
        killed = report.get("killed") or []
        if killed:
            table = Table(title=f"killed ({len(killed)})", title_justify="left")
            for column in ("trade", "status", "exit", "PnL", "reason"):
                table.add_column(column, justify="right" if column == "PnL" else "left")
            for k in killed:
                table.add_row(escape(k["workflow_id"]), status_text(k.get("status")), escape(str(k.get("exit_reason") or "")),
                              money(k.get("realized_pnl")), escape(str(k.get("reason") or "")))
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

    run_with_api(action)


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

    run_with_api(action)


@safe_mode_app.command("on")
def safe_mode_on(
    reason: str = typer.Option(..., "--reason", "-r"),
    ttl: int = typer.Option(900, "--ttl", help="seconds until it ends by itself (1..604800)"),
    by: str | None = typer.Option(None, "--by", help="who (default: USER@cli)"),
) -> None:
    """Safe mode ON: the gates refuse every new trade (open trades go on) until off or the TTL ends."""

    def action(api: ApiClient, out: Console) -> None:
        view = api.call("PUT", f"{API}/safe-mode", json_body={"reason": reason, "ttl_s": ttl,
                                                              "set_by": by or operator_name()})
        out.print(_safe_mode_line(view))

    run_with_api(action)


@safe_mode_app.command("off")
def safe_mode_off() -> None:
    """Safe mode OFF: new trades allowed again."""
    run_with_api(lambda api, out: out.print(_safe_mode_line(api.call("DELETE", f"{API}/safe-mode"))))


@safe_mode_app.command("status")
def safe_mode_status() -> None:
    """Is safe mode on, since when, why, set by whom, for how long."""
    run_with_api(lambda api, out: out.print(_safe_mode_line(api.call("GET", f"{API}/safe-mode"))))
