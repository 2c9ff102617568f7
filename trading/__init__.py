"""Pure trading rules, no I/O: shared by workflows (deterministic) and activities alike.

Nothing in this package may import ccxt, redis, numpy, lightgbm or touch the clock or network,
so every function here can run inside Temporal's workflow sandbox and in property tests.
"""
