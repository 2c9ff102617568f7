"""Settings of the signal engine, read from `QT_SIGNAL_*` environment variables.

The default confidence threshold, 0.65, is chosen for the shipped model (`models/signal_lgbm`):
with the 15-minute cooldown it gives about 14 intents per symbol-day over the whole shipped replay
(13.6; 14.5 over the validation period, where the model's hit rate at that confidence is 0.65
against an overall accuracy of 0.55); 0.62 would give ~30, 0.68 ~5. It is above the risk gate's
`QT_RISK_MIN_CONFIDENCE` (0.55), so every intent published can pass that gate. The fallback rule
uses the same threshold (its confidence reaches 0.65 at trend strength 0.6: about 1.3 intents per
symbol-day on the same candles). A retrained model may be calibrated differently: `python -m
signals_ingest.train_model` prints intents per symbol-day by threshold, to re-pick it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.settings import symbol_list
from trading.signal_rules import MAX_GAP_CANDLES

ROOT = Path(__file__).resolve().parents[1]
# The model trained on the shipped candles (python -m signals_ingest.train_model).
DEFAULT_MODEL_PATH = ROOT / "models" / "signal_lgbm" / "model.txt"
_DISABLED = {"", "none", "off", "fallback", "null"}


class SignalSettings(BaseSettings):
    """How the signal engine turns closed candles into signals and trade intents."""

    model_config = SettingsConfigDict(env_prefix="QT_SIGNAL_", extra="ignore", protected_namespaces=())

    model_path: Path | None = Field(
        DEFAULT_MODEL_PATH,
        description="LightGBM model.txt (model.json beside it); empty or 'none' = fallback rule only. "
                    "A relative path is taken from the project root, not the working directory.",
    )
    model_check_s: float = Field(10.0, gt=0, le=3_600, description="how often the model files are checked for a replacement")
    confidence_threshold: float = Field(0.65, ge=0, le=1, description="publish an intent at or above this confidence")
    cooldown_s: float = Field(900.0, ge=0, description="market time between two intents of one symbol")
    position_size_usd: Decimal = Field(Decimal("200"), gt=0, description="intent position_size_usd (the old bot's 200)")
    leverage: int = Field(10, ge=1, le=125, description="intent leverage (the old bot's 10)")
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="exchange ids to evaluate (BTCUSDT,ETHUSDT); empty = every symbol seen")
    window: int = Field(48, ge=20, le=1_000, description="candles per feature computation (the trade workflow's 48)")
    interval: str = Field("5m", pattern=r"^[1-9][0-9]*[mh]$",
                          description="kline interval the engine evaluates (the model is trained on 5m); others are ignored")
    max_gap_candles: int = Field(
        MAX_GAP_CANDLES, ge=0, description="more missing candles than this between two restarts the symbol's window")
    publish_intents: bool = Field(True, description="False: write ai.signal_generated only, no trade intents")
    signal_maxlen: int = Field(100_000, ge=1_000, description="approximate cap of quantum:stream:ai.signal_generated")
    # A candle older than this (market time: its close vs the latest price hash's `timestamp`) is
    # evaluated and recorded but gets no intent: the trade gate would reject it as stale anyway
    # (QT_RISK_MAX_INTENT_AGE_S, 120). 0 = no check.
    max_candle_age_s: float = Field(120.0, ge=0, description="no intent for a candle closed longer ago than this (market time)")
    divergence_max_age_s: float = Field(
        60.0, gt=0, description="a second venue's price older than this (vs the primary's) gives divergence 0")
    batch_size: int = Field(500, ge=1, le=10_000, description="klines entries per XREAD")
    block_ms: int = Field(1_000, ge=10, le=60_000, description="XREAD BLOCK when the stream is idle")
    warmup_max_entries: int = Field(
        200_000, ge=1_000, description="at most this many klines entries are read back at start to fill the windows")

    @field_validator("model_path", mode="before")
    @classmethod
    def _model_path(cls, value: object) -> object:
        if value is None:
            return None
        text = str(value).strip()
        if text.lower() in _DISABLED:
            return None
        path = Path(text).expanduser()
        return path if path.is_absolute() else ROOT / path

    @field_validator("symbols", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return symbol_list(value)

    @property
    def cooldown_ms(self) -> int:
        return int(self.cooldown_s * 1000)

    @property
    def interval_ms(self) -> int:
        return int(self.interval[:-1]) * (60_000 if self.interval.endswith("m") else 3_600_000)
