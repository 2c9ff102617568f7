"""The trading rules from `QT_TRADE_*` and `QT_RISK_*`, as one value: the gates hand it to each
TradeWorkflow in their report (see `activities/schemas/policy.py`)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.risk_settings import RiskSettings
from activities.schemas.policy import MonitorPolicy, TradePolicy
from trading.exits import ExitPolicy
from trading.levels import LevelPolicy


class TradeSettings(BaseSettings):
    """Exit and monitoring knobs (`QT_TRADE_*`); sizing and gates live in `RiskSettings`."""

    model_config = SettingsConfigDict(env_prefix="QT_TRADE_", extra="ignore")

    max_hold_s: float | None = Field(72 * 3600.0, gt=0)  # market time; empty = no limit
    trailing_callback_pct: Decimal = Field(Decimal("0.008"), gt=0, lt=1)  # old config: 0.8 %
    break_even_after_tp: int = Field(1, ge=1)
    trailing_after_tp: int = Field(1, ge=1)
    kill_score: bool = True
    kill_threshold: float = Field(0.7, gt=0)
    session_cap_s: float = Field(3600.0, gt=0)  # one monitor session (6 history events) per quiet hour
    heartbeat_timeout_s: float = Field(20.0, ge=2)

    def policy(self, risk: RiskSettings) -> TradePolicy:
        return TradePolicy(
            levels=LevelPolicy(trailing_callback_pct=self.trailing_callback_pct),
            exits=ExitPolicy(max_hold_s=self.max_hold_s, break_even_after_tp=self.break_even_after_tp,
                             trailing_after_tp=self.trailing_after_tp),
            sizing=risk.sizing_policy(),
            kill_threshold=self.kill_threshold,
            cooldown_s=risk.cooldown_s,
            monitor=MonitorPolicy(session_cap_s=self.session_cap_s, kill_score=self.kill_score,
                                  heartbeat_timeout_s=self.heartbeat_timeout_s,
                                  heartbeat_interval_s=min(2.0, self.heartbeat_timeout_s / 4)),
        )


class PolicyActivities:
    def __init__(self, trade: TradeSettings | None = None, risk: RiskSettings | None = None,
                 policy: TradePolicy | None = None) -> None:
        # `policy` wins when given (tests and benchmarks pin exact rules).
        self.policy = policy or (trade or TradeSettings()).policy(risk or RiskSettings())
