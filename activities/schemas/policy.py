"""The rules a TradeWorkflow trades by, read once at its start and carried in its state.

Workflows may not read the environment (replay must not depend on where it runs), so the
policy comes with the gate report (`run_gates`), is recorded in history, and travels through
continue-as-new unchanged: a trade keeps the rules it opened with even if the config changes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trading.exits import ExitPolicy, KillScoreWeights
from trading.levels import LevelPolicy
from trading.sizing import SizingPolicy


class MonitorPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Wall seconds one watch_position session may run before handing control back to the
    # workflow (continue-as-new check). Each session costs 6 history events: a quiet position
    # costs 6 per hour.
    session_cap_s: float = Field(3600.0, gt=0)
    heartbeat_interval_s: float = Field(2.0, gt=0)
    heartbeat_timeout_s: float = Field(20.0, gt=0)  # a dead monitor worker is noticed after this
    kill_score: bool = True
    kill_window: int = Field(48, ge=20, le=500)  # closed 5-minute candles per feature set


class TradePolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    levels: LevelPolicy = LevelPolicy()
    exits: ExitPolicy = ExitPolicy()
    sizing: SizingPolicy = SizingPolicy()
    kill_weights: KillScoreWeights = KillScoreWeights()
    kill_threshold: float = Field(0.7, gt=0)
    kill_age_horizon_s: float = Field(86_400.0, gt=0)
    cooldown_s: int = Field(300, ge=0)  # per symbol, after a close
    monitor: MonitorPolicy = MonitorPolicy()
    entry_fill_checks: int = Field(5, ge=1)  # times the entry order is re-read before giving up
    max_close_rounds: int = Field(5, ge=1)  # close orders sent before the trade is FAILED
