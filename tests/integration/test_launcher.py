"""`qt up` / `qt status` / `qt down` as a user runs them: real processes, real ports.

Everything runs in a temp data dir on free ports, so the test never meets a developer's own
stack. Asserted: every part answers, search attributes are registered with the right types,
Redis writes its AOF under the data dir, a second `qt up` reuses the same processes, a port held
by a foreign process is reported and the foreign process survives, `qt down` stops only ours.
Beside the infrastructure `qt up` starts the workers (all queues in one process, or one per
queue), the API and the intake: Temporal lists each worker's identity as a poller of its
queues, the API answers /health, `qt status` shows the pollers per queue and flags a queue
nobody polls once its worker was SIGKILLed, a worker qt did not start is shown and left alone,
a worker that cannot start is reported with its log, and the demo's pause of the stack's
workers (`Stack.workers_paused`) refuses while a foreign worker polls and restarts ours after.
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
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from common.search_attributes import SEARCH_ATTRIBUTES
from common.settings import StackSettings
from common.temporal import connect, registered_search_attributes
from local_stack.ports import free_port

pytestmark = pytest.mark.integration

QT = [sys.executable, "-m", "qt.cli"]
HOST = socket.gethostname()
# What each queue's worker polls (workers/registry.py): `ml` has nothing registered yet.
SERVED = {
    "trade-workflows": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "trade-execution": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    "trade-monitor": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    "trade-market": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}
INFRA = {"redis", "temporal", "paper-exchange"}


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(
        QT_DATA_DIR=str(tmp_path / ".data"),
        QT_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        QT_TEMPORAL_UI_PORT=str(free_port()),
        QT_REDIS_PORT=str(free_port()),
        QT_PAPER_PORT=str(free_port()),
        QT_API_PORT=str(free_port()),
        QT_INGEST_METRICS_PORT=str(free_port()),
        COLUMNS="250",
    )
    yield env
    subprocess.run([*QT, "down"], env=env, cwd=tmp_path, capture_output=True, timeout=120)


def qt(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*QT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def records(data_dir: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in (data_dir / "run").glob("*.json")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_gone(pids, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]


async def pollers(env: dict[str, str]) -> dict[str, set[str]]:
    """queue -> identities Temporal lists as pollers of the task type that queue serves."""
    client = await connect(StackSettings(temporal_address=env["QT_TEMPORAL_ADDRESS"]))
    seen = {}
    for queue, task_type in SERVED.items():
        response = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue_type=task_type,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL)))
        seen[queue] = {p.identity for p in response.pollers}
    return seen


def row(text: str, first_cell: str) -> str:
    """The first line of the table row that starts with `first_cell`."""
    return next(line for line in text.splitlines() if line.startswith(f"│ {first_cell} "))


async def test_up_status_reuse_and_down(stack_env, tmp_path):
    data_dir = Path(stack_env["QT_DATA_DIR"])
    first = qt(stack_env, "up", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    pids = records(data_dir)
    assert set(pids) == INFRA | {"worker", "api", "ingest"}
    assert all(alive(pid) for pid in pids.values())
    # Each part has its own log under the data dir.
    assert all((data_dir / "logs" / f"{name}.log").exists() for name in pids)

    # Every part answers where the settings say.
    async with httpx.AsyncClient(timeout=10) as client:
        ui = await client.get(f"http://127.0.0.1:{stack_env['QT_TEMPORAL_UI_PORT']}/")
        assert ui.status_code == 200
        ping = await client.get(f"http://127.0.0.1:{stack_env['QT_PAPER_PORT']}/fapi/v1/ping")
        assert ping.status_code == 200
        health = await client.get(f"http://127.0.0.1:{stack_env['QT_API_PORT']}/health")
        assert health.status_code == 200, health.text
        assert health.json()["parts"] == {"temporal": "ok", "redis": "ok", "exchange": "ok"}
    settings = StackSettings(temporal_address=stack_env["QT_TEMPORAL_ADDRESS"])
    registered = await registered_search_attributes(await connect(settings))
    assert {k: registered.get(k) for k in SEARCH_ATTRIBUTES} == SEARCH_ATTRIBUTES
    # The worker (`--queue all`) polls every queue, as Temporal sees it.
    worker = f"{pids['worker']}@{HOST}"
    assert all(worker in ids for ids in (await pollers(stack_env)).values()), await pollers(stack_env)
    # State lives under the data dir: Temporal's SQLite file, Redis' AOF, logs.
    assert (data_dir / "temporal" / "temporal.sqlite").exists()
    assert list((data_dir / "redis").glob("appendonly*")), "redis runs without AOF"

    status = qt(stack_env, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    out = status.stdout
    for name in pids:
        assert " running " in row(out, name), out
    for queue in SERVED:
        line = row(out, queue)
        assert worker in line and "qt up: worker" in line and "polled by 1 worker" in line, out
    assert "no worker polls" not in out
    assert "TradeWorkflows in Temporal" in out and "consumer " in out, out

    # Idempotent: a second `qt up` reuses the very same processes.
    second = qt(stack_env, "up", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert all(" reused " in row(second.stdout, name) for name in pids), second.stdout
    assert records(data_dir) == pids

    # SIGKILL the worker: `qt status` says at once that nobody polls the queues any more
    # (Temporal still lists the dead poller for minutes), and `qt up` starts a new one.
    os.kill(pids["worker"], signal.SIGKILL)
    wait_gone([pids["worker"]])
    out = qt(stack_env, "status", cwd=tmp_path).stdout
    assert " exited " in row(out, "worker"), out
    for queue in SERVED:
        line = row(out, queue)
        assert "no worker polls this queue" in line and "process gone" in line, out
    again = qt(stack_env, "up", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert " started " in row(again.stdout, "worker")
    pids = records(data_dir)
    out = qt(stack_env, "status", cwd=tmp_path).stdout
    assert all("polled by 1 worker" in row(out, q) for q in SERVED), out

    down = qt(stack_env, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    wait_gone(pids.values())
    assert records(data_dir) == {}
    out = qt(stack_env, "status", cwd=tmp_path).stdout
    assert all(" stopped " in row(out, name) for name in pids), out


async def test_per_queue_workers_and_a_foreign_worker(stack_env, tmp_path):
    """One worker per queue; a `qt worker` qt did not start is listed but never signalled; a
    SIGKILLed per-queue worker leaves only its queue unpolled."""
    env = {**stack_env, "QT_UP_WORKERS": "per-queue", "QT_UP_INGEST": "false", "QT_UP_API": "false"}
    data_dir = Path(env["QT_DATA_DIR"])
    up = qt(env, "up", cwd=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = records(data_dir)
    assert set(pids) == INFRA | {f"worker-{q}" for q in SERVED}
    seen = await pollers(env)
    for queue in SERVED:
        assert seen[queue] == {f"{pids['worker-' + queue]}@{HOST}"}, seen

    foreign = subprocess.Popen([*QT, "worker", "--queue", "trade-market"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while f"{foreign.pid}@{HOST}" not in (await pollers(env))["trade-market"]:
            assert foreign.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        os.kill(pids["worker-trade-monitor"], signal.SIGKILL)
        wait_gone([pids["worker-trade-monitor"]])
        out = qt(env, "status", cwd=tmp_path).stdout
        assert "no worker polls this queue" in row(out, "trade-monitor"), out
        assert out.count("no worker polls this queue") == 1, out
        assert "polled by 2 workers" in row(out, "trade-market"), out
        assert f"{foreign.pid}@{HOST}, last poll" in out, out  # listed, not ours
        assert "off (QT_UP_API=false)" in row(out, "api") and "off (QT_UP_INGEST=false)" in row(out, "ingest")

        down = qt(env, "down", cwd=tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr
        wait_gone(pids.values())
        assert foreign.poll() is None, "qt down stopped a worker it did not start"
    finally:
        foreign.kill()
        foreign.wait()


def test_a_worker_that_cannot_start_is_reported_with_its_log(stack_env, tmp_path):
    env = {**stack_env, "QT_WORKER_WORKFLOW_TASKS": "0", "QT_UP_INGEST": "false"}  # refused: >= 1
    result = qt(env, "up", cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    log = Path(env["QT_DATA_DIR"]).resolve() / "logs" / "worker.log"
    flat = " ".join(result.stdout.split())
    assert "worker exited during start" in flat and str(log) in flat.replace(" ", ""), result.stdout
    assert "workflow_tasks" in result.stdout  # the log's last lines say why
    # The rest started anyway, and is shown.
    assert set(records(Path(env["QT_DATA_DIR"]))) == INFRA | {"api"}
    assert " started " in row(result.stdout, "api"), result.stdout


async def test_the_demo_pauses_our_workers_and_refuses_foreign_ones(stack_env, tmp_path, monkeypatch):
    """`qt demo` runs its own workers: `Stack.workers_paused` stops ours (and the intake) for
    the block and starts them after; a worker qt did not start makes it refuse."""
    from qt.launcher import LauncherError, Stack
    from qt.pollers import describe_queues

    up = qt(stack_env, "up", cwd=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    before = records(Path(stack_env["QT_DATA_DIR"]))
    for name in list(os.environ):
        if name.startswith("QT_"):
            monkeypatch.delenv(name)
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    stack = Stack()

    foreign = subprocess.Popen([*QT, "worker", "--queue", "trade-workflows"], env=stack_env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while f"{foreign.pid}@{HOST}" not in (await pollers(stack_env))["trade-workflows"]:
            assert foreign.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
        with pytest.raises(LauncherError, match=f"{foreign.pid}@{HOST} on trade-workflows"):
            async with stack.workers_paused():
                pytest.fail("ran beside a foreign worker")
        assert records(Path(stack_env["QT_DATA_DIR"])) == before  # refused before touching ours
    finally:
        foreign.kill()
        foreign.wait()

    async with stack.workers_paused() as paused:
        assert sorted(paused.stopped) == ["ingest", "worker"]
        wait_gone([before["worker"], before["ingest"]])
        reports = await describe_queues(await stack.temporal(), SERVED)
        assert not any(r.polled for r in reports)  # nobody but the demo's workers would poll
        assert stack.owned_pid("api") == before["api"]  # the API keeps serving
    assert paused.error is None
    # The intake and workers start again; the API (never stopped) is reused as it is.
    assert sorted(s.name for s in paused.restarted) == ["api", "ingest", "worker"]
    assert stack.owned_pid("api") == before["api"]
    after = records(Path(stack_env["QT_DATA_DIR"]))
    assert after["worker"] != before["worker"] and after["ingest"] != before["ingest"]
    seen = await pollers(stack_env)
    assert all(f"{after['worker']}@{HOST}" in ids for ids in seen.values()), seen


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
