"""Risk policy of the gates (`QT_RISK_*`): what a trade intent must satisfy before anything is sent.

Defaults follow the old system where it had a number (confidence 0.55, cooldown 300 s, 2 % max
stop) and the SPEC elsewhere (stale after 120 s of market time, at most 1 % price deviation).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.settings import symbol_list
from trading.sizing import SizingPolicy


class RiskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QT_RISK_", extra="ignore")

    # Exchange symbol ids (BTCUSDT). Empty: every listed market is allowed.
    allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    min_confidence: float = Field(0.55, ge=0, le=1)
    cooldown_s: int = Field(300, ge=0)  # after a close, per symbol
    max_open_trades: int = Field(10, ge=0)
    max_total_exposure_usd: Decimal = Field(Decimal("50000"), gt=0)  # sum of |notional|
    min_free_margin_usd: Decimal = Field(Decimal("10"), ge=0)
    max_leverage: int = Field(20, ge=1, le=125)
    risk_per_trade: Decimal = Field(Decimal("0.01"), gt=0, le=1)
    max_notional_usd: Decimal | None = Decimal("5000")
    max_intent_age_s: float = Field(120, gt=0)
    # An intent stamped more than this many seconds of market time after the market clock is
    # refused (`future_intent`): a producer's clock or unit is wrong, and such an intent would
    # otherwise stay "fresh" for as long as it is early.
    max_intent_future_s: float = Field(5, ge=0)
    max_entry_deviation_pct: float = Field(1.0, gt=0)
    # An entry order sent later than this (wall seconds) after the gates, or by a retried
    # attempt, re-checks the deviation and the planned stop against the live price first.
    entry_recheck_after_s: float = Field(3.0, ge=0)
    # The market feed's latest price (`quantum:market:price:{symbol}`) is used instead of a
    # ticker call when the feed received it at most this long ago (wall clock); 0: never.
    feed_price_max_age_ms: int = Field(2_000, ge=0, le=3_600_000)

    @field_validator("allowlist", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return symbol_list(value)

    def sizing_policy(self) -> SizingPolicy:
        return SizingPolicy(
            risk_per_trade=self.risk_per_trade,
            max_notional_usd=self.max_notional_usd,
            max_leverage=self.max_leverage,
        )
