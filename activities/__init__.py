"""Activities: every piece of I/O a workflow needs (exchange, Redis, market data)."""
