"""Settings of the paper exchange, read from `QT_PAPER_*` environment variables.

The defaults describe a local, single-user exchange: a documented key pair (`qt-paper-key` /
`qt-paper-secret`, not secrets: the server only listens on 127.0.0.1), 10,000 USDT, and seven
USDT-M perpetuals whose prices replay real 5-minute candles (see `paper_exchange/data/README.md`).
`QT_PAPER_SYMBOLS` (JSON, symbol → SymbolSpec) replaces the seven; `QT_PAPER_EXTRA_SYMBOLS` (same
shape) is merged over them (or over `QT_PAPER_SYMBOLS`): it adds symbols, or replaces one by name.

`speed` and `start_ms` apply at the first start only (an empty database); afterwards the clock
anchor and speed persisted in SQLite win, so a restart continues the same market clock.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings import ExchangeSettings
from paper_exchange.replay import FILE_INTERVALS_MS

DATA_DIR = Path(__file__).resolve().parent / "data" / "ohlcv"


class SymbolSpec(BaseModel):
    """One USDT-M perpetual: which candle file it replays, at which price level, its filters.

    The replay scale is `start_price / first open of the file` when `start_price` is set, else
    `price_scale` (1 = the file's own prices). Scaled prices are rounded to `tick_size`.
    `price_precision` / `quantity_precision` are exchangeInfo's `pricePrecision` /
    `quantityPrecision`: the most decimals a request may carry (more → -1111). As on Binance they
    need not equal the tick/step decimals (Binance's BTCUSDT: pricePrecision 2, tickSize 0.10);
    when they exceed them, a value within precision but off the grid gets -4014 / -4023.
    `interval` is the candle interval of the file ("1m" or "5m"); unset, it is detected from the
    file's timestamps. Given, the file must agree, else the exchange refuses to start.
    """

    candles: str = Field(description="file name in paper_exchange/data/ohlcv/, or absolute path")
    interval: str | None = Field(None, description="the file's candle interval; None = detected")
    start_price: Decimal | None = None
    price_scale: Decimal | None = None
    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal
    max_qty: Decimal = Decimal("1000000")
    max_leverage: int = Field(ge=1, le=125)
    maint_margin_rate: Decimal = Decimal("0.01")
    funding: str | None = Field(None, description="funding-rate file in data/ohlcv/, else default")
    price_precision: int | None = None
    quantity_precision: int | None = None

    @model_validator(mode="after")
    def _check(self) -> SymbolSpec:
        if self.interval is not None and self.interval not in FILE_INTERVALS_MS:
            raise ValueError(f"interval {self.interval!r}: candle files are "
                             f"{' or '.join(FILE_INTERVALS_MS)}")
        if self.start_price is not None and self.price_scale is not None:
            raise ValueError("set start_price or price_scale, not both")
        for name in ("tick_size", "step_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.price_precision is None:
            self.price_precision = _decimals(self.tick_size)
        if self.quantity_precision is None:
            self.quantity_precision = _decimals(self.step_size)
        if self.price_precision < _decimals(self.tick_size):
            raise ValueError("price_precision cannot be below the tick size's decimals")
        if self.quantity_precision < _decimals(self.step_size):
            raise ValueError("quantity_precision cannot be below the step size's decimals")
        return self

    @property
    def interval_ms(self) -> int | None:
        return FILE_INTERVALS_MS[self.interval] if self.interval is not None else None


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def default_symbols() -> dict[str, SymbolSpec]:
    d = Decimal
    return {
        "BTCUSDT": SymbolSpec(
            candles="ETHBTC-5m.csv", start_price=d("63000"), tick_size=d("0.1"),
            step_size=d("0.001"), min_notional=d("100"), max_qty=d("1000"), max_leverage=125,
            maint_margin_rate=d("0.004"), price_precision=2,
        ),
        "ETHUSDT": SymbolSpec(
            candles="LTCBTC-5m.csv", start_price=d("3400"), tick_size=d("0.01"),
            step_size=d("0.001"), min_notional=d("20"), max_qty=d("10000"), max_leverage=100,
            maint_margin_rate=d("0.005"),
        ),
        "NEARUSDT": SymbolSpec(
            candles="ADABTC-5m.csv", start_price=d("1.465"), tick_size=d("0.001"),
            step_size=d("1"), min_notional=d("5"), max_leverage=50, maint_margin_rate=d("0.01"),
        ),
        "XRPUSDT": SymbolSpec(
            candles="XRPUSDT-5m.csv", price_scale=d("1"), tick_size=d("0.0001"),
            step_size=d("0.1"), min_notional=d("5"), max_leverage=75,
            maint_margin_rate=d("0.005"), funding="XRPUSDT-8h-funding.csv",
        ),
        "FHEUSDT": SymbolSpec(
            candles="TRXBTC-5m.csv", start_price=d("0.12433"), tick_size=d("0.00001"),
            step_size=d("1"), min_notional=d("5"), max_qty=d("10000000"), max_leverage=20,
            maint_margin_rate=d("0.025"),
        ),
        "XLMUSDT": SymbolSpec(
            candles="XLMBTC-5m.csv", start_price=d("0.2610"), tick_size=d("0.00001"),
            step_size=d("1"), min_notional=d("5"), max_qty=d("10000000"), max_leverage=50,
            maint_margin_rate=d("0.01"),
        ),
        # quantity_precision 3 with step 0.01: 0.015 is within precision but off the step grid
        # (-4023), the way Binance's BTCUSDT price precision 2 / tick 0.1 allows -4014.
        "DASHUSDT": SymbolSpec(
            candles="DASHBTC-5m.csv", start_price=d("27.50"), tick_size=d("0.01"),
            step_size=d("0.01"), min_notional=d("5"), max_qty=d("100000"), max_leverage=50,
            maint_margin_rate=d("0.01"), quantity_precision=3,
        ),
    }


class PaperSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QT_PAPER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8100
    # Local defaults, documented on purpose: the paper exchange holds no real funds.
    api_key: str = "qt-paper-key"
    api_secret: str = "qt-paper-secret"

    data_dir: Path = Path(".data")
    db_path: Path | None = Field(None, description="default: data_dir/paper/exchange.sqlite")

    speed: float = Field(1.0, ge=0, description="market ms per wall ms; 0 = only /_paper/clock")
    start_ms: int | None = Field(None, description="market time at first start; None = now")
    seed: int = 7
    initial_balance: float = Field(10_000, gt=0)
    taker_fee_rate: float = Field(0.0004, ge=0)
    maker_fee_rate: float = Field(0.0002, ge=0)
    slippage_bps: float = Field(0, ge=0, description="max seeded slippage of MARKET fills")
    default_funding_rate: float = 0.0001
    tick_interval_ms: int = Field(100, ge=1, description="background replay step (wall ms)")
    recv_window_max_ms: int = 60_000
    # binance: a client id is "unique among open orders" (Binance's rule; reusable once its
    # order filled, was cancelled or expired); never: refused forever once used (stricter).
    client_id_reuse: Literal["binance", "never"] = "binance"
    symbols: dict[str, SymbolSpec] = Field(
        default_factory=default_symbols, description="replaces the default symbols")
    extra_symbols: dict[str, SymbolSpec] = Field(
        default_factory=dict, description="merged over `symbols`: added, or replacing by name")

    @model_validator(mode="after")
    def _merge_extra_symbols(self) -> PaperSettings:
        if self.extra_symbols:
            self.symbols = {**self.symbols, **self.extra_symbols}
        return self

    @property
    def database_path(self) -> Path:
        return self.db_path or self.data_dir / "paper" / "exchange.sqlite"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client_settings(self, **fields: Any) -> ExchangeSettings:
        """The exchange settings of a ccxt client for this paper exchange (its address and keys)."""
        return ExchangeSettings(mode="paper", paper_host=self.host, paper_port=self.port,
                                paper_api_key=self.api_key, paper_api_secret=self.api_secret, **fields)
