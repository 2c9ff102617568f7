"""Configuration every process shares, read from `QT_*` env vars (pydantic-settings).

One class per concern, so each process reads only what it needs:
- `StackSettings` (`QT_`): where Temporal and Redis are, where local state lives.
- `ExchangeSettings` (`QT_EXCHANGE_`): which exchange ccxt talks to (paper, testnet or live), and
  where the paper exchange answers (`QT_PAPER_HOST`, `QT_PAPER_PORT`, its keys: the same
  variables the paper exchange itself reads in `paper_exchange/config.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

def symbol_list(value: object) -> object:
    """`BTCUSDT,ETHUSDT` or a JSON list → upper-case, trimmed, empties dropped (a `mode="before"`
    validator for the `*_SYMBOLS` / `*_ALLOWLIST` settings, declared with `NoDecode`)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            items = json.loads(text) if text.startswith("[") else text.split(",")
        except ValueError as exc:
            raise ValueError(f"not a comma-separated list or a JSON list: {exc}") from exc
        value = [str(s) for s in items]
    if isinstance(value, (list, tuple)):
        return [str(s).strip().upper() for s in value if str(s).strip()]
    return value


class StackSettings(BaseSettings):
    """Addresses of the parts of the stack. Defaults describe the embedded local stack."""

    model_config = SettingsConfigDict(env_prefix="QT_", extra="ignore")

    data_dir: Path = Field(Path(".data"), description="local state: SQLite, AOF, logs, pid files")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    # When set, `qt up` does not start a Temporal dev server: one runs elsewhere.
    temporal_external: bool = False

    # When set, `qt up` does not start redis-server and everything uses this URL.
    redis_url: str | None = None
    # Port of the redis-server the launcher starts. Not 6379, so the embedded stack never
    # collides with a system Redis that `apt-get install redis-server` may have started.
    redis_port: int = 6479

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Bearer token every mutating API call must carry.
    api_token: SecretStr | None = None

    # What `qt up` starts beside Temporal, Redis and the paper exchange (QT_UP_*):
    # workers: "all" = one `qt worker --queue all`, "per-queue" = one process per task queue,
    # "none" = no worker; the intake + market feed + signal engine (`qt ingest`); the API.
    up_workers: Literal["all", "per-queue", "none"] = "all"
    up_ingest: bool = True
    up_api: bool = True
    # How long a started child may take to show it works (a worker's poller in Temporal, the
    # intake's stats in Redis, the API's /health) before `qt up` reports it failed.
    up_ready_timeout_s: float = Field(60.0, gt=0, le=600)
    # `qt down`: SIGTERM, then SIGKILL after this long (workers: their activities in flight).
    down_timeout_s: float = Field(15.0, gt=0, le=600)
    down_worker_timeout_s: float = Field(30.0, gt=0, le=600)

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def temporal_ui_url(self) -> str:
        host = self.temporal_address.rsplit(":", 1)[0]
        return f"http://{host}:{self.temporal_ui_port}"


class ExchangeSettings(BaseSettings):
    """Which exchange the single ccxt client talks to.

    `paper` reaches the local paper exchange (address and keys from `PaperSettings`);
    `testnet` is Binance's futures demo trading; `live` is real money.
    """

    model_config = SettingsConfigDict(env_prefix="QT_EXCHANGE_", extra="ignore", populate_by_name=True)

    mode: Literal["paper", "testnet", "live"] = "paper"
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    # ccxt's own per-request timeout; activities add their own start-to-close timeouts.
    timeout_ms: int = Field(10_000, ge=100, le=120_000)
    recv_window_ms: int = Field(5_000, ge=1, le=60_000)
    # Where the paper exchange answers (mode "paper"), with its local keys: the same QT_PAPER_*
    # variables the paper exchange itself reads, so both ends agree with one setting.
    paper_host: str = Field("127.0.0.1", validation_alias="QT_PAPER_HOST")
    paper_port: int = Field(8100, ge=1, le=65_535, validation_alias="QT_PAPER_PORT")
    paper_api_key: str = Field("qt-paper-key", validation_alias="QT_PAPER_API_KEY")
    paper_api_secret: SecretStr = Field(SecretStr("qt-paper-secret"), validation_alias="QT_PAPER_API_SECRET")

    @property
    def paper_url(self) -> str:
        host = f"[{self.paper_host}]" if ":" in self.paper_host else self.paper_host
        return f"http://{host}:{self.paper_port}"
