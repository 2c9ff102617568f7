"""Settings of the intent intake (`qt ingest`), read from `QT_INGEST_*` environment variables."""

from __future__ import annotations

import os
import socket

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.redis_keys import INTAKE_GROUP, TRADE_INTENT_DLQ_STREAM, TRADE_INTENT_STREAM
from common.task_queues import TRADE_WORKFLOWS


def default_consumer_name() -> str:
    """`host-pid`: unique per process, so several `qt ingest` run side by side. A restarted
    process gets a new name; its predecessor's pending entries are reclaimed by idle time."""
    return f"{socket.gethostname()}-{os.getpid()}"


class IntakeSettings(BaseSettings):
    """How the intake reads `quantum:stream:trade.intent` and starts TradeWorkflows."""

    model_config = SettingsConfigDict(env_prefix="QT_INGEST_", extra="ignore")

    stream: str = TRADE_INTENT_STREAM
    dlq_stream: str = TRADE_INTENT_DLQ_STREAM
    group: str = INTAKE_GROUP
    consumer: str = Field(default_factory=default_consumer_name, min_length=1, max_length=200)
    # Where a NEW group starts reading. "0": every entry already in the stream is handed to
    # Temporal once (old ones end REJECTED/stale in their workflow, visible, never executed).
    # "$": only entries written from now on.
    group_start_id: str = "0"

    # Where the TradeWorkflows go (a canary or test deployment may use its own queue).
    task_queue: str = Field(TRADE_WORKFLOWS, min_length=1)

    batch_size: int = Field(100, ge=1, le=10_000, description="entries per XREADGROUP")
    block_ms: int = Field(1_000, ge=10, le=60_000, description="XREADGROUP BLOCK when the stream is idle")
    max_in_flight: int = Field(64, ge=1, le=10_000, description="workflow starts running at once")
    start_timeout_s: float = Field(10.0, gt=0, le=300, description="RPC timeout of one workflow start")

    # Reclaiming: entries pending longer than this on a consumer that stopped refreshing them
    # (it died) are taken over with XAUTOCLAIM. Live consumers refresh their in-flight entries
    # every `claim_interval_s`, so this must be comfortably larger than that interval.
    claim_idle_ms: int = Field(10_000, ge=100, description="idle time before a pending entry is reclaimed")
    claim_interval_s: float = Field(2.0, gt=0, le=3_600, description="how often to reclaim / refresh")
    # An entry delivered this many times without being started or dead-lettered is treated as
    # poison (it keeps crashing its consumer): dead-lettered with that reason.
    max_deliveries: int = Field(20, ge=2, le=10_000)
    # Consumers with nothing pending and idle this long are removed from the group (the old
    # system showed 34 dead consumers nobody knew about).
    consumer_gc_s: float = Field(3_600.0, ge=60)

    # Temporal unreachable: back off exponentially (with jitter) between attempts, entries stay
    # pending. The first retry waits `backoff_initial_s`, then doubles up to `backoff_max_s`.
    backoff_initial_s: float = Field(0.2, gt=0, le=60)
    backoff_max_s: float = Field(10.0, gt=0, le=600)

    dlq_maxlen: int = Field(1_000_000, ge=1_000, description="approximate cap of the DLQ stream")
    # Longest original field value copied into a DLQ entry (a 1 MB junk field is cut, noted).
    dlq_max_value_bytes: int = Field(16_384, ge=256)

    # Intents already older than this (market time, as the feed or the wall clock tells it) are
    # started at Temporal's lowest task-queue priority, so a replayed backlog never delays a
    # fresh intent. Only the order changes: the workflow's stale gate still decides. 0 = off.
    # (env QT_INGEST_DEPRIORITIZE_AGE_S, as documented; the field name was never read from the env)
    deprioritize_after_s: float = Field(240.0, ge=0, validation_alias=AliasChoices(
        "QT_INGEST_DEPRIORITIZE_AGE_S", "deprioritize_after_s"))
    # An intent already stale at a market time the feed proves reached (older than the gates'
    # QT_RISK_MAX_INTENT_AGE_S: the same rule, `trading.intent.is_stale`) is started with that
    # proof: its workflow ends REJECTED in its first task, with no activity. false: the gates decide.
    decide_stale: bool = True

    # The exchange's symbol list (unknown symbols are dead-lettered) is refreshed this often.
    symbols_refresh_s: float = Field(300.0, ge=1)

    # Prometheus metrics of `qt ingest` (0: no HTTP server; the API's /metrics is separate).
    metrics_port: int = Field(9464, ge=0, le=65_535)
    stats_interval_s: float = Field(2.0, gt=0, le=300, description="how often stats go to Redis for `qt status`")

    @field_validator("group_start_id")
    @classmethod
    def _start_id(cls, value: str) -> str:
        value = value.strip()
        if value not in ("0", "$") and not value.replace("-", "").isdigit():
            raise ValueError("must be '0', '$' or a stream id like 1700000000000-0")
        return value

    @model_validator(mode="after")
    def _claim_after_refresh(self) -> IntakeSettings:
        if self.claim_idle_ms < 2 * self.claim_interval_s * 1000:
            raise ValueError(
                f"claim_idle_ms ({self.claim_idle_ms}) must be at least twice claim_interval_s "
                f"({self.claim_interval_s} s): a live consumer refreshes its entries only that often, "
                "so a shorter idle time would take entries away from consumers that are alive")
        return self
