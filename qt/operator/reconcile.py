"""`qt reconcile [--last]`: run reconciliation now (or show the last run) and print its report."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qt.operator.client import API, TIMEOUT_S, ApiClient, run_with_api
from qt.operator.render import when


def print_report(report: dict, out: Console) -> int:
    """The report as a table; 1 when the run was incomplete or an action failed."""
    state = "[green]complete[/]" if report.get("complete") else "[bold red]INCOMPLETE: nothing changed[/]"
    out.print(f"reconcile run {escape(report['run_id'])} at {when(report.get('finished_ms') or report['started_ms'])} "
              f"UTC: {state}; {report.get('positions', 0)} position(s), {report.get('open_orders', 0)} open "
              f"order(s), {report.get('running_trades', 0)} running trade(s); orphans: {report.get('orphans')}")
    for problem in report.get("problems") or []:
        out.print(f"[red]problem:[/] {escape(problem)}")
    findings = report.get("findings") or []
    outcomes = {(o["kind"], o["symbol"], o.get("workflow_id"), o.get("client_order_id")): o
                for o in report.get("outcomes") or []}
    if findings:
        table = Table(title=f"findings ({len(findings)})", title_justify="left")
        for column in ("kind", "symbol", "action", "done", "detail"):
            table.add_column(column)
        for f in findings:
            outcome = outcomes.get((f["kind"], f["symbol"], f.get("workflow_id"), f.get("client_order_id")))
            done = "" if outcome is None else ("[green]yes[/]" if outcome["done"] else "[red]no[/]")
            detail = f["detail"] + (f" → {outcome['detail']}" if outcome else "")
            table.add_row(f["kind"], f["symbol"], f["action"], done, escape(detail))
        out.print(table)
    elif report.get("complete"):
        out.print("[green]the exchange, the open trades and Redis agree: nothing to fix[/]")
    unconfirmed = report.get("unconfirmed") or []
    if unconfirmed:
        out.print(f"[dim]seen once, not again {len(unconfirmed)} time(s): left alone "
                  f"({escape(', '.join(sorted({u['kind'] for u in unconfirmed})))})[/]")
    unchecked = report.get("unchecked_trades") or []
    if unchecked:
        out.print(f"[yellow]not checked (state query did not answer)[/]: {escape(', '.join(unchecked))}")
    failed = [o for o in report.get("outcomes") or [] if not o["done"]]
    return 1 if failed or not report.get("complete") else 0


def reconcile_cmd(
    last: bool = typer.Option(False, "--last", help="show the last run's report instead of running one"),
    wait: float = typer.Option(120.0, "--wait", min=1, max=600, help="seconds to wait for the run"),
) -> None:
    """Compare the exchange with the open trades and Redis now, fix what disagrees, print the report
    (exit 1 if a book did not answer or an action failed)."""

    def action(api: ApiClient, out: Console) -> int:
        if last:
            report = api.call("GET", f"{API}/reconcile")
        else:
            report = api.call("POST", f"{API}/reconcile", params={"wait_s": wait}, timeout=wait + TIMEOUT_S)
        return print_report(report, out)

    run_with_api(action)
