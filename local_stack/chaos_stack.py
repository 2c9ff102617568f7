"""The whole local stack under `qt up` in a directory of its own, with every part killable:
what the chaos tests (`tests/chaos/`) and the soak benchmark (`benchmarks/soak.py`) run on.

`qt up` starts the Temporal dev server on SQLite, redis-server with AOF, the paper exchange on
its data dir (market clock at speed 0: prices move only when set), `qt worker --queue all`,
`qt ingest` and `qt api`, each on a free port. `kill(part)` SIGKILLs one by its launcher record;
`up()` is what an operator runs after a crash: it starts what is dead and reuses what runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis
from temporalio.client import Client

from common.settings import StackSettings
from common.temporal import connect
from local_stack.paper_server import PaperServer, paper_exchange_client
from local_stack.ports import free_port
from paper_exchange.config import PaperSettings

QT = [sys.executable, "-m", "qt.cli"]
PARTS = ("worker", "ingest", "paper-exchange", "redis", "temporal")  # what chaos kills (`qt up` names)


class ChaosStack:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp, self.data_dir = tmp, tmp / ".data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
        self.env.update(
            QT_DATA_DIR=str(self.data_dir), QT_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
            QT_TEMPORAL_UI_PORT=str(free_port()), QT_REDIS_PORT=str(free_port()), QT_PAPER_PORT=str(free_port()),
            QT_API_PORT=str(free_port()), QT_INGEST_METRICS_PORT=str(free_port()), QT_PAPER_SPEED="0",
            QT_RISK_COOLDOWN_S="0", QT_TRADE_KILL_SCORE="false", QT_RECONCILE_INTERVAL_S="3600",
            QT_RECONCILE_CONFIRM_S="1", COLUMNS="250")
        self.env.update(env)
        self.paper = PaperServer(self.data_dir / "paper", port=int(self.env["QT_PAPER_PORT"]))
        self.client: Client | None = None

    def qt(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([*QT, *args], env=self.env, cwd=self.tmp, capture_output=True, text=True,
                              timeout=timeout)

    def qt_background(self, *args: str) -> subprocess.Popen:
        """A `qt` command left running (its output discarded), e.g. a close the test kills under."""
        return subprocess.Popen([*QT, *args], env=self.env, cwd=self.tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def up(self) -> None:
        ran = self.qt("up")
        assert ran.returncode == 0, ran.stdout + ran.stderr

    def pid(self, part: str) -> int:
        return json.loads((self.data_dir / "run" / f"{part}.json").read_text())["pid"]

    def kill(self, part: str) -> None:
        pid = self.pid(part)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return
            if state in ("Z", "X"):
                return
            time.sleep(0.05)

    async def temporal(self) -> Client:
        self.client = await connect(StackSettings(temporal_address=self.env["QT_TEMPORAL_ADDRESS"]))
        return self.client

    def redis(self) -> aioredis.Redis:
        return aioredis.from_url(f"redis://127.0.0.1:{self.env['QT_REDIS_PORT']}/0", decode_responses=True)

    def exchange(self):
        return paper_exchange_client(PaperSettings(port=int(self.env["QT_PAPER_PORT"])))

    def down(self) -> None:
        self.qt("down", timeout=180)

    def logs(self) -> str:
        out = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(out)
