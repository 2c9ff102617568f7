"""`qt up` / `qt down` / `qt status`: the local stack as child processes we own.

Each part (redis-server, the Temporal dev server, the paper exchange) runs as its own process
group with its log under `.data/logs/` and a record under `.data/run/NAME.json` holding its pid
and the kernel's start time for that pid. A process is "ours" only if both match, so a stale
record whose pid was reused by some other program is never signalled: `qt down` touches nothing
it did not start. A second `qt up` finds the live records and reuses the processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from paper_exchange.config import PaperSettings
from qt.settings import SEARCH_ATTRIBUTES, StackSettings
from qt.temporal_setup import connect, ensure_search_attributes, temporal_binary

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class LauncherError(RuntimeError):
    """A part of the stack could not be started or stopped; the message says what to do."""


@dataclass
class Part:
    name: str
    host: str
    port: int
    url: str  # what a user connects to
    argv: list[str] | None  # None: not started by us (external)
    env: dict[str, str] = field(default_factory=dict)
    probe: Callable[[], Awaitable[bool]] | None = None
    extra_urls: dict[str, str] = field(default_factory=dict)


@dataclass
class PartStatus:
    name: str
    state: str  # running | stopped | external | external-down | reused | started
    pid: int | None
    url: str
    log: Path | None
    extra_urls: dict[str, str] = field(default_factory=dict)


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    after_comm = stat.rsplit(")", 1)[1].split()
    state = after_comm[0]
    if state in ("Z", "X"):  # zombie or dead: not running
        return None
    return int(after_comm[19])


class Stack:
    """The local stack described by `StackSettings` and `PaperSettings`."""

    def __init__(
        self, settings: StackSettings | None = None, paper: PaperSettings | None = None
    ) -> None:
        self.settings = settings or StackSettings()
        self.paper = paper or PaperSettings()
        self.data_dir = self.settings.data_dir.resolve()
        self.run_dir = self.data_dir / "run"
        self.logs_dir = self.data_dir / "logs"

    # -- the parts ---------------------------------------------------------------------------

    def parts(self) -> list[Part]:
        return [self._redis_part(), self._temporal_part(), self._paper_part()]

    def _redis_part(self) -> Part:
        url = self.settings.effective_redis_url
        external = self.settings.redis_url is not None
        argv = None
        if not external:
            server = shutil.which("redis-server")
            argv = [
                server or "redis-server",
                "--port", str(self.settings.redis_port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir / "redis"),
                # AOF: every acknowledged write survives a crash (fsync each second).
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "yes",
            ]

        async def probe() -> bool:
            client = aioredis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                return bool(await client.ping())
            except Exception:
                return False
            finally:
                await client.aclose()

        return Part("redis", "127.0.0.1", self.settings.redis_port, url, argv, probe=probe)

    def _temporal_part(self) -> Part:
        host, port = _split_host_port(self.settings.temporal_address)
        argv = None
        if not self.settings.temporal_external:
            try:
                binary = temporal_binary()
            except FileNotFoundError as exc:
                raise LauncherError(str(exc)) from exc
            argv = [
                binary, "server", "start-dev",
                "--db-filename", str(self.data_dir / "temporal" / "temporal.sqlite"),
                "--ip", host,
                "--port", str(port),
                "--ui-port", str(self.settings.temporal_ui_port),
                "--namespace", self.settings.temporal_namespace,
                "--log-level", "warn",
                "--ui-disable-news-fetch",  # no internet: the UI must not try to reach out
            ]
            for name, kind in SEARCH_ATTRIBUTES.items():
                argv += ["--search-attribute", f"{name}={kind}"]

        async def probe() -> bool:
            try:
                client = await connect(self.settings)
                await ensure_search_attributes(client)
                return True
            except Exception:
                return False

        extra = {"web_ui": self.settings.temporal_ui_url}
        return Part(
            "temporal", host, port, self.settings.temporal_address, argv, probe=probe,
            extra_urls=extra,
        )

    def _paper_part(self) -> Part:
        paper = self.paper
        url = f"http://{paper.host}:{paper.port}"
        # The child serves where this Stack probes, whatever the environment says.
        env = {"QT_PAPER_HOST": paper.host, "QT_PAPER_PORT": str(paper.port)}
        if "QT_PAPER_DATA_DIR" not in os.environ:
            env["QT_PAPER_DATA_DIR"] = str(self.data_dir)

        async def probe() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    response = await client.get(f"{url}/fapi/v1/ping")
                    return response.status_code == 200
            except httpx.HTTPError:
                return False

        argv = [sys.executable, "-m", "paper_exchange"]
        return Part("paper-exchange", paper.host, paper.port, url, argv, env=env, probe=probe)

    # -- records of what we started ----------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _read_record(self, name: str) -> dict | None:
        try:
            return json.loads(self._record_path(name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def owned_pid(self, name: str) -> int | None:
        """The pid of the part if it is alive and is the very process we started, else None."""
        record = self._read_record(name)
        if not record:
            return None
        pid = int(record["pid"])
        if _proc_start_ticks(pid) != record.get("start_ticks"):
            return None
        return pid

    # -- commands ----------------------------------------------------------------------------

    async def up(self) -> list[PartStatus]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "temporal").mkdir(parents=True, exist_ok=True)
        return [await self._up_part(part) for part in self.parts()]

    async def _up_part(self, part: Part) -> PartStatus:
        log = self._log_path(part.name)
        if part.argv is None:
            ok = part.probe is None or await part.probe()
            if not ok:
                raise LauncherError(f"{part.name} at {part.url} (external) does not answer")
            return PartStatus(part.name, "external", None, part.url, None, part.extra_urls)

        pid = self.owned_pid(part.name)
        if pid is not None:
            await self._wait_ready(part, pid, log)
            return PartStatus(part.name, "reused", pid, part.url, log, part.extra_urls)

        if _port_in_use(part.host, part.port):
            raise LauncherError(
                f"{part.name}: port {part.host}:{part.port} is taken by a process qt did not "
                f"start; stop it, or point qt at it (see README, 'Configuration'), "
                f"or pick another port"
            )
        if part.name == "redis" and shutil.which("redis-server") is None:
            raise LauncherError(
                "redis-server is not installed: `apt-get install redis-server` (make does this), "
                "or set QT_REDIS_URL to a Redis you run"
            )
        pid = self._spawn(part, log)
        await self._wait_ready(part, pid, log)
        return PartStatus(part.name, "started", pid, part.url, log, part.extra_urls)

    def _spawn(self, part: Part, log: Path) -> int:
        assert part.argv is not None
        env = {**os.environ, **part.env}
        with open(log, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} qt up: {' '.join(part.argv)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                part.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=os.getcwd(),
                env=env,
                start_new_session=True,  # own process group: `qt down` signals only it
            )
        record = {
            "pid": process.pid,
            "start_ticks": _proc_start_ticks(process.pid),
            "argv": part.argv,
            "url": part.url,
            "started_at": time.time(),
        }
        self._record_path(part.name).write_text(json.dumps(record, indent=2))
        return process.pid

    async def _wait_ready(self, part: Part, pid: int, log: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if part.probe is None or await part.probe():
                return
            if _proc_start_ticks(pid) is None:
                _reap(pid)
                raise LauncherError(f"{part.name} exited during start; last log lines:\n{_tail(log)}")
            await asyncio.sleep(0.2)
        raise LauncherError(
            f"{part.name} did not become ready in {READY_TIMEOUT_S:.0f}s; see {log}:\n{_tail(log)}"
        )

    def down(self) -> list[PartStatus]:
        statuses = []
        for part in reversed(self.parts()):
            pid = self.owned_pid(part.name)
            if pid is not None:
                _stop_group(pid)
                statuses.append(PartStatus(part.name, "stopped", pid, part.url, self._log_path(part.name)))
            else:
                state = "external" if part.argv is None else "not running"
                statuses.append(PartStatus(part.name, state, None, part.url, None))
            # A record whose process is gone (or is someone else's now) is just deleted.
            self._record_path(part.name).unlink(missing_ok=True)
        return list(reversed(statuses))

    async def status(self) -> list[PartStatus]:
        statuses = []
        for part in self.parts():
            if part.argv is None:
                ok = part.probe is None or await part.probe()
                statuses.append(
                    PartStatus(part.name, "external" if ok else "external-down", None, part.url, None,
                               part.extra_urls)
                )
                continue
            pid = self.owned_pid(part.name)
            state = "stopped"
            if pid is not None:
                state = "running" if (part.probe is None or await part.probe()) else "starting"
            statuses.append(
                PartStatus(part.name, state, pid, part.url, self._log_path(part.name), part.extra_urls)
            )
        return statuses


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_group(pid: int) -> None:
    """SIGTERM the process group we created, then SIGKILL if it has not exited in time."""
    start = _proc_start_ticks(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _reap(pid)
        if _proc_start_ticks(pid) != start:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
