"""Task queue names: each scales on its own (SPEC: "Task queues, each scaled on its own")."""

TRADE_WORKFLOWS = "trade-workflows"  # TradeWorkflow and friends: orchestration only
TRADE_EXECUTION = "trade-execution"  # exchange orders, rate-limited
TRADE_MONITOR = "trade-monitor"  # many idle long-polls watching open positions
TRADE_MARKET = "trade-market"  # gates, market data

# (the learning issue adds a queue for feature building and LightGBM training, with its worker)
QUEUES: tuple[str, ...] = (TRADE_WORKFLOWS, TRADE_EXECUTION, TRADE_MONITOR, TRADE_MARKET)
ALL = "all"  # every queue in one process, for local use
