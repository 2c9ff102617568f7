"""Shared fixtures: every part of the stack really started (see tests/fixtures/)."""

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.paper", "tests.fixtures.trading"]
