"""`qt` operator commands: thin clients of the HTTP API (`qt api`), answers as rich tables.

    qt trades [--status --symbol --side --limit]     trades, newest first
    qt trade ID                                      one trade: stage, levels, orders, PnL, gates, notes
    qt enter SYMBOL SIDE --size USD --leverage N     a manual intent (retry-safe: --id)
    qt close ID                                      close at market now
    qt adjust ID --stop P [--tp P ...]               move the stop / the pending take-profits
    qt pause ID | qt resume ID                       stop / resume managing (the exchange stop stays)
    qt kill ID                                       flatten, cancel the orders, end KILLED
    qt terminate ID --reason R                       hard stop of the workflow (nothing flattened)
    qt kill-switch on --reason R | off               safe mode on and every open trade killed
    qt safe-mode on --reason R [--ttl S] | off | status
    qt portfolio                                     positions on the exchange beside their trades
    qt performance                                   realized performance of the closed trades
    qt reconcile [--last]                            exchange vs open trades vs Redis, fixed; the report

Where: `QT_API_URL`, else `http://{QT_API_HOST}:{QT_API_PORT}`. Token: `QT_API_TOKEN`, else the
token file the API uses (`{QT_DATA_DIR}/api_token`, `api/security.py`); read, never created.
Every refusal (4xx/5xx) and an unreachable API print one line on stderr and exit 1; the line
carries the API's `detail` (the fields of a 422, the reason of a 409).
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from qt.operator.account import performance_cmd, portfolio_cmd
from qt.operator.reconcile import reconcile_cmd
from qt.operator.safety import kill_switch_app, safe_mode_app
from qt.operator.trades import (adjust_cmd, close_cmd, enter_cmd, kill_cmd, pause_cmd, resume_cmd, terminate_cmd,
                               trade_cmd, trades_cmd)

COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("trades", trades_cmd), ("trade", trade_cmd), ("enter", enter_cmd), ("close", close_cmd),
    ("adjust", adjust_cmd), ("pause", pause_cmd), ("resume", resume_cmd), ("kill", kill_cmd),
    ("terminate", terminate_cmd), ("portfolio", portfolio_cmd), ("performance", performance_cmd),
    ("reconcile", reconcile_cmd),
]


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `qt` app."""
    for name, command in COMMANDS:
        app.command(name)(command)
    app.add_typer(kill_switch_app, name="kill-switch")
    app.add_typer(safe_mode_app, name="safe-mode")
