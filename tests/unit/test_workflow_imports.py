"""The workflow code never loads an exchange client, Redis or ML code: those stay in activities
(SPEC: keep heavy imports out of the workflow sandbox). Checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ccxt", "numpy", "lightgbm", "redis", "aiohttp")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_workflow_module_imports_nothing_heavy():
    loaded = _modules_after("import workflows.trade")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_workflow_queue_worker_wiring_loads_only_what_the_gates_need():
    """The workflow worker runs the gates as a local activity: Redis and the exchange client
    (ccxt, aiohttp) are loaded for them, never the ML stack."""
    loaded = _modules_after(
        "from workers.registry import Dependencies, activities_for, workflows_for\n"
        "workflows_for('trade-workflows'); activities_for('trade-workflows', Dependencies())")
    assert not loaded & {"numpy", "lightgbm"}, loaded & {"numpy", "lightgbm"}


def test_the_sandbox_re_executes_only_the_workflow_module_per_run():
    """Temporal's sandbox re-imports the workflow's module for every workflow run; everything
    else must be passed through (imported once per worker). A sibling imported as
    `from workflows import x` inside `imports_passed_through()` is NOT passed through (the
    sandbox already holds its own `workflows` package) and was re-executed per run: ~10 % of a
    worker's CPU when a stale backlog is decided."""
    code = (
        "import asyncio\n"
        "import importlib._bootstrap_external as ext\n"
        "from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner\n"
        "from temporalio.workflow import _Definition\n"
        "from workflows.trade import TradeWorkflow\n"
        "executed = []\n"
        "original = ext._LoaderBasics.exec_module\n"
        "def spy(loader, module):\n"
        "    executed.append(module.__name__)\n"
        "    return original(loader, module)\n"
        "ext._LoaderBasics.exec_module = spy\n"
        "runner, defn = SandboxedWorkflowRunner(), _Definition.must_from_class(TradeWorkflow)\n"
        "async def two_runs():\n"
        "    runner.prepare_workflow(defn)\n"
        "    executed.clear()\n"
        "    runner.prepare_workflow(defn)  # what every further workflow run costs\n"
        "    print(' '.join(sorted(set(executed))))\n"
        "asyncio.run(two_runs())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["workflows", "workflows.trade"], out.stdout
