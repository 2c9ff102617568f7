"""The market: a clock and, per symbol, a deterministic price path replayed from real candles.

Pure apart from reading the CSV files once. Prices are integers in ticks of the symbol (the
candle values are scaled, then rounded to the tick), so nothing drifts off the price grid; a
point inside a path segment is a float in tick units.

Mapping of the files onto market time (documented choices):
- A file's candle interval (`step`) is the most common difference between consecutive open
  times, or the interval given in its SymbolSpec (then the file must agree). Supported: 1m and
  5m, the intervals that divide the exchange's 5-minute klines. A file whose open times do not
  increase, are off the interval's grid, or whose rows are not candles (high/low not around
  open/close, a price ≤ 0) is refused with a `CandleFileError` naming the file and line.
- Every row replays at its offset in the file: the row opened at `first_ts + d` opens at
  `epoch + d` (`epoch` = the clock's start rounded down to 5 minutes). A gap in the recording
  stays a gap in time, held flat at the previous close with zero volume (filler candles are
  inserted when the file is read), so nothing is collapsed or stretched.
- When the file runs out it starts again, scaled so the next pass opens at the previous pass's
  last close: the replay never ends and has no jump at the seam. A pass lasts the file's span,
  `last_ts + step - first_ts`.
- Inside a candle the price walks open → nearer extreme → other extreme → close as three
  straight segments (a tie in distance goes low-first for a candle closing at or above its
  open, else high-first). Segment durations are proportional to their price length (constant
  speed along the path), so a stop between open and low is crossed at a precise millisecond.
- Between one candle's close and the next open the price jumps at the boundary instant (a
  "gap" segment, zero duration): a stop crossed by a gap fills at the new open.
- Klines of any interval made of whole candles are aggregated from them (open of the first,
  highest high, lowest low, close of the last, summed volume): a 1m file's 5m klines are its
  rows five by five. Finer klines (1m or 3m of a 5m file) are read off the path.
"""

from __future__ import annotations

import csv
import logging
import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

log = logging.getLogger("paper_exchange")

CANDLE_MS = 5 * 60 * 1000  # the exchange's own candle: the epoch is aligned to it
FUNDING_INTERVAL_MS = 8 * 60 * 60 * 1000  # 00:00, 08:00, 16:00 UTC

INTERVAL_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
    "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
}


# Candle intervals a file may have: those that divide CANDLE_MS, so every 5m kline is made of
# whole rows and the 5m-aligned epoch is on the file's grid.
FILE_INTERVALS_MS = {"1m": 60_000, "5m": CANDLE_MS}


class CandleFileError(ValueError):
    """A candle file that cannot be replayed as it is; the message names the file and why."""


def interval_name(ms: int) -> str:
    for name, value in INTERVAL_MS.items():
        if value == ms:
            return name
    return f"{ms} ms"


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class RawCandles:
    """One CSV file as parallel columns of floats (prices in the file's own unit), one entry per
    `interval_ms` from `first_ts` on (gaps of the file filled with flat, zero-volume candles)."""

    first_ts: int
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]
    interval_ms: int = CANDLE_MS
    filled: int = 0  # candles missing from the file, held flat at the previous close

    def __len__(self) -> int:
        return len(self.open)


def read_candles(path: Path, interval_ms: int | None = None) -> RawCandles:
    """Read, check and gap-fill one candle file; `interval_ms`: the interval it must have
    (None: detect it as the most common difference between consecutive open times)."""
    times: list[int] = []
    values: list[tuple[float, float, float, float, float]] = []
    lines: list[int] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)  # header
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            try:
                ts = int(row[0])
                o, h, low, c, v = (float(x) for x in row[1:6])
            except ValueError:
                raise CandleFileError(
                    f"{path}: line {line}: expected timestamp_ms,open,high,low,close,volume "
                    f"(an integer and five numbers), got {','.join(row)!r}") from None
            if not all(map(math.isfinite, (o, h, low, c, v))) or min(o, h, low, c) <= 0 or v < 0:
                raise CandleFileError(f"{path}: line {line}: prices must be positive and the "
                                      f"volume non-negative")
            if h < max(o, c):
                raise CandleFileError(f"{path}: line {line}: high {h} is below the open/close "
                                      f"({o}, {c})")
            if low > min(o, c):
                raise CandleFileError(f"{path}: line {line}: low {low} is above the open/close "
                                      f"({o}, {c})")
            if times and ts <= times[-1]:
                raise CandleFileError(
                    f"{path}: line {line}: open time {ts} is not after the previous row's "
                    f"{times[-1]} (open times must increase, without duplicates)")
            times.append(ts)
            values.append((o, h, low, c, v))
            lines.append(line)
    if not times:
        raise CandleFileError(f"{path} has no candles")
    step = _file_interval(path, times, interval_ms)
    for ts, line in zip(times, lines):
        if ts % step:
            raise CandleFileError(
                f"{path}: line {line}: open time {ts} is not aligned to the "
                f"{interval_name(step)} grid of the file's candles (a multiple of {step} ms)")
    cols: tuple[list[float], ...] = ([], [], [], [], [])
    filled = gaps = 0
    prev_ts = times[0] - step
    for ts, row in zip(times, values):
        missing = (ts - prev_ts) // step - 1
        if missing:
            gaps += 1
            filled += missing
            flat = cols[3][-1]
            for col, value in zip(cols, (flat, flat, flat, flat, 0.0)):
                col.extend([value] * missing)
        for col, value in zip(cols, row):
            col.append(value)
        prev_ts = ts
    if filled:
        log.info("%s: %d gap(s), %d missing %s candle(s) held flat at the previous close",
                 path.name, gaps, filled, interval_name(step))
    return RawCandles(times[0], *cols, interval_ms=step, filled=filled)


def _file_interval(path: Path, times: list[int], given: int | None) -> int:
    supported = " or ".join(FILE_INTERVALS_MS)
    if given is not None and given not in FILE_INTERVALS_MS.values():
        raise CandleFileError(f"{path}: interval {interval_name(given)} is not supported: the "
                              f"paper exchange replays {supported} candle files")
    if len(times) < 2:
        if given is None:
            raise CandleFileError(f"{path} has one candle: its interval cannot be detected; "
                                  f"give it in the symbol's spec (`interval`: {supported})")
        return given
    counts = Counter(b - a for a, b in zip(times, times[1:]))
    top = max(counts.values())
    found = min(d for d, n in counts.items() if n == top)  # ties: the finest
    if given is not None and found != given:
        raise CandleFileError(
            f"{path}: interval given as {interval_name(given)} but the file's candles are "
            f"{interval_name(found)} apart (the most common difference between open times)")
    if found not in FILE_INTERVALS_MS.values():
        raise CandleFileError(
            f"{path}: the file's candles are {interval_name(found)} apart (the most common "
            f"difference between open times); the paper exchange replays {supported} candle "
            f"files (an interval that divides its 5-minute klines)")
    return found


def read_funding(path: Path) -> list[tuple[int, float]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return sorted((int(row[0]), float(row[1])) for row in reader if row)


@dataclass(frozen=True)
class Segment:
    """A straight piece of the path from (t0, p0) to (t1, p1); prices in ticks."""

    t0: int
    p0: float
    t1: int
    p1: float
    gap: bool  # the jump between a close and the next open: crossings fill at p1

    def price(self, lam: float) -> float:
        return self.p0 + (self.p1 - self.p0) * lam

    def lam_at(self, t: int) -> float:
        if self.t1 <= self.t0:
            return 1.0
        return min(1.0, max(0.0, (t - self.t0) / (self.t1 - self.t0)))

    def time_at(self, lam: float) -> int:
        # First millisecond at which the path has reached `lam` (the epsilon absorbs float noise).
        return self.t0 + math.ceil(lam * (self.t1 - self.t0) - 1e-9)


class SymbolPath:
    """The replayed price path of one symbol (candle index `i` counts from `epoch`, looping;
    candle `i` lasts `step`, the file's interval)."""

    def __init__(self, raw: RawCandles, ticks_per_unit: float, epoch_ms: int) -> None:
        if ticks_per_unit <= 0:
            raise ValueError("price scale must be positive")
        self.raw = raw
        self.n = len(raw)
        self.step = raw.interval_ms
        self.epoch = epoch_ms
        self._scales = [ticks_per_unit]  # pass k: ticks per file unit

    # -- passes and candles -------------------------------------------------------------------

    def scale(self, k: int) -> float:
        """Ticks per file unit for pass `k`: each pass opens where the previous one closed."""
        while len(self._scales) <= k:
            prev = self._scales[-1]
            last_close = max(1, round_half_up(self.raw.close[-1] * prev))
            self._scales.append(last_close / self.raw.open[0])
        return self._scales[k]

    def candle(self, i: int) -> tuple[int, int, int, int, float]:
        """(open, high, low, close) in ticks and the volume of candle `i`."""
        k, j = divmod(i, self.n)
        s = self.scale(k)
        raw = self.raw
        return (
            max(1, round_half_up(raw.open[j] * s)),
            max(1, round_half_up(raw.high[j] * s)),
            max(1, round_half_up(raw.low[j] * s)),
            max(1, round_half_up(raw.close[j] * s)),
            raw.volume[j],
        )

    def open_time(self, i: int) -> int:
        return self.epoch + i * self.step

    def index_at(self, t: int) -> int:
        return max(0, (t - self.epoch) // self.step)

    def vertices(self, i: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Times and prices of open → nearer extreme → other extreme → close."""
        o, h, low, c, _ = self.candle(i)
        up, down = h - o, o - low
        high_first = up < down or (up == down and c < o)
        e1, e2 = (h, low) if high_first else (low, h)
        lengths = (abs(e1 - o), abs(e2 - e1), abs(c - e2))
        total = sum(lengths)
        t0, step = self.open_time(i), self.step
        if total == 0:
            times = (t0, t0 + step // 3, t0 + 2 * step // 3, t0 + step)
        else:
            t1 = t0 + round_half_up(step * lengths[0] / total)
            t2 = t0 + round_half_up(step * (lengths[0] + lengths[1]) / total)
            times = (t0, t1, t2, t0 + step)
        return times, (o, e1, e2, c)

    def segment(self, i: int, k: int) -> Segment:
        """Segment `k` of candle `i`: 0 is the gap from the previous close, 1..3 the walk."""
        if k == 0:
            o = self.candle(i)[0]
            prev_close = self.candle(i - 1)[3] if i > 0 else o
            t = self.open_time(i)
            return Segment(t, float(prev_close), t, float(o), True)
        times, prices = self.vertices(i)
        return Segment(times[k - 1], float(prices[k - 1]), times[k], float(prices[k]), False)

    def position_at(self, t: int) -> tuple[int, int, float]:
        """(candle, segment, fraction) just after every path point at time ≤ t has been passed."""
        i = self.index_at(t)
        if t < self.epoch:
            return 0, 1, 0.0
        times, _ = self.vertices(i)
        for k in (1, 2, 3):
            if times[k] > t:
                t0, t1 = times[k - 1], times[k]
                return i, k, (t - t0) / (t1 - t0)
        return i + 1, 1, 0.0  # unreachable: times[3] is the next candle's open > t

    def price_at(self, t: int) -> float:
        i, k, lam = self.position_at(t)
        return self.segment(i, k).price(lam)

    def partial(self, i: int, t: int) -> tuple[int, int, int, int, float]:
        """Candle `i` as seen at time t (open ≤ t < close): extremes of the path so far."""
        times, prices = self.vertices(i)
        seen = [float(prices[0])]
        for k in (1, 2, 3):
            if times[k] <= t:
                seen.append(float(prices[k]))
            else:
                lam = (t - times[k - 1]) / (times[k] - times[k - 1])
                seen.append(prices[k - 1] + (prices[k] - prices[k - 1]) * lam)
                break
        volume = self.candle(i)[4] * (t - times[0]) / self.step
        hi, lo = max(seen), min(seen)
        return (prices[0], round_half_up(hi), round_half_up(lo), round_half_up(seen[-1]), volume)

    def ohlc_between(self, ta: int, tb: int, closed: bool) -> tuple[int, int, int, int, float]:
        """OHLCV of the path over [ta, tb] for intervals not made of whole candles (1m, 3m
        klines of a 5m file).

        `closed`: tb is the interval's end, so the close is the price just before tb (before a
        gap at tb); otherwise tb is "now" and the close is the price at tb.
        """
        points = [self.price_at(ta)]
        volume = 0.0
        i = self.index_at(ta)
        while self.open_time(i) <= tb:
            times, prices = self.vertices(i)
            if ta < times[0] < tb:
                points.append(float(self.candle(i - 1)[3]))  # both sides of the gap
                points.append(float(prices[0]))
            for k in (1, 2):
                if ta < times[k] < tb:
                    points.append(float(prices[k]))
            overlap = max(0, min(tb, times[3]) - max(ta, times[0]))
            volume += self.candle(i)[4] * overlap / self.step
            i += 1
        at_boundary = (tb - self.epoch) % self.step == 0 and tb > ta
        if closed and at_boundary:
            last = float(self.candle(self.index_at(tb) - 1)[3])
        else:
            last = self.price_at(tb)
        points.append(last)
        return (
            round_half_up(points[0]), round_half_up(max(points)), round_half_up(min(points)),
            round_half_up(last), volume,
        )

    def file_time(self, t: int) -> int:
        """The file's own timestamp that market time `t` replays (for aligned funding rates)."""
        span = self.n * self.step
        return self.raw.first_ts + (max(0, t - self.epoch) % span)


def klines(
    path: SymbolPath, interval: str, now: int, start: int | None, end: int | None, limit: int
) -> list[tuple[int, int, int, int, int, float, int]]:
    """Binance kline rows (open time, o, h, l, c, volume, close time); the last may be partial.

    Only time that has happened is served: a candle whose close time is after `now` is the
    current, partial one. Open times are aligned to the interval in UTC, like Binance's.
    """
    step = INTERVAL_MS[interval]
    first = (path.epoch // step) * step
    last = (now // step) * step
    if end is not None:
        last = min(last, (end // step) * step)
    if start is not None:
        lo = max(first, -(-start // step) * step)
        opens = range(lo, min(last, lo + (limit - 1) * step) + 1, step)
    else:
        opens = range(max(first, last - (limit - 1) * step), last + 1, step)
    rows = []
    for o_time in opens:
        c_time = o_time + step - 1
        rows.append((o_time, *_aggregate(path, max(o_time, path.epoch), o_time + step, now), c_time))
    return rows


def _aggregate(path: SymbolPath, ta: int, tb: int, now: int) -> tuple[int, int, int, int, float]:
    """OHLCV over [ta, tb), cut at `now` for the current interval: aggregated from the candles
    when [ta, tb) is made of whole ones, else read off the path."""
    closed = tb <= now
    if (tb - ta) % path.step or (ta - path.epoch) % path.step:
        return path.ohlc_between(ta, tb if closed else now, closed)
    end_i = path.index_at(tb) if closed else path.index_at(now)
    parts = [path.candle(i) for i in range(path.index_at(ta), end_i)]
    if not closed:
        parts.append(path.partial(end_i, now))
    return (
        parts[0][0], max(p[1] for p in parts), min(p[2] for p in parts), parts[-1][3],
        sum(p[4] for p in parts),
    )


class FundingRates:
    """Funding rate at a market time: the file's rate at the replay-aligned time, else default."""

    def __init__(self, path: SymbolPath, rows: list[tuple[int, float]] | None, default: float):
        self.path = path
        self.times = [ts for ts, _ in rows] if rows else []
        self.rates = [rate for _, rate in rows] if rows else []
        self.default = default

    def rate_at(self, t: int) -> Decimal:
        if not self.times:
            return Decimal(repr(self.default))
        idx = bisect_right(self.times, self.path.file_time(t)) - 1
        return Decimal(repr(self.rates[idx])) if idx >= 0 else Decimal(repr(self.default))


def funding_times(after: int, until: int) -> list[int]:
    """Funding instants T (multiples of 8 h UTC) with after < T ≤ until."""
    first = (after // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
    return list(range(first, until + 1, FUNDING_INTERVAL_MS))


def next_funding_time(t: int) -> int:
    return (t // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS


class MarketClock:
    """market_ms = anchor_market + (wall - anchor_wall) * speed; never runs backwards."""

    def __init__(self, anchor_market: int, anchor_wall: int, speed: float) -> None:
        self.anchor_market = anchor_market
        self.anchor_wall = anchor_wall
        self.speed = speed

    def now(self, wall_ms: int) -> int:
        return self.anchor_market + int((wall_ms - self.anchor_wall) * self.speed)

    def rebase(self, wall_ms: int, market_ms: int | None = None, speed: float | None = None):
        current = self.now(wall_ms)
        target = current if market_ms is None else market_ms
        if target < current:
            raise ValueError(f"the market clock cannot go back ({target} < {current})")
        self.anchor_market, self.anchor_wall = target, wall_ms
        if speed is not None:
            if speed < 0:
                raise ValueError("speed must be ≥ 0")
            self.speed = speed


def load_path(data_dir: Path, file_name: str, start_price: Decimal | None,
              price_scale: Decimal | None, tick: Decimal, epoch_ms: int,
              interval_ms: int | None = None) -> SymbolPath:
    """The path of one candle file (`file_name` relative to `data_dir`, or absolute);
    `interval_ms`: the interval the file must have, None = detected from its timestamps."""
    raw = read_candles(data_dir / file_name, interval_ms)
    if start_price is not None:
        units = float(start_price / tick) / raw.open[0]
    else:
        units = float((price_scale or Decimal(1)) / tick)
    return SymbolPath(raw, units, epoch_ms)
