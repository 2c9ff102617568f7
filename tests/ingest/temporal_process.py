"""A Temporal dev server of the test's own, which the test may kill and start again on the same
port and SQLite file (the session server is shared and must stay up)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from common.search_attributes import SEARCH_ATTRIBUTES
from common.temporal import temporal_binary
from local_stack.ports import free_port


class TemporalProcess:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                "--port", str(self.port), "--db-filename", str(self.workdir / "temporal.db"),
                "--log-level", "warn"]
        for name, kind in SEARCH_ATTRIBUTES.items():  # registered when the file is new
            args += ["--search-attribute", f"{name}={kind}"]
        self.process = subprocess.Popen(args, stdout=open(self.workdir / "temporal.log", "ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    async def client(self, timeout: float = 60) -> Client:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await Client.connect(self.address, data_converter=pydantic_data_converter)
                await client.count_workflows()  # the frontend answers, the namespace exists
                return client
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
