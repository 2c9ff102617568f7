"""The layers import downwards only (read from every module's import statements, local imports
included): a newcomer can trust that `common/` carries no business logic, that `trading/` is pure,
that workflows never reach a worker's wiring and that only the launcher and the tests use `qt/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("common", "trading", "exchange", "paper_exchange", "activities", "workflows", "workers", "signals_ingest", "api",
           "notifications", "qt", "local_stack", "tests", "benchmarks")

# package -> the project packages it must never import
FORBIDDEN = {
    "common": set(PROJECT) - {"common"},
    "trading": set(PROJECT) - {"trading"},
    # The adapter: settings from the bottom layer, nothing else of the project.
    "exchange": set(PROJECT) - {"exchange", "common"},
    # (the workflow reaches the exchange's typed records through activities/schemas only: no ccxt)
    "workflows": {"exchange", "workers", "signals_ingest", "api", "notifications", "qt", "paper_exchange", "tests",
                  "benchmarks"},
    "activities": {"workflows", "workers", "signals_ingest", "api", "notifications", "qt", "paper_exchange", "tests",
                   "benchmarks"},
    "workers": {"signals_ingest", "api", "notifications", "qt", "paper_exchange", "tests", "benchmarks"},
    "signals_ingest": {"workers", "api", "notifications", "qt", "paper_exchange", "tests", "benchmarks"},
    "notifications": {"workers", "signals_ingest", "api", "qt", "paper_exchange", "tests", "benchmarks"},
    "api": {"workers", "notifications", "qt", "paper_exchange", "tests", "benchmarks"},
    "paper_exchange": {"activities", "workflows", "workers", "signals_ingest", "api", "notifications", "qt", "tests",
                       "benchmarks"},
    # The processes tests and benchmarks start: no test code in them, so a benchmark needs no pytest.
    "local_stack": {"workflows", "workers", "signals_ingest", "api", "notifications", "qt", "tests", "benchmarks"},
    "benchmarks": {"tests"},
}
# The paper exchange's own benchmark measures it directly.
ALLOWED = {("benchmarks/paper_exchange.py", "paper_exchange")}


def imports_of(path: Path) -> set[str]:
    """Top-level project packages this module imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & set(PROJECT)


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_the_package_imports_only_downwards(package):
    wrong = []
    for path in modules(package):
        relative = str(path.relative_to(ROOT))
        for imported in sorted(imports_of(path) & FORBIDDEN[package]):
            if (relative, imported) not in ALLOWED:
                wrong.append(f"{relative} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_rules_cover_every_package_and_find_a_wrong_import(tmp_path):
    assert set(FORBIDDEN) | {"qt", "tests"} == set(PROJECT)
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from qt.launcher import x\n    import workers.registry\n")
    assert imports_of(sample) == {"qt", "workers"}  # local imports count too


def reads_of_info(path: Path) -> list[int]:
    """Lines that read `info` of a ccxt result: `x["info"]` or `x.get("info")`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "info":
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "info"):
            lines.append(node.lineno)
    return lines


def test_only_the_exchange_adapter_reads_the_raw_info_of_a_ccxt_result():
    # exchange/parse.py turns ccxt's dicts into typed records; the paper exchange is the other side.
    wrong = [f"{path.relative_to(ROOT)}:{line}" for package in PROJECT if package not in ("exchange", "paper_exchange",
                                                                                           "tests")
             for path in modules(package) for line in reads_of_info(path)]
    assert not wrong, wrong
