"""The workflow side never loads an exchange client, Redis or ML code: those stay in activity
workers (SPEC: keep heavy imports out of the workflow sandbox). Checked in a fresh interpreter."""

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


def test_workflow_queue_worker_wiring_imports_nothing_heavy():
    loaded = _modules_after(
        "from workers.registry import Dependencies, activities_for, workflows_for\n"
        "workflows_for('trade-workflows'); activities_for('trade-workflows', Dependencies())")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
