"""`qt`: one command for every process of the system.

    qt up | down | status     the local stack (Temporal dev server, Redis, paper exchange,
                              workers, intake, API) and who polls each task queue
    qt demo                   the main job: stack, replayed market, trades, summary
    qt paper-exchange         the paper exchange alone (what `qt up` starts)
    qt worker --queue NAME    a Temporal worker for one task queue (or `all`)
    qt ingest                 Redis Streams -> TradeWorkflow starts; market feed; signal engine
    qt train-model            train the signal engine's LightGBM model on the shipped candles
    qt api                    the HTTP API
    qt notify                 trade and safety events -> QT_NOTIFY_URLS (apprise)
"""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from qt.console import output_console
from common.task_queues import ALL, QUEUES

app = typer.Typer(
    help="Quantum Trader on Temporal: one durable workflow per trade.",
    no_args_is_help=True,
    add_completion=False,
)
console = output_console()


def _status_table(statuses) -> Table:
    table = Table(title="Quantum Trader local stack")
    table.add_column("part")
    table.add_column("state")
    table.add_column("pid", justify="right")
    table.add_column("address")
    table.add_column("log")
    for s in statuses:
        address = s.url + "".join(f"\n{k}: {v}" for k, v in s.extra_urls.items())
        color = {"running": "green", "started": "green", "reused": "green", "stopped": "yellow",
                 "unhealthy": "red", "failed": "red", "exited": "red", "external-down": "red"}.get(
                     s.state, "dim" if s.state.startswith("off") else "white")
        table.add_row(s.name, f"[{color}]{s.state}[/]", str(s.pid or ""), address, str(s.log or ""))
    return table


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code=1)


@app.command()
def up() -> None:
    """Start the local stack (reuses what already runs) and print its URLs: Temporal, Redis,
    the paper exchange, then the workers (QT_UP_WORKERS=all|per-queue|none), the API
    (QT_UP_API) and the intake with market feed and signal engine (QT_UP_INGEST)."""
    from api.security import load_or_create_token, token_path
    from qt.launcher import LauncherError, Stack
    from common.settings import StackSettings

    settings = StackSettings()
    load_or_create_token(settings)  # before `qt api` starts: it and the `qt` commands read it
    try:
        statuses = asyncio.run(Stack().up(apps=True))
    except LauncherError as exc:
        if exc.statuses:
            console.print(_status_table(exc.statuses))
        _fail(str(exc))
    console.print(_status_table(statuses))
    if settings.api_token is not None:
        console.print("API token: QT_API_TOKEN")
    else:
        console.print(f"API token: {token_path(settings)} (mode 0600; `qt` commands read it; "
                      f"open http://{settings.api_host}:{settings.api_port}/?token=... once for the page)")


@app.command()
def down() -> None:
    """Stop what `qt up` started (intake, API, workers, then Temporal, Redis, paper exchange).
    Never touches a process qt did not start."""
    from qt.launcher import Stack

    console.print(_status_table(Stack().down()))


async def _status_report():
    """Everything `qt status` prints, read in one event loop."""
    from qt.intake_view import fetch_intake_status
    from qt.launcher import Stack
    from qt.trade_counts import count_trades

    stack = Stack()
    statuses = await stack.status()
    queues: object
    trades = None
    try:
        queues = await asyncio.wait_for(stack.task_queues(), 10)
    except Exception as exc:  # noqa: BLE001 - down, refused, timed out: said, not raised
        queues = f"Temporal unreachable at {stack.settings.temporal_address}: {type(exc).__name__}: {exc}"
    else:
        try:
            trades = (await asyncio.wait_for(count_trades(await stack.temporal()), 10)).text()
        except Exception as exc:  # noqa: BLE001
            trades = f"[yellow]Temporal could not count them: {type(exc).__name__}: {exc}[/]"
    intake = await fetch_intake_status(stack.settings.effective_redis_url)
    return statuses, queues, trades, intake


@app.command()
def status() -> None:
    """Show what runs, where, and its log file; who polls each task queue (from Temporal); the
    intake's lag and counters, and the TradeWorkflows Temporal holds."""
    from qt.intake_view import intake_table
    from qt.pollers import queues_table

    statuses, queues, trades, intake = asyncio.run(_status_report())
    console.print(_status_table(statuses))
    if isinstance(queues, str):
        console.print(f"[red]task queues: {queues}[/]")
    else:
        console.print(queues_table(queues))
    if isinstance(intake, str):
        console.print(f"[yellow]intent intake: {intake}[/]")
    else:
        console.print(intake_table(intake, trades=trades))


@app.command()
def demo(
    speed: float = typer.Option(300.0, min=1.0, help="market replay speed while the demo runs (300: one 5-minute candle per second)"),
    symbols: str = typer.Option(
        "BTCUSDT,ETHUSDT,NEARUSDT,XRPUSDT,FHEUSDT,XLMUSDT,DASHUSDT", help="comma-separated; one open trade per symbol at a time"),
    timeout: float = typer.Option(240.0, min=5.0, help="wall seconds during which new trades are opened, until every exit reason appeared"),
    max_hold: float = typer.Option(45.0, "--max-hold", min=5.0, help="the policy's time limit, in market minutes (TIME_LIMIT exits)"),
    kill_threshold: float = typer.Option(0.66, min=0.01, help="kill score that closes a trade (production: 0.7; 0.66 = a regime flip alone)"),
    warmup: int = typer.Option(50, min=20, help="closed 5-minute candles to wait for before trading (the signal engine's window is 48)"),
    threshold: float = typer.Option(0.6, min=0.0, max=1.0, help="signal confidence that publishes an intent (production: 0.65)"),
    cooldown: float = typer.Option(15.0, min=0.0, help="market minutes between two intents of one symbol"),
) -> None:
    """The main job: stack, replayed market → market feed → signal engine → intents → intake →
    one TradeWorkflow per intent → closes, and a summary whose PnL is checked against the paper
    account. Exit code 0 when trades closed, nothing failed and the PnL matches to the cent."""
    from qt.demo import DemoOptions, run_demo
    from qt.launcher import LauncherError

    opts = DemoOptions(speed=speed, symbols=[s.strip() for s in symbols.split(",") if s.strip()],
                       timeout_s=timeout, max_hold_min=max_hold, kill_threshold=kill_threshold,
                       warmup_candles=warmup, confidence_threshold=threshold, cooldown_min=cooldown)
    try:
        code = asyncio.run(run_demo(opts, console))
    except (LauncherError, ValueError) as exc:
        _fail(str(exc))
    raise typer.Exit(code=code)


@app.command("train-model")
def train_model(
    out: str = typer.Option("", help="directory for model.txt + model.json (a running engine reloads them); "
                                     "default: the shipped model's, models/signal_lgbm in the project"),
    version: str = typer.Option("v1", help="the model's version label"),
) -> None:
    """Train the signal engine's LightGBM model on the shipped candles (time-ordered split) and
    print its validation metrics beside the baselines."""
    from pathlib import Path

    from signals_ingest.train_model import DEFAULT_OUT_DIR, train_and_save

    # Not relative to the working directory: the engine reads the project's models/ wherever it runs.
    console.print(train_and_save(Path(out) if out else DEFAULT_OUT_DIR, version=version).text())


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
def ingest(
    only: str = typer.Option("intake,feed,signals", help="comma-separated parts to run: intake (trade.intent -> "
                             "TradeWorkflows), feed (exchange -> market.tick/market.klines), signals (klines -> ai.signal_generated "
                             "-> trade.intent)"),
) -> None:
    """Consume quantum:stream:trade.intent (one TradeWorkflow per intent), feed market data, run the signal engine."""
    from signals_ingest.main import run_ingest

    parts = tuple(p.strip() for p in only.split(",") if p.strip())
    raise typer.Exit(code=asyncio.run(run_ingest(parts)))


@app.command()
def notify() -> None:
    """Send trade and safety events to QT_NOTIFY_URLS (apprise URLs), each once per target."""
    from notifications.main import run_notifier

    raise typer.Exit(code=asyncio.run(run_notifier()))


@app.command()
def api() -> None:
    """Serve the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from api.app import create_app
    from common.settings import StackSettings

    settings = StackSettings()
    uvicorn.run(create_app(), host=settings.api_host, port=settings.api_port, log_level="info")


# Operator commands (trades, trade, enter, close, adjust, pause, resume, kill, terminate,
# kill-switch, safe-mode, portfolio, performance): thin clients of the HTTP API, in qt/operator/.
from qt.operator import register as _register_operator_commands  # noqa: E402

_register_operator_commands(app)


if __name__ == "__main__":
    app()
