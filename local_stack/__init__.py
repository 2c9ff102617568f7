"""Real processes of the local stack for the tests and the benchmarks (the paper exchange,
redis-server, free ports, intent fields), with no pytest in them: `tests/fixtures/` wraps them
in fixtures, `benchmarks/` uses them as they are."""
