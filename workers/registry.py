"""Which workflows and activities each task queue serves, built from shared dependencies.

One table for `qt worker`, the tests and the benchmarks, so they all run the same wiring.
Heavy modules (ccxt, redis) are imported only by the queues that need them, and only when a
worker of that queue starts. A `trade-workflows` worker holds Redis and the market-data client
for one reason: it runs the gates as a local activity, inside the trade's first workflow task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.task_queues import TRADE_EXECUTION, TRADE_MARKET, TRADE_MONITOR, TRADE_WORKFLOWS


class WorkerSettings(BaseSettings):
    """Concurrency per queue (`QT_WORKER_*`): each queue scales on its own."""

    model_config = SettingsConfigDict(env_prefix="QT_WORKER_", extra="ignore")

    workflow_tasks: int = Field(100, ge=1)
    execution_activities: int = Field(20, ge=1)
    # Orders per second across ALL execution workers (enforced by the Temporal server), kept
    # under the exchange's order rate limit. 0 = no limit.
    execution_rate_per_s: float = Field(20.0, ge=0)
    monitor_activities: int = Field(2000, ge=1)  # idle long-polls: cheap, one per open position
    market_activities: int = Field(50, ge=1)
    monitor_poll_s: float = Field(0.1, gt=0)  # the PriceHub's price poll (reaction time)
    # Seconds a stopping worker lets running order/gate activities finish (under `qt down`'s
    # 30 s before SIGKILL); monitor sessions are read-only and end at once.
    shutdown_grace_s: float = Field(20.0, ge=0, le=300)


@dataclass
class Dependencies:
    """What the activities talk to. `None` = the production default, created on first use."""

    # Market data (PriceHub, market and gate activities): a ccxt client or a zero-arg async
    # factory (exchange.client); None = the process's `market` client.
    exchange: Any = None
    # Order activities: their own client, so an order never queues behind the market-data
    # client's polls in its throttle. None = the process's `orders` client, or, when a test
    # injected one `exchange`, that same client.
    order_exchange: Any = None
    redis: Any = None  # redis.asyncio client
    policy: Any = None  # activities.schemas.policy.TradePolicy, pinned (tests, benchmarks)
    risk: Any = None  # activities.risk_settings.RiskSettings (None: from QT_RISK_*)
    hub: Any = None  # activities.price_hub.PriceHub
    gates: Any = None  # activities.gates.GateActivities, built once per process (`_gates`)
    temporal: Any = None  # temporalio.client.Client (reconcile reads visibility); set by build_workers
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    _closers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._exchange_injected = self.exchange is not None

    def exchange_source(self) -> Any:
        if self.exchange is None:
            from exchange.client import shared_market_exchange
            self.exchange = shared_market_exchange
        return self.exchange

    def order_exchange_source(self) -> Any:
        if self.order_exchange is None:
            if self._exchange_injected:
                self.order_exchange = self.exchange  # one injected client (tests) serves both
            else:
                from exchange.client import shared_order_exchange
                self.order_exchange = shared_order_exchange
        return self.order_exchange

    def redis_client(self) -> Any:
        if self.redis is None:
            import redis.asyncio as aioredis

            from common.settings import StackSettings
            self.redis = aioredis.from_url(StackSettings().effective_redis_url, decode_responses=True)
            self._closers.append(self.redis.aclose)
        return self.redis

    def price_hub(self) -> Any:
        if self.hub is None:
            from activities.price_hub import PriceHub
            self.hub = PriceHub(self.exchange_source(), poll_interval_s=self.settings.monitor_poll_s)
            self._closers.append(self.hub.close)
        return self.hub

    def on_close(self, closer: Any) -> None:
        """`closer()` (async) runs at `close`, before the clients created so far are closed."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        self._closers.clear()


def workflows_for(queue: str) -> list[type]:
    if queue == TRADE_WORKFLOWS:
        from workflows.reconcile import ReconcileWorkflow
        from workflows.trade import TradeWorkflow
        return [TradeWorkflow, ReconcileWorkflow]
    return []


def _gates(deps: Dependencies) -> Any:
    """The process's one GateActivities (shared by the workflow and market queues' workers)."""
    if deps.gates is None:
        from activities.gates import GateActivities
        from activities.market import MarketActivities
        from activities.policy import PolicyActivities
        from activities.risk_settings import RiskSettings
        risk = deps.risk or RiskSettings()
        policy = PolicyActivities(risk=risk, policy=deps.policy)
        market = MarketActivities(deps.exchange_source())
        deps.gates = GateActivities(deps.redis_client(), risk, deps.exchange_source(), policy=policy.policy,
                                    features=market.features)
    return deps.gates


def activities_for(queue: str, deps: Dependencies) -> list:
    if queue == TRADE_EXECUTION:
        from activities.orders import OrderActivities
        from activities.entry import EntryActivities
        from activities.amend import AmendActivities
        from activities.reconcile import ReconcileActivities
        from activities.circuit_breaker import CircuitBreaker
        orders = OrderActivities(deps.order_exchange_source(), breaker=CircuitBreaker(deps.redis_client()))
        entry, amend = EntryActivities(orders), AmendActivities(orders)
        # Reconciliation reads the account with the order client (signed calls, its throttle)
        # and visibility with the worker's Temporal client.
        reconcile = ReconcileActivities(orders, deps.redis_client(), deps.temporal,
                                        _gates(deps).release_symbol_lock)
        return [orders.place_order, entry.open_position, amend.amend_position, orders.get_order,
                orders.cancel_order, orders.close_position, orders.get_position, orders.get_fills,
                reconcile.reconcile_snapshot, reconcile.reconcile_act, reconcile.publish_reconcile_report]
    if queue == TRADE_MONITOR:
        from activities.feedback import FeedbackActivities
        from activities.monitor import MonitorActivities
        monitor = MonitorActivities(deps.price_hub(), FeedbackActivities(deps.redis_client()).record_position)
        deps.on_close(monitor.close)
        return [monitor.watch_position]
    if queue == TRADE_MARKET:
        from activities.feedback import FeedbackActivities
        gates = _gates(deps)
        feedback = FeedbackActivities(deps.redis_client(), release_lock=gates.release_symbol_lock)
        return [gates.release_symbol_lock, feedback.record_close]
    if queue == TRADE_WORKFLOWS:
        # The gates run as a LOCAL activity of the TradeWorkflow (workflows/activity_calls.py),
        # inside the workflow task that starts the trade: no dispatch round trip before the
        # entry, one history event. The workflow worker therefore holds Redis and the
        # market-data client too (created on first use).
        return [_gates(deps).run_gates]
    raise ValueError(f"unknown task queue {queue!r}")


def worker_options(queue: str, settings: WorkerSettings) -> dict[str, Any]:
    """Concurrency and rate limits per queue (Worker keyword arguments)."""
    if queue == TRADE_WORKFLOWS:
        # Its activities (the gates) run as local activities only: nothing polls for remote ones.
        return {"max_concurrent_workflow_tasks": settings.workflow_tasks, "no_remote_activities": True}
    if queue == TRADE_EXECUTION:
        # On SIGTERM (`qt down`, a rolling deploy) an order in flight finishes rather than being
        # cut off (its retry would look it up anyway, but a clean finish keeps the gap short).
        opts: dict[str, Any] = {"max_concurrent_activities": settings.execution_activities,
                                "graceful_shutdown_timeout": timedelta(seconds=settings.shutdown_grace_s)}
        if settings.execution_rate_per_s > 0:
            opts["max_task_queue_activities_per_second"] = settings.execution_rate_per_s
        return opts
    if queue == TRADE_MONITOR:
        return {"max_concurrent_activities": settings.monitor_activities}
    return {"max_concurrent_activities": settings.market_activities,
            "graceful_shutdown_timeout": timedelta(seconds=settings.shutdown_grace_s)}
