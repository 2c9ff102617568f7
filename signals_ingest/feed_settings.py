"""Settings of the market feed (`QT_FEED_*`): which symbols, how often, how much is kept."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.settings import symbol_list


class FeedSettings(BaseSettings):
    """How the market feed polls the exchange (ccxt) and what it writes to Redis."""

    model_config = SettingsConfigDict(env_prefix="QT_FEED_", extra="ignore")

    # QT_FEED_SYMBOLS=BTCUSDT,NEAR/USDT:USDT (exchange ids or ccxt symbols) or a JSON list.
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="symbols to feed; empty: every USDT perpetual the exchange lists")
    venue: str | None = Field(
        None, min_length=1, max_length=40,
        description="the primary exchange's name in the streams; default: 'paper' for the paper "
                    "exchange, else ccxt's id (binanceusdm)")

    tick_interval_s: float = Field(1.0, gt=0, le=3_600, description="price poll interval")
    kline_interval_s: float = Field(2.0, gt=0, le=3_600,
                                    description="how often to look for newly closed candles")
    funding_interval_s: float = Field(60.0, gt=0, le=86_400, description="funding-rate poll interval")
    max_backoff_s: float = Field(30.0, gt=0, le=3_600,
                                 description="longest wait between polls after repeated failures")

    tick_maxlen: int = Field(100_000, ge=1_000, description="approximate cap of market.tick")
    klines_maxlen: int = Field(200_000, ge=1_000, description="approximate cap of market.klines")
    backfill_candles: int = Field(
        100, ge=0, le=100_000,
        description="closed candles published per symbol on a first start (nothing stored yet); "
                    "0: start with the next candle that closes")
    kline_page_limit: int = Field(500, ge=10, le=1_500,
                                  description="klines per request when catching up (Binance: ≤ 1500)")

    # A second Binance-compatible exchange (another paper exchange) whose price is written beside
    # the primary's as `price:{secondary_venue}` (cross-exchange divergence). Prices only.
    secondary_url: str | None = Field(None, description="http://host:port of a second venue")
    secondary_venue: str = Field("secondary", min_length=1, max_length=40)

    @field_validator("symbols", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return symbol_list(value)

    @field_validator("secondary_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        if parts.scheme != "http" or not parts.hostname or port is None:
            raise ValueError(f"expected http://host:port (a paper exchange), got {value!r}")
        return f"http://{parts.hostname}:{port}"

    @model_validator(mode="after")
    def _distinct_venues(self) -> FeedSettings:
        if self.secondary_url and self.venue == self.secondary_venue:
            raise ValueError(f"venue and secondary_venue are both {self.venue!r}")
        return self
