"""`qt demo` end to end, as a user runs it: a fresh stack in a temp data dir on free ports, the
replayed market at 300x, in-process workers, real TradeWorkflows.

Asserted: exit code 0, every trade an intent of the signal engine (model or fallback rule) that
went through quantum:stream:trade.intent and the intake, the exit reasons seen listed, the trades' PnL equal to the paper account's walletBalance change to the
cent (checked again here against the exchange, independently of the demo's own check), nothing
left open on the exchange, the replay speed restored, the Temporal UI URL printed.
"""

from __future__ import annotations

import io
import os
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from paper_exchange.config import PaperSettings
from qt.demo import DemoOptions, demo_main
from qt.launcher import Stack
from common.settings import StackSettings
from local_stack.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def demo_env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """Only this test's QT_* settings: its own data dir and ports (the paper exchange child
    process reads them from the environment too)."""
    for name in list(os.environ):
        if name.startswith("QT_"):
            monkeypatch.delenv(name)
    env = dict(
        QT_DATA_DIR=str(tmp_path / ".data"),
        QT_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        QT_TEMPORAL_UI_PORT=str(free_port()),
        QT_REDIS_PORT=str(free_port()),
        QT_PAPER_PORT=str(free_port()),
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    Stack(StackSettings(), PaperSettings()).down()


async def test_demo_trades_the_signal_engines_intents_and_pnl_matches_the_account(demo_env):
    out = io.StringIO()
    console = Console(file=out, width=220, force_terminal=False, color_system=None)
    summary = await demo_main(DemoOptions(timeout_s=90), console=console)
    text = out.getvalue()
    print(text)  # shown by pytest when the test fails

    assert summary.exit_code == 0, text
    assert summary.missing == [], text
    assert "qt demo: OK" in text

    # Every trade came from the signal engine through the stream and the intake, but one: the
    # operator's manual intent through the API.
    assert summary.closed, text
    manual = [t for t in summary.trades if t.plan.fields.get("source") == "api"]
    assert len(manual) == 1 and manual[0].workflow_id.startswith("trade-demo-"), text
    engine = [t for t in summary.trades if t not in manual]
    models = {t.plan.fields.get("model") for t in engine}
    assert models <= {"lgbm-signal-v1", "fallback-trend-following"}, models
    assert all(t.plan.fields.get("source") == "signal-engine" for t in engine)
    assert all(t.workflow_id.startswith("trade-sig-") for t in engine)
    # The operator acted through the API (close and kill).
    assert "POST /api/v1/intents" in text and "/close" in text and "/kill" in text, text
    assert "Portfolio page:" in text
    # The operator's actions and the exits the market gave: each reason seen is in the table.
    reasons_line = next(line for line in text.splitlines() if line.startswith("Exit reasons seen:"))
    table_rows = [line for line in text.splitlines() if "trade-" in line and "│" in line]
    for reason, count in summary.reasons.items():
        assert f"{reason}×{count}" in reasons_line, (reason, reasons_line)
        assert any(f" {reason} " in row for row in table_rows), reason
    assert "win rate:" in text

    # PnL: the demo's own check, then again against the exchange (fresh account: 10,000 USDT).
    assert summary.pnl_matches and "equal to the cent" in text
    paper = PaperSettings()
    async with httpx.AsyncClient(base_url=paper.base_url, timeout=10) as http:
        state = (await http.get("/_paper/state")).json()
    wallet = Decimal(state["balance"]["walletBalance"])
    assert summary.balance_before == Decimal(str(paper.initial_balance))
    assert abs(wallet - summary.balance_before - summary.pnl_sum) < Decimal("0.005")
    assert state["positions"] == [] and state["open_algo_orders"] == [] and state["open_orders"] == []
    # The replay is back at its own speed (the demo only speeds it up while it runs).
    assert state["clock"]["speed"] == paper.speed

    assert StackSettings().temporal_ui_url in text
