"""The `qt` operator commands (qt/operator/) against the real API (tests/api/conftest.py's
`api` fixture: uvicorn over HTTP on the real stack, every worker running).

The commands run through typer's CliRunner in a thread (the API and the workers share this
test's event loop, so a blocking call on it would stall them), pointed at the fixture with
`QT_API_URL` / `QT_API_TOKEN`; one test runs the real entry point as a subprocess to check how
the commands find the API and its token. Every refusal is one `error:` line on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from qt.cli import app
from tests.api.conftest import TOKEN
from tests.api.test_api import flat
from local_stack.ports import free_port
from trading.models import TradeStatus
from workflows.trade_state import TradeResult

pytestmark = [pytest.mark.timeout(240), pytest.mark.integration]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line a refusal prints (and asserts it is one line, starting `error:`)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert self.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), self
        return lines[0]


async def qt(api, *args: str, **env: str | None) -> Ran:
    environment = {"QT_API_URL": api.base_url, "QT_API_TOKEN": TOKEN, "COLUMNS": "220", **env}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=environment)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def ok(ran: Ran) -> str:
    assert ran.code == 0, ran
    return ran.out


async def runs_of(temporal_client, workflow_id: str) -> int:
    return len([w async for w in temporal_client.list_workflows(f"WorkflowId = '{workflow_id}'")])


# ============================================================================ enter, list, show


async def test_enter_retried_with_one_id_is_one_trade_then_list_show_and_kill(api, rig, paper, temporal_client):
    paper.set_price("BTCUSDT", 63000)
    key = f"cli-{uuid.uuid4().hex[:10]}"
    workflow_id = f"trade-{key}"
    enter = ("enter", "BTCUSDT", "BUY", "--size", "100", "--leverage", "5", "--confidence", "0.8", "--id", key)

    first = ok(await qt(api, *enter, "--wait"))
    assert f"trade started: {workflow_id}" in first and re.search(r"status\s+OPEN", first), first
    assert "gates" in first and "pass" in first and "FAIL" not in first
    again = ok(await qt(api, *enter))
    assert f"already submitted: {workflow_id}" in again and "nothing new started" in again
    assert await runs_of(temporal_client, workflow_id) == 1

    conflict = (await qt(api, "enter", "BTCUSDT", "SELL", "--size", "100", "--leverage", "5", "--id", key)).error_line
    assert conflict.startswith("error: HTTP 409 conflict: intent_id conflict") and "side: BUY -> SELL" in conflict
    bad = await qt(api, "enter", "BTCUSDT", "HOLD", "--size", "100", "--leverage", "5", "--id", f"bad-{key}")
    assert bad.error_line.startswith("error: HTTP 422 invalid: side: must be BUY or SELL"), bad
    assert await runs_of(temporal_client, f"trade-bad-{key}") == 0

    await rig.wait_status(temporal_client.get_workflow_handle(workflow_id), "OPEN")
    listed = ok(await qt(api, "trades", "--status", "open", "--symbol", "btcusdt"))
    assert workflow_id in listed and "OPEN" in listed and "BTCUSDT" in listed and "5x" in listed
    as_json = json.loads(ok(await qt(api, "trades", "--status", "OPEN", "--json")))
    assert workflow_id in [t["workflow_id"] for t in as_json["trades"]]

    shown = ok(await qt(api, "trade", workflow_id))
    for text in (f"{workflow_id}  OPEN  stage MONITORING", "BTCUSDT BUY 5x", "stop", "take-profits", "unrealized",
                 "gates", "orders", "entry", f"/workflows/{workflow_id}/"):
        assert text in shown, (text, shown)
    assert json.loads(ok(await qt(api, "trade", workflow_id, "--json")))["state"]["stage"] == "MONITORING"
    missing = (await qt(api, "trade", "trade-does-not-exist")).error_line
    assert missing == "error: HTTP 404 not found: no trade trade-does-not-exist"

    killed = ok(await qt(api, "kill", workflow_id))
    assert "cancellation requested" in killed and "KILLED" in killed, killed
    assert flat(paper)
    assert "is COMPLETED: nothing to act on" in (await qt(api, "kill", workflow_id)).error_line


# ======================================================================== adjust, close, report


async def test_adjust_close_and_performance(api, rig, paper, temporal_client):
    paper.set_price("ETHUSDT", 3400)
    key = f"cli-{uuid.uuid4().hex[:10]}"
    workflow_id = f"trade-{key}"
    ok(await qt(api, "enter", "ETHUSDT", "BUY", "--size", "100", "--leverage", "5", "--id", key))
    handle = temporal_client.get_workflow_handle(workflow_id, result_type=TradeResult)
    await rig.wait_status(handle, "OPEN")

    assert (await qt(api, "adjust", workflow_id)).code == 2  # nothing to adjust: a usage error
    wrong_side = (await qt(api, "adjust", workflow_id, "--stop", "3500")).error_line
    assert wrong_side.startswith("error: HTTP 422 invalid:") and "stop" in wrong_side
    moved = ok(await qt(api, "adjust", workflow_id, "--stop", "3300", "--reason", "tighter"))
    assert "adjusted" in moved and "3300" in moved
    assert (await rig.state(handle)).exit.stop == 3300

    closed = ok(await qt(api, "close", workflow_id, "--reason", "cli test"))
    assert "CLOSED" in closed and "MANUAL" in closed and "realized PnL" in closed, closed
    again = (await qt(api, "close", workflow_id)).error_line
    assert again == f"error: HTTP 409 conflict: trade {workflow_id} is COMPLETED: nothing to act on"
    result = await rig.result(handle)  # the feedback stage has journaled it by now
    assert result.status is TradeStatus.CLOSED

    report = json.loads(ok(await qt(api, "performance", "--json", "--starting-equity", "10000")))
    assert report["totals"]["trades"] == 1 and list(report["by_symbol"]) == ["ETHUSDT"]
    shown = ok(await qt(api, "performance", "--starting-equity", "10000"))
    for text in ("performance", "trades", "1  (", "win rate", "net PnL", "profit factor", "max drawdown",
                 "Sharpe / Sortino", "by symbol", "ETHUSDT", "by exit reason", "MANUAL", "daily"):
        assert text in shown, (text, shown)
    bad = (await qt(api, "performance", "--since", "yesterday")).error_line
    assert bad.startswith("error: HTTP 422 invalid: since:"), bad


# ================================================================ pause, resume, portfolio, terminate


async def test_pause_resume_portfolio_and_terminate(api, rig, paper, temporal_client):
    paper.set_price("XRPUSDT", "2.0000")
    key = f"cli-{uuid.uuid4().hex[:10]}"
    workflow_id = f"trade-{key}"
    ok(await qt(api, "enter", "XRPUSDT", "BUY", "--size", "100", "--leverage", "5", "--id", key))
    handle = temporal_client.get_workflow_handle(workflow_id)
    await rig.wait_status(handle, "OPEN")

    assert "management paused" in ok(await qt(api, "pause", workflow_id))
    await rig.wait_for(handle, lambda s: s.paused)
    assert "management resumed" in ok(await qt(api, "resume", workflow_id))
    await rig.wait_for(handle, lambda s: not s.paused)

    held = ok(await qt(api, "portfolio"))
    assert re.search(rf"XRPUSDT\W+BUY\W+250\b.*{workflow_id}", held), held  # 100 USD x5 at 2.0 = 250 contracts
    assert "orphan" not in held and "open trades (1)" in held and "unrealized PnL" in held
    as_json = json.loads(ok(await qt(api, "portfolio", "--json")))
    assert [p["owners"] for p in as_json["positions"]] == [[workflow_id]]

    assert (await qt(api, "terminate", workflow_id)).code == 2  # --reason is required: a usage error
    gone = ok(await qt(api, "terminate", workflow_id, "--reason", "cli drill"))
    assert "terminated (cli drill)" in gone and "the exchange was not touched" in gone
    assert (await handle.describe()).status.name == "TERMINATED"
    orphaned = ok(await qt(api, "portfolio"))  # nothing was flattened: the position has no owner now
    assert "nobody (orphan)" in orphaned and "XRPUSDT" in orphaned, orphaned
    assert "is TERMINATED: nothing to act on" in (await qt(api, "pause", workflow_id)).error_line
    assert (await qt(api, "resume", "trade-does-not-exist")).error_line == \
        "error: HTTP 404 not found: no trade trade-does-not-exist"


# ====================================================================================== safety


async def test_kill_switch_on_kills_both_open_trades_then_safe_mode(api, rig, paper, temporal_client):
    ids = []
    for symbol, price in (("BTCUSDT", 63000), ("XRPUSDT", "2.0000")):
        paper.set_price(symbol, price)
        out = ok(await qt(api, "enter", symbol, "BUY", "--size", "100", "--leverage", "5"))
        intent_id = re.search(r"intent id (cli-[0-9a-f]+) \(retry safely with --id \1\)", out).group(1)
        ids.append(f"trade-{intent_id}")
    for workflow_id in ids:
        await rig.wait_status(temporal_client.get_workflow_handle(workflow_id), "OPEN")

    report = ok(await qt(api, "kill-switch", "on", "--reason", "exchange incident", "--by", "bob"))
    assert "kill switch ON" in report and "killed (2)" in report, report
    for workflow_id in ids:
        assert re.search(rf"{workflow_id}\W+KILLED", report), report
    assert "account flat" in report and "safe mode ON" in report and "by bob: exchange incident" in report
    assert flat(paper)
    for workflow_id in ids:
        result = await rig.result(temporal_client.get_workflow_handle(workflow_id, result_type=TradeResult))
        assert result.status is TradeStatus.KILLED

    paper.set_price("BTCUSDT", 63000)
    refused = await qt(api, "enter", "BTCUSDT", "BUY", "--size", "100", "--leverage", "5", "--wait")
    assert refused.error_line.startswith("error: REJECTED: safe_mode: safe mode is on (exchange incident")
    assert "FAIL" in refused.out  # the verdicts are printed

    off = ok(await qt(api, "kill-switch", "off"))
    assert "kill switch off" in off and "safe mode ON" in off and "qt safe-mode off" in off
    assert "safe mode ON" in ok(await qt(api, "safe-mode", "status"))
    assert "safe mode off" in ok(await qt(api, "safe-mode", "off"))
    on = ok(await qt(api, "safe-mode", "on", "--reason", "CPI release", "--ttl", "600", "--by", "alice"))
    assert "safe mode ON" in on and "by alice: CPI release" in on and "expires in" in on, on
    too_short = (await qt(api, "safe-mode", "on", "--reason", "x", "--ttl", "0")).error_line
    assert too_short.startswith("error: HTTP 422 invalid: ttl_s:"), too_short
    assert "safe mode off" in ok(await qt(api, "safe-mode", "off"))
    assert "safe mode off" in ok(await qt(api, "safe-mode", "status"))


# ============================================================================ address and token


async def run_qt(*args: str, **env: str) -> Ran:
    """The real entry point (`python -m qt.cli`), without the test's QT_API_* variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("QT_API_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qt.cli", *args, env={**environment, "COLUMNS": "220", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Ran(proc.returncode, out.decode(), err.decode())


async def test_the_commands_find_the_api_and_its_token_and_say_when_they_cannot(api, tmp_path):
    data_dir = tmp_path / "operator"
    data_dir.mkdir()
    port = api.base_url.rsplit(":", 1)[1]
    where = {"QT_DATA_DIR": str(data_dir), "QT_API_HOST": "127.0.0.1", "QT_API_PORT": port}

    no_token = (await run_qt("safe-mode", "status", **where)).error_line
    assert no_token.startswith("error: HTTP 401 unauthorized: a bearer token is required (no token: set QT_API_TOKEN")
    (data_dir / "api_token").write_text("not-the-token\n")
    wrong = (await run_qt("safe-mode", "status", **where)).error_line
    assert wrong == f"error: HTTP 403 forbidden: the token is not valid (token from {data_dir / 'api_token'})"
    (data_dir / "api_token").write_text(TOKEN + "\n")  # the file the API writes (api/security.py)
    assert "safe mode off" in ok(await run_qt("safe-mode", "status", **where))
    assert "safe mode off" in ok(await run_qt("safe-mode", "status", QT_API_URL=api.base_url, QT_API_TOKEN=TOKEN,
                                              QT_DATA_DIR=str(tmp_path / "none")))

    nobody = f"http://127.0.0.1:{free_port()}"
    down = (await run_qt("trades", QT_API_URL=nobody, QT_API_TOKEN=TOKEN)).error_line
    assert down == f"error: API not reachable at {nobody} (is `qt up` running?)"
