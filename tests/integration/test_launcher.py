"""`qt up` / `qt status` / `qt down` as a user runs them: real processes, real ports.

Everything runs in a temp data dir on free ports, so the test never meets a developer's own
stack. Asserted: every part answers, search attributes are registered with the right types,
Redis writes its AOF under the data dir, a second `qt up` reuses the same processes, a port held
by a foreign process is reported and the foreign process survives, `qt down` stops only ours.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qt.settings import SEARCH_ATTRIBUTES, StackSettings
from qt.temporal_setup import connect, registered_search_attributes
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.integration

QT = [sys.executable, "-m", "qt.cli"]


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(
        QT_DATA_DIR=str(tmp_path / ".data"),
        QT_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        QT_TEMPORAL_UI_PORT=str(free_port()),
        QT_REDIS_PORT=str(free_port()),
        QT_PAPER_PORT=str(free_port()),
        COLUMNS="200",
    )
    yield env
    subprocess.run([*QT, "down"], env=env, cwd=tmp_path, capture_output=True, timeout=60)


def qt(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*QT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def records(data_dir: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in (data_dir / "run").glob("*.json")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def test_up_status_reuse_and_down(stack_env, tmp_path):
    data_dir = Path(stack_env["QT_DATA_DIR"])
    first = qt(stack_env, "up", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    pids = records(data_dir)
    assert set(pids) == {"redis", "temporal", "paper-exchange"}
    assert all(alive(pid) for pid in pids.values())

    # Every part answers where the settings say.
    async with httpx.AsyncClient(timeout=5) as client:
        ui = await client.get(f"http://127.0.0.1:{stack_env['QT_TEMPORAL_UI_PORT']}/")
        assert ui.status_code == 200
        ping = await client.get(f"http://127.0.0.1:{stack_env['QT_PAPER_PORT']}/fapi/v1/ping")
        assert ping.status_code == 200
    settings = StackSettings(temporal_address=stack_env["QT_TEMPORAL_ADDRESS"])
    registered = await registered_search_attributes(await connect(settings))
    assert {k: registered.get(k) for k in SEARCH_ATTRIBUTES} == SEARCH_ATTRIBUTES
    # State lives under the data dir: Temporal's SQLite file, Redis' AOF, logs.
    assert (data_dir / "temporal" / "temporal.sqlite").exists()
    assert list((data_dir / "redis").glob("appendonly*")), "redis runs without AOF"
    assert (data_dir / "logs" / "paper-exchange.log").exists()

    status = qt(stack_env, "status", cwd=tmp_path)
    assert status.returncode == 0
    assert status.stdout.count("running") == 3, status.stdout

    # Idempotent: a second `qt up` reuses the very same processes.
    second = qt(stack_env, "up", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reused" in second.stdout
    assert records(data_dir) == pids

    down = qt(stack_env, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids.values())
    assert records(data_dir) == {}
    assert "stopped" in qt(stack_env, "status", cwd=tmp_path).stdout


def test_foreign_process_on_a_port_is_reported_and_left_alone(stack_env, tmp_path):
    # Something qt did not start holds the Redis port.
    squatter = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         f"s.bind(('127.0.0.1',{stack_env['QT_REDIS_PORT']}));s.listen();time.sleep(120)"],
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", int(stack_env["QT_REDIS_PORT"]))) == 0:
                    break
            time.sleep(0.05)
        result = qt(stack_env, "up", cwd=tmp_path)
        assert result.returncode == 1
        assert "did not" in result.stdout and "start" in result.stdout, result.stdout
        assert squatter.poll() is None

        # A stale record naming the foreign pid (pid reuse) must not make `qt down` kill it.
        run_dir = Path(stack_env["QT_DATA_DIR"]) / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "redis.json").write_text(json.dumps({"pid": squatter.pid, "start_ticks": 1}))
        qt(stack_env, "down", cwd=tmp_path)
        time.sleep(0.3)
        assert squatter.poll() is None, "qt down signalled a process it did not start"
    finally:
        squatter.send_signal(signal.SIGKILL)
        squatter.wait()
