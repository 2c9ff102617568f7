"""Wiring of one running paper exchange: settings → replay, engine, clock, store.

`sync()` brings matching up to the market clock (every request starts with it, and the
background ticker calls it); `flush()` persists what changed. The HTTP layer (app.py,
controls.py) only translates between requests and these calls.
"""

from __future__ import annotations

import time
from decimal import Decimal

from paper_exchange.config import DATA_DIR, PaperSettings
from paper_exchange.engine import Engine, Fees
from paper_exchange.models import Market
from paper_exchange.replay import CANDLE_MS, FundingRates, MarketClock, load_path, read_funding
from paper_exchange.store import Store


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class PaperExchange:
    def __init__(self, settings: PaperSettings) -> None:
        self.settings = settings
        self.store = Store(settings.database_path)
        self.markets = {s: Market.from_spec(s, spec) for s, spec in settings.symbols.items()}
        meta = self.store.meta()
        fresh = "clock" not in meta
        wall = wall_ms()
        if fresh:
            start = settings.start_ms if settings.start_ms is not None else wall
            self.clock = MarketClock(start, wall, settings.speed)
            self.epoch = start - start % CANDLE_MS
            processed = start
        else:
            c = meta["clock"]
            self.clock = MarketClock(c["anchor_market"], c["anchor_wall"], c["speed"])
            self.epoch = meta["epoch"]
            processed = meta["processed_ms"]
        paths, funding = {}, {}
        for symbol, spec in settings.symbols.items():
            path = load_path(DATA_DIR, spec.candles, spec.start_price, spec.price_scale,
                             spec.tick_size, self.epoch, spec.interval_ms)
            rows = read_funding(DATA_DIR / spec.funding) if spec.funding else None
            paths[symbol] = path
            funding[symbol] = FundingRates(path, rows, settings.default_funding_rate)
        self.paths = paths
        fees = Fees(Decimal(repr(settings.taker_fee_rate)), Decimal(repr(settings.maker_fee_rate)),
                    Decimal(repr(settings.slippage_bps)))
        self.engine = Engine(self.markets, paths, funding, fees,
                             Decimal(repr(settings.initial_balance)), settings.seed, processed)
        if fresh:
            self.engine.changes.meta = True
            self.flush()
        else:
            self.store.load_into(self.engine)
            if "speed" in settings.model_fields_set and settings.speed != self.clock.speed:
                # QT_PAPER_SPEED given explicitly on a restart: the saved clock keeps its
                # market time and changes pace from now on (matching catches up first).
                self.set_clock(speed=settings.speed)

    def now(self, wall: int | None = None) -> int:
        return self.clock.now(wall_ms() if wall is None else wall)

    def sync(self, wall: int | None = None) -> int:
        """Advance matching to the market clock; returns market now."""
        wall = wall_ms() if wall is None else wall
        now = self.clock.now(wall)
        self.engine.advance(now, wall)
        return now

    def flush(self, force: bool = False, wipe: bool = False) -> None:
        if force or wipe or self.engine.changes.material:
            self.store.flush(self.engine, self.engine.take_changes(), self.clock, self.epoch,
                             wipe=wipe)

    def set_clock(self, *, advance_ms: int | None = None, to_ms: int | None = None,
                  speed: float | None = None) -> None:
        wall = wall_ms()
        self.sync(wall)
        target = None
        if advance_ms is not None:
            if advance_ms < 0:
                raise ValueError("advance_ms must be ≥ 0")
            target = self.clock.now(wall) + advance_ms
        elif to_ms is not None:
            target = to_ms
        self.clock.rebase(wall, target, speed)
        self.sync(wall)
        self.flush(force=True)

    def reset(self) -> None:
        wall = wall_ms()
        self.sync(wall)
        self.engine.reset()
        self.flush(wipe=True)

    def close(self) -> None:
        self.store.close()
