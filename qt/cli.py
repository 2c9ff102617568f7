"""`qt`: one command for every process of the system.

    qt up | down | status     the local stack (Temporal dev server, Redis, paper exchange)
    qt demo                   the main job: stack, replayed market, trades, summary
    qt paper-exchange         the paper exchange alone (what `qt up` starts)
    qt worker --queue NAME    a Temporal worker for one task queue (or `all`)
    qt ingest                 Redis Streams -> TradeWorkflow starts
    qt api                    the HTTP API
"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from workers.queues import ALL, QUEUES

app = typer.Typer(
    help="Quantum Trader on Temporal: one durable workflow per trade.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _status_table(statuses) -> Table:
    table = Table(title="Quantum Trader local stack")
    table.add_column("part")
    table.add_column("state")
    table.add_column("pid", justify="right")
    table.add_column("address")
    table.add_column("log")
    for s in statuses:
        address = s.url + "".join(f"\n{k}: {v}" for k, v in s.extra_urls.items())
        color = {"running": "green", "started": "green", "reused": "green", "stopped": "yellow"}.get(s.state, "white")
        table.add_row(s.name, f"[{color}]{s.state}[/]", str(s.pid or ""), address, str(s.log or ""))
    return table


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code=1)


@app.command()
def up() -> None:
    """Start the local stack (reuses what already runs) and print its URLs."""
    from qt.launcher import LauncherError, Stack

    try:
        statuses = asyncio.run(Stack().up())
    except LauncherError as exc:
        _fail(str(exc))
    console.print(_status_table(statuses))


@app.command()
def down() -> None:
    """Stop what `qt up` started. Never touches a process qt did not start."""
    from qt.launcher import Stack

    console.print(_status_table(Stack().down()))


@app.command()
def status() -> None:
    """Show what runs, where, and its log file."""
    from qt.launcher import Stack

    console.print(_status_table(asyncio.run(Stack().status())))


@app.command()
def demo(
    speed: float = typer.Option(300.0, min=1.0, help="market replay speed while the demo runs"),
    symbols: str = typer.Option("BTCUSDT,ETHUSDT,NEARUSDT,XRPUSDT", help="comma-separated"),
    timeout: float = typer.Option(120.0, min=5.0, help="wall seconds to wait for exits"),
) -> None:
    """The main job: start the stack, trade on the replayed market, print a summary."""
    from qt.demo import run_demo
    from qt.launcher import LauncherError

    try:
        code = asyncio.run(run_demo(speed=speed, symbols=[s.strip() for s in symbols.split(",") if s.strip()], timeout_s=timeout))
    except LauncherError as exc:
        _fail(str(exc))
    raise typer.Exit(code=code)


@app.command("paper-exchange")
def paper_exchange() -> None:
    """Serve the paper exchange (Binance USD-M futures over HTTP) in the foreground."""
    from paper_exchange.app import serve
    from paper_exchange.config import PaperSettings

    serve(PaperSettings())


@app.command()
def worker(
    queue: str = typer.Option(..., "--queue", "-q", help=f"one of: {', '.join(QUEUES)}, or '{ALL}'"),
) -> None:
    """Run a Temporal worker for one task queue."""
    if queue not in (*QUEUES, ALL):
        raise typer.BadParameter(f"unknown queue {queue!r}; choose one of {', '.join((*QUEUES, ALL))}", param_hint="--queue")
    from workers.main import run_worker

    raise typer.Exit(code=asyncio.run(run_worker(queue)))


@app.command()
def ingest() -> None:
    """Consume quantum:stream:trade.intent and start one TradeWorkflow per intent."""
    from signals_ingest.main import run_ingest

    raise typer.Exit(code=asyncio.run(run_ingest()))


@app.command()
def api() -> None:
    """Serve the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from api.app import create_app
    from qt.settings import StackSettings

    settings = StackSettings()
    uvicorn.run(create_app(), host=settings.api_host, port=settings.api_port, log_level="info")


if __name__ == "__main__":
    app()
