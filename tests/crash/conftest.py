"""Fixtures of the crash tests (see harness.py)."""

from tests.crash.harness import crash_rig  # noqa: F401 (a fixture)
