"""Fixtures of the crash tests (see harness.py), and the session's entry-to-stop gaps."""

from tests.crash.harness import GAPS, RESTARTS, crash_rig  # noqa: F401 (a fixture)


def pytest_terminal_summary(terminalreporter) -> None:
    if not GAPS:
        return
    terminalreporter.section("crash tests: entry fill -> first stop resting (exchange wall clock)")
    for test, gap in GAPS.items():
        restarts = ", ".join(f"{s:.1f} s" for s in RESTARTS.get(test, []))
        terminalreporter.write_line(f"{test:<60} {gap if gap is not None else '-':>6} ms"
                                    + (f"   (worker restart {restarts})" if restarts else ""))
