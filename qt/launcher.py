"""`qt up` / `qt down` / `qt status`: the local stack as child processes we own.

Each part runs as its own process group with its log under `.data/logs/NAME.log` and a record
under `.data/run/NAME.json` holding its pid and the kernel's start time for that pid. A process
is "ours" only if both match, so a stale record whose pid was reused by some other program is
never signalled: `qt down` touches nothing it did not start. A second `qt up` finds the live
records and reuses the processes.

The parts, in start order (`qt down` stops them in reverse):

1. infrastructure: redis-server, the Temporal dev server, the paper exchange, each probed until
   it answers;
2. the workers (`QT_UP_WORKERS`: `qt worker --queue all`, one `qt worker` per task queue, or
   none), each ready once Temporal lists a poller with its identity (`PID@HOST`) on every task
   type of its queues;
3. the API (`qt api`, ready when GET /health answers) and the intake with the market feed and
   the signal engine (`qt ingest`, ready when its consumer's stats appear in Redis); each can be
   switched off (`QT_UP_API`, `QT_UP_INGEST`).

`qt down` stops the intake first (no new trades start), then the API, then the workers (SIGTERM:
they finish what they can in `QT_DOWN_WORKER_TIMEOUT_S`), then the infrastructure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from temporalio.client import Client

from paper_exchange.config import PaperSettings
from qt.pollers import QueueReport, describe_queues, foreign_pollers, served_queues, worker_identity
from common.search_attributes import SEARCH_ATTRIBUTES
from common.settings import StackSettings
from common.temporal import connect, ensure_search_attributes, temporal_binary
from common.task_queues import ALL, QUEUES

READY_TIMEOUT_S = 60.0  # infrastructure
STOP_TIMEOUT_S = 15.0

INFRA, WORKER, API, INGEST, NOTIFY = "infra", "worker", "api", "ingest", "notify"
APP_KINDS = (WORKER, API, INGEST, NOTIFY)
WORKERS_ALL = "worker"  # the record name of `qt worker --queue all`; per queue: worker-QUEUE


class LauncherError(RuntimeError):
    """A part of the stack could not be started or stopped; the message says what to do.
    `statuses`: what runs anyway (the parts that did start)."""

    def __init__(self, message: str, statuses: list[PartStatus] | None = None) -> None:
        super().__init__(message)
        self.statuses = statuses or []


@dataclass
class Part:
    name: str
    host: str | None  # None: serves no port
    port: int | None
    url: str  # what a user connects to (or, for a worker, what it polls)
    argv: list[str] | None  # None: not started by us (external)
    env: dict[str, str] = field(default_factory=dict)
    probe: Callable[[int | None], Awaitable[bool]] | None = None  # (pid) -> ready?
    extra_urls: dict[str, str] = field(default_factory=dict)
    kind: str = INFRA
    waiting_for: str = "an answer"  # what "ready" means, for error messages
    ready_timeout_s: float = READY_TIMEOUT_S
    stop_timeout_s: float = STOP_TIMEOUT_S


@dataclass
class PartStatus:
    name: str
    # running | stopped | starting | unhealthy | off | external | external-down | reused | started | not running
    state: str
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


def _notify_targets() -> list[str]:
    from notifications.settings import NotifySettings
    return NotifySettings().urls


def _qt(*args: str) -> list[str]:
    return [sys.executable, "-m", "qt.cli", *args]


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
        self._client: tuple[asyncio.AbstractEventLoop, Client] | None = None

    # -- the parts ---------------------------------------------------------------------------

    def parts(self) -> list[Part]:
        """The infrastructure: what every other part needs."""
        return [self._redis_part(), self._temporal_part(), self._paper_part()]

    def app_parts(self) -> list[Part]:
        """The workers, the API and the intake as the settings ask for them (QT_UP_*)."""
        s = self.settings
        parts = []
        if s.up_workers == "all":
            parts.append(self._worker_part(WORKERS_ALL, ALL, served_queues(QUEUES)))
        elif s.up_workers == "per-queue":
            parts += [self._worker_part(f"worker-{q}", q, [q]) for q in served_queues(QUEUES)]
        if s.up_api:
            parts.append(self._api_part())
        if s.up_ingest:
            parts.append(self._ingest_part())
        if _notify_targets():  # the notifier runs only when there is somewhere to send to
            parts.append(self._notify_part())
        return parts

    def every_app_part(self) -> list[Part]:
        """Every app part any setting could have started: what `qt down` looks for."""
        return [self._worker_part(WORKERS_ALL, ALL, served_queues(QUEUES)),
                *(self._worker_part(f"worker-{q}", q, [q]) for q in served_queues(QUEUES)),
                self._api_part(), self._ingest_part(), self._notify_part()]

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

        async def probe(_pid: int | None = None) -> bool:
            client = aioredis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                return bool(await client.ping())
            except Exception:
                return False
            finally:
                await client.aclose()

        return Part("redis", "127.0.0.1", self.settings.redis_port, url, argv, probe=probe,
                    waiting_for="an answer to PING")

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

        async def probe(_pid: int | None = None) -> bool:
            try:
                client = await connect(self.settings)
                await ensure_search_attributes(client)
                return True
            except Exception:
                return False

        extra = {"web_ui": self.settings.temporal_ui_url}
        return Part(
            "temporal", host, port, self.settings.temporal_address, argv, probe=probe,
            extra_urls=extra, waiting_for="its frontend and the search attributes",
        )

    def _paper_part(self) -> Part:
        paper = self.paper
        url = f"http://{paper.host}:{paper.port}"
        # The child serves where this Stack probes, whatever the environment says.
        env = {"QT_PAPER_HOST": paper.host, "QT_PAPER_PORT": str(paper.port)}
        if "QT_PAPER_DATA_DIR" not in os.environ:
            env["QT_PAPER_DATA_DIR"] = str(self.data_dir)

        async def probe(_pid: int | None = None) -> bool:
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    response = await client.get(f"{url}/fapi/v1/ping")
                    return response.status_code == 200
            except httpx.HTTPError:
                return False

        argv = [sys.executable, "-m", "paper_exchange"]
        return Part("paper-exchange", paper.host, paper.port, url, argv, env=env, probe=probe,
                    waiting_for="an answer to /fapi/v1/ping")

    def _app_env(self) -> dict[str, str]:
        """The apps talk to the very Temporal, Redis and paper exchange this Stack runs."""
        s = self.settings
        return {
            "QT_DATA_DIR": str(self.data_dir),
            "QT_TEMPORAL_ADDRESS": s.temporal_address,
            "QT_TEMPORAL_NAMESPACE": s.temporal_namespace,
            "QT_REDIS_URL": s.effective_redis_url,
            "QT_PAPER_HOST": self.paper.host,
            "QT_PAPER_PORT": str(self.paper.port),
        }

    def _worker_part(self, name: str, queue: str, queues: list[str]) -> Part:
        async def probe(pid: int | None) -> bool:
            if pid is None:
                return False
            try:
                reports = await describe_queues(await self.temporal(), queues)
            except Exception:
                self._client = None
                return False
            return all(r.polled_by(worker_identity(pid)) for r in reports)

        return Part(name, None, None, f"task queue{'s' if len(queues) > 1 else ''}: {', '.join(queues)}",
                    _qt("worker", "--queue", queue), env=self._app_env(), probe=probe, kind=WORKER,
                    waiting_for=f"Temporal lists no poller of it on {', '.join(queues)}",
                    ready_timeout_s=self.settings.up_ready_timeout_s,
                    stop_timeout_s=self.settings.down_worker_timeout_s)

    def _api_part(self) -> Part:
        s = self.settings
        url = f"http://{s.api_host}:{s.api_port}"

        async def probe(_pid: int | None = None) -> bool:
            try:  # any answer counts: 503 "degraded" is the API telling what it cannot reach
                async with httpx.AsyncClient(timeout=8.0) as client:
                    await client.get(f"{url}/health")
                    return True
            except httpx.HTTPError:
                return False

        env = {**self._app_env(), "QT_API_HOST": s.api_host, "QT_API_PORT": str(s.api_port)}
        return Part("api", s.api_host, s.api_port, url, _qt("api"), env=env, probe=probe, kind=API,
                    extra_urls={"docs": f"{url}/docs"}, waiting_for="GET /health did not answer",
                    ready_timeout_s=s.up_ready_timeout_s, stop_timeout_s=s.down_timeout_s)

    def _ingest_part(self) -> Part:
        from common.redis_keys import INTAKE_STATS_KEY, TRADE_INTENT_STREAM

        url = self.settings.effective_redis_url

        async def probe(pid: int | None) -> bool:
            # The intake publishes its counters (hash per consumer, `host-pid` by default)
            # once it reads the stream as a member of the group: it works.
            if pid is None:
                return False
            consumer = os.environ.get("QT_INGEST_CONSUMER") or f"{socket.gethostname()}-{pid}"
            client = aioredis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                return bool(await client.exists(INTAKE_STATS_KEY.format(consumer=consumer)))
            except Exception:
                return False
            finally:
                await client.aclose()

        return Part("ingest", None, None, f"{TRADE_INTENT_STREAM} → TradeWorkflows; feed; signals",
                    _qt("ingest"), env=self._app_env(), probe=probe, kind=INGEST,
                    waiting_for="its intake published no stats to Redis (it does not read the stream)",
                    ready_timeout_s=self.settings.up_ready_timeout_s,
                    stop_timeout_s=self.settings.down_timeout_s)

    def _notify_part(self) -> Part:
        return Part("notify", None, None, "trade and safety events → QT_NOTIFY_URLS (apprise)",
                    _qt("notify"), env=self._app_env(), probe=None, kind=NOTIFY,
                    ready_timeout_s=self.settings.up_ready_timeout_s,
                    stop_timeout_s=self.settings.down_timeout_s)

    async def temporal(self) -> Client:
        """One Temporal client per event loop for the probes and the status."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            self._client = (loop, await connect(self.settings))
        return self._client[1]

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

    def owned_workers(self) -> dict[int, str]:
        """pid -> name of every worker process we started that runs."""
        owned = {}
        for part in self.every_app_part():
            pid = self.owned_pid(part.name) if part.kind == WORKER else None
            if pid is not None:
                owned[pid] = part.name
        return owned

    # -- commands ----------------------------------------------------------------------------

    async def up(self, *, apps: bool = False) -> list[PartStatus]:
        """Start (or reuse) the infrastructure; with `apps`, the workers, API and intake the
        settings ask for too (what `qt up` does)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "redis").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "temporal").mkdir(parents=True, exist_ok=True)
        statuses = [await self._up_part(part) for part in self.parts()]
        if apps:
            try:
                statuses += await self.up_apps()
            except LauncherError as exc:
                raise LauncherError(str(exc), statuses + exc.statuses) from None
        return statuses

    async def up_apps(self, kinds: Iterable[str] = APP_KINDS) -> list[PartStatus]:
        """Start (or reuse) the configured app parts of `kinds`: the workers first (they poll
        before the first trade starts), then the API and the intake side by side. One failing
        does not keep the others from starting; all failures are raised together after."""
        kinds = set(kinds)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        configured = [p for p in self.app_parts() if p.kind in kinds]
        statuses: list[PartStatus] = []
        failures: list[str] = []
        for step in ({WORKER}, {API, INGEST, NOTIFY}):
            parts = [p for p in configured if p.kind in step]
            results = await asyncio.gather(*(self._up_part(p) for p in parts), return_exceptions=True)
            for part, result in zip(parts, results, strict=True):
                if isinstance(result, LauncherError):
                    failures.append(str(result))
                    statuses.append(PartStatus(part.name, "failed", None, part.url, self._log_path(part.name)))
                elif isinstance(result, BaseException):
                    raise result
                else:
                    statuses.append(result)
        # Workers of the other QT_UP_WORKERS mode (changed since they started) are replaced
        # once the configured ones poll; with "none" they are left running (and shown).
        names = {p.name for p in configured}
        workers_ready = any(p.kind == WORKER for p in configured) and not any(
            st.state == "failed" for p, st in zip(configured, statuses, strict=True) if p.kind == WORKER)
        for part in self.every_app_part():
            pid = self.owned_pid(part.name)
            if part.kind not in kinds or part.name in names or pid is None:
                continue
            if part.kind == WORKER and workers_ready:
                stopped = await asyncio.to_thread(self._stop, [part], part.stop_timeout_s)
                statuses.append(stopped[part.name])
                statuses[-1].state = "stopped (replaced)"
            else:
                statuses.append(PartStatus(part.name, "running (not configured)", pid, part.url,
                                           self._log_path(part.name), part.extra_urls))
        if failures:
            raise LauncherError("\n".join(failures), statuses)
        return statuses

    async def _up_part(self, part: Part) -> PartStatus:
        log = self._log_path(part.name)
        if part.argv is None:
            ok = part.probe is None or await part.probe(None)
            if not ok:
                raise LauncherError(f"{part.name} at {part.url} (external) does not answer")
            return PartStatus(part.name, "external", None, part.url, None, part.extra_urls)

        pid = self.owned_pid(part.name)
        if pid is not None:
            await self._wait_ready(part, pid, log)
            return PartStatus(part.name, "reused", pid, part.url, log, part.extra_urls)

        if part.port is not None and part.host is not None and _port_in_use(part.host, part.port):
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
            "kind": part.kind,
            "url": part.url,
            "started_at": time.time(),
        }
        self._record_path(part.name).write_text(json.dumps(record, indent=2))
        return process.pid

    async def _wait_ready(self, part: Part, pid: int, log: Path) -> None:
        deadline = time.monotonic() + part.ready_timeout_s
        while time.monotonic() < deadline:
            if part.probe is None or await part.probe(pid):
                return
            if _proc_start_ticks(pid) is None:
                _reap(pid)
                self._record_path(part.name).unlink(missing_ok=True)
                raise LauncherError(
                    f"{part.name} exited during start; see {log}, last lines:\n{_tail(log)}")
            await asyncio.sleep(0.2)
        if part.kind != INFRA:  # a worker that never polls is only noise: stop it
            await asyncio.to_thread(_stop_groups, [pid], part.stop_timeout_s)
            self._record_path(part.name).unlink(missing_ok=True)
            raise LauncherError(
                f"{part.name} (pid {pid}) did not show it works within {part.ready_timeout_s:.0f}s: "
                f"{part.waiting_for}; stopped it. See {log}, last lines:\n{_tail(log)}")
        raise LauncherError(
            f"{part.name} did not become ready in {part.ready_timeout_s:.0f}s ({part.waiting_for}); "
            f"see {log}:\n{_tail(log)}"
        )

    def _all_parts(self) -> list[Part]:
        return [*self.parts(), *self.every_app_part()]

    def down(self) -> list[PartStatus]:
        """Stop what we started: the intake (no new trades), the API, the workers (together;
        SIGTERM lets them end their activities), then the infrastructure in reverse."""
        stopped = self.stop_apps()
        for part in reversed(self.parts()):
            stopped.update(self._stop([part], part.stop_timeout_s))
        shown = {p.name for p in (*self.parts(), *self.app_parts())}  # and whatever was stopped
        return [stopped[p.name] for p in self._all_parts()
                if p.name in shown or stopped[p.name].state == "stopped"]

    def stop_apps(self, kinds: Iterable[str] = APP_KINDS) -> dict[str, PartStatus]:
        """Stop the app parts of `kinds` we started (whatever QT_UP_* says now): the intake
        first, then the API, then the workers."""
        kinds = set(kinds)
        apps = self.every_app_part()
        statuses: dict[str, PartStatus] = {}
        for kind in (INGEST, NOTIFY, API, WORKER):
            if kind in kinds:
                group = [p for p in apps if p.kind == kind]
                statuses.update(self._stop(group, max(p.stop_timeout_s for p in group)))
        return statuses

    def _stop(self, parts: list[Part], timeout_s: float) -> dict[str, PartStatus]:
        owned = {p.name: self.owned_pid(p.name) for p in parts}
        _stop_groups([pid for pid in owned.values() if pid is not None], timeout_s)
        statuses = {}
        for part in parts:
            pid = owned[part.name]
            if pid is not None:
                statuses[part.name] = PartStatus(part.name, "stopped", pid, part.url, self._log_path(part.name))
            else:
                state = "external" if part.argv is None else "not running"
                statuses[part.name] = PartStatus(part.name, state, None, part.url, None)
            # A record whose process is gone (or is someone else's now) is just deleted.
            self._record_path(part.name).unlink(missing_ok=True)
        return statuses

    async def status(self) -> list[PartStatus]:
        statuses = []
        for part in self.parts():
            if part.argv is None:
                ok = part.probe is None or await part.probe(None)
                statuses.append(
                    PartStatus(part.name, "external" if ok else "external-down", None, part.url, None,
                               part.extra_urls)
                )
                continue
            pid = self.owned_pid(part.name)
            state = self._gone_state(part.name)
            if pid is not None:
                state = "running" if (part.probe is None or await part.probe(pid)) else "starting"
            statuses.append(
                PartStatus(part.name, state, pid, part.url, self._log_path(part.name), part.extra_urls)
            )
        configured = {p.name for p in self.app_parts()}
        for part in self.every_app_part():
            pid = self.owned_pid(part.name)
            if pid is not None:
                state = "running" if (part.probe is None or await part.probe(pid)) else "unhealthy"
            elif part.name in configured or self._read_record(part.name):
                state = self._gone_state(part.name)
            else:
                continue
            statuses.append(PartStatus(part.name, state, pid, part.url, self._log_path(part.name),
                                       part.extra_urls))
        s = self.settings
        for kind, on, setting in ((WORKER, s.up_workers != "none", f"QT_UP_WORKERS={s.up_workers}"),
                                  (API, s.up_api, "QT_UP_API=false"), (INGEST, s.up_ingest, "QT_UP_INGEST=false")):
            if not on and not any(p.kind == kind for p in self.every_app_part() if self.owned_pid(p.name)):
                statuses.append(PartStatus(kind, f"off ({setting})", None, "", None))
        return statuses

    def _gone_state(self, name: str) -> str:
        """Not running: "exited" when it died on its own (its record is still there; `qt up`
        starts it again), "stopped" when `qt down` stopped it (or it never ran)."""
        return "exited" if self._read_record(name) else "stopped"

    async def task_queues(self) -> list[QueueReport]:
        """Every task queue's pollers, ours named (raises when Temporal cannot be reached)."""
        return await describe_queues(await self.temporal(), QUEUES, self.owned_workers())

    @contextlib.asynccontextmanager
    async def workers_paused(self, *, then_start_workers: bool = True) -> AsyncIterator[PausedApps]:
        """Run a block with no worker and no intake of ours on the task queues (`qt demo`:
        its own workers use the demo policy, and two sets of workers with different policies
        would share the trades). Refuses (LauncherError) while a worker `qt` did not start polls
        them: it cannot be stopped from here. Our intake and workers are stopped for the block
        and started again after it; with `then_start_workers` the configured workers are
        started even if none ran before, so the stack keeps running with workers."""
        reports = await describe_queues(await self.temporal(), QUEUES, self.owned_workers())
        foreign = foreign_pollers(reports, ours=self.owned_workers())
        if foreign:
            who = "; ".join(f"{p.identity} on {q} ({p.task_type} tasks)" for q, p in foreign)
            raise LauncherError(
                f"workers qt did not start poll the task queues: {who}. They would take part of the "
                f"demo's trades with their own policy: stop them first (or run the demo on its own "
                f"stack: another QT_DATA_DIR, QT_TEMPORAL_ADDRESS, QT_REDIS_PORT, QT_PAPER_PORT)")
        stopped = await asyncio.to_thread(self.stop_apps, (INGEST, WORKER))
        paused = PausedApps([name for name, st in stopped.items() if st.state == "stopped"])
        try:
            yield paused
        finally:
            kinds = set()
            if "ingest" in paused.stopped:
                kinds.add(INGEST)
            if then_start_workers:
                # Left running: workers, the API (the README's commands) and the notifier; the
                # intake only if it ran before (its signal engine would start trading at once).
                kinds.update((WORKER, API, NOTIFY))
            elif any(n.startswith(WORKERS_ALL) for n in paused.stopped):
                kinds.add(WORKER)
            try:
                paused.restarted = await self.up_apps(kinds) if kinds else []
            except LauncherError as exc:
                paused.restarted, paused.error = exc.statuses, str(exc)


@dataclass
class PausedApps:
    stopped: list[str]  # names of our parts stopped for the block
    restarted: list[PartStatus] = field(default_factory=list)  # after the block
    error: str | None = None  # a part that could not start again after the block


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_groups(pids: list[int], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process groups we created (all at once), then SIGKILL the ones that have not
    exited in time. Only pids that `owned_pid` vouched for are passed here."""
    starts = {pid: _proc_start_ticks(pid) for pid in pids}
    waiting = []
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
            waiting.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            _reap(pid)
            if _proc_start_ticks(pid) != starts[pid]:
                waiting.remove(pid)
        if waiting:
            time.sleep(0.1)
    for pid in waiting:
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
