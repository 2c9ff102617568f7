"""Where the price path meets resting orders: the first crossing of every level along the path.

Pure logic. A `Watch` is anything on a symbol that reacts to price (a resting LIMIT, a stop, a
take-profit, a trailing stop, the position's liquidation price). A `Walker` moves one symbol
along its replay path and stops at the first point where a watch fires, so the engine can
process that event and carry on from exactly there: events are handled in path order even
when several happen inside one candle.

Speed: a candle whose [low, high] lies strictly inside the symbol's "band" (the interval in
which no watch can fire) is skipped with two comparisons on the raw file values, whatever the
number of resting orders; only candles that reach a level are walked segment by segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from paper_exchange.replay import Segment, SymbolPath, round_half_up

INF = math.inf
LE, GE = -1, 1  # fires when price ≤ level / ≥ level


@dataclass(frozen=True)
class Hit:
    lam: float
    fill: int  # ticks
    at_start: bool  # the condition already held where the scan started


class Watch:
    """Base: `target` tells the engine what to do, `rank` orders simultaneous hits."""

    __slots__ = ("target", "rank")

    def __init__(self, target: tuple[str, Any], rank: tuple) -> None:
        self.target = target
        self.rank = rank

    def first_hit(self, seg: Segment, lam0: float, lam1: float) -> Hit | None:
        raise NotImplementedError

    def pass_over(self, seg: Segment, lam0: float, lam1: float) -> None:
        """Update path-dependent state over [lam0, lam1] where nothing fired."""

    def band(self) -> tuple[float, float]:
        """(lo, hi): this watch can fire (or change) only where price ≤ lo or price ≥ hi."""
        raise NotImplementedError


class LevelWatch(Watch):
    """A fixed level. `limit` fills at the level always (a resting maker order); a stop fills at
    the level when the path crosses it continuously, at the new price after a gap, and at the
    current price when the condition already held (e.g. after funding moved a liquidation price).
    """

    __slots__ = ("direction", "level", "limit")

    def __init__(self, target, rank, direction: int, level: float, limit: bool) -> None:
        super().__init__(target, rank)
        self.direction = direction
        self.level = level
        self.limit = limit

    def first_hit(self, seg: Segment, lam0: float, lam1: float) -> Hit | None:
        level, direction = self.level, self.direction
        p = seg.p0 + (seg.p1 - seg.p0) * lam0
        if (p <= level) if direction == LE else (p >= level):
            fill = round_half_up(level) if self.limit else round_half_up(p)
            return Hit(lam0, fill, True)
        end = seg.p1
        crosses = (end < p and end <= level) if direction == LE else (end > p and end >= level)
        if not crosses:
            return None
        lam = max(lam0, (level - seg.p0) / (seg.p1 - seg.p0))
        if lam > lam1:
            return None
        if self.limit:
            fill = round_half_up(level)
        elif seg.gap:
            fill = round_half_up(seg.p1)
        else:
            fill = round_half_up(level)
        return Hit(lam, fill, False)

    def band(self) -> tuple[float, float]:
        return (self.level, INF) if self.direction == LE else (-INF, self.level)


class TrailingWatch(Watch):
    """A trailing stop: armed at its activation price (or at once), then follows the best price
    (highest for a SELL, lowest for a BUY) and fires `rate` away from it. Mutates the order's
    `active` / `extreme` as the path passes (that state is path-only, hence deterministic).
    """

    __slots__ = ("order", "sell", "rate")

    def __init__(self, target, rank, order, rate: float) -> None:
        super().__init__(target, rank)
        self.order = order
        self.sell = order.side == "SELL"
        self.rate = rate

    def _activation(self, seg: Segment, lam0: float, lam1: float) -> tuple[float, float] | None:
        """(lam, best price) where an unarmed stop arms inside [lam0, lam1]."""
        a = self.order.activate
        p = seg.price(lam0)
        if (p >= a) if self.sell else (p <= a):
            return lam0, p
        end = seg.p1
        if (end > p and end >= a) if self.sell else (end < p and end <= a):
            lam = max(lam0, (a - seg.p0) / (seg.p1 - seg.p0))
            if lam <= lam1:
                return (lam, seg.p1) if seg.gap else (lam, float(a))
        return None

    def _armed_from(self, seg: Segment, lam0: float, lam1: float) -> tuple[float, float] | None:
        if self.order.active:
            return lam0, self.order.extreme
        return self._activation(seg, lam0, lam1)

    def first_hit(self, seg: Segment, lam0: float, lam1: float) -> Hit | None:
        armed = self._armed_from(seg, lam0, lam1)
        if armed is None:
            return None
        lam_s, best = armed
        p = seg.price(lam_s)
        if self.sell:
            best = max(best, p)
            level = best * (1 - self.rate)
            if p <= level:
                return Hit(lam_s, round_half_up(p), True)
            if seg.p1 < p and seg.p1 <= level:
                lam = max(lam_s, (level - seg.p0) / (seg.p1 - seg.p0))
                if lam <= lam1:
                    fill = round_half_up(seg.p1 if seg.gap else level)
                    return Hit(lam, fill, False)
        else:
            best = min(best, p)
            level = best * (1 + self.rate)
            if p >= level:
                return Hit(lam_s, round_half_up(p), True)
            if seg.p1 > p and seg.p1 >= level:
                lam = max(lam_s, (level - seg.p0) / (seg.p1 - seg.p0))
                if lam <= lam1:
                    fill = round_half_up(seg.p1 if seg.gap else level)
                    return Hit(lam, fill, False)
        return None

    def pass_over(self, seg: Segment, lam0: float, lam1: float) -> None:
        armed = self._armed_from(seg, lam0, lam1)
        if armed is None:
            return
        lam_s, best = armed
        # The path is straight between lam_s and lam1: its extremes are at the two ends.
        ends = (seg.price(lam_s), seg.price(lam1))
        self.order.active = True
        self.order.extreme = max(best, *ends) if self.sell else min(best, *ends)

    def band(self) -> tuple[float, float]:
        o = self.order
        if not o.active:
            return (-INF, float(o.activate)) if self.sell else (float(o.activate), INF)
        if self.sell:
            return o.extreme * (1 - self.rate), o.extreme
        return o.extreme, o.extreme * (1 + self.rate)


@dataclass(frozen=True)
class Event:
    watch: Watch
    time: int
    fill: int  # ticks
    price: float  # the path price at the event, ticks
    at_start: bool


def _reaches(watch: Watch, low: float, high: float) -> bool:
    lo, hi = watch.band()
    return low <= lo or high >= hi


def combined_band(watches: list[Watch]) -> tuple[float, float]:
    lo, hi = -INF, INF
    for w in watches:
        wlo, whi = w.band()
        lo, hi = max(lo, wlo), min(hi, whi)
    return lo, hi


class Walker:
    """A symbol's position on its path: candle `i`, segment `k` (0 = the gap into candle i),
    fraction `lam` along it. Invariant: every path point up to the position has been matched.
    """

    def __init__(self, path: SymbolPath, t: int) -> None:
        self.path = path
        self.seek(t)

    def seek(self, t: int) -> None:
        """Jump to time t without matching (nothing watches this symbol, or it is pinned)."""
        self.i, self.k, self.lam = self.path.position_at(t)
        self.seg = self.path.segment(self.i, self.k)

    def price(self) -> float:
        return self.seg.price(self.lam)

    def time(self) -> int:
        return self.seg.time_at(self.lam)

    def _goto(self, i: int, k: int, lam: float) -> None:
        self.i, self.k, self.lam = i, k, lam
        self.seg = self.path.segment(i, k)

    def next_event(self, watches: list[Watch], until: int) -> Event | None:
        """Walk towards `until`; stop at the first hit (position = the hit) or at `until`."""
        if not watches:
            self.seek(until)
            return None
        while True:
            last = self.path.index_at(until)
            flagged = self._first_flagged(self.i, last, combined_band(watches))
            if flagged is None:
                self.seek(until)
                return None
            if flagged > self.i:
                self._goto(flagged, 0, 0.0)
            event, reached = self._walk_candle(watches, until)
            if event is not None or reached:
                return event

    def _walk_candle(self, watches, until: int) -> tuple[Event | None, bool]:
        """Match candle `i` segment by segment; (event, reached-until)."""
        while True:
            seg = self.seg
            lam0 = self.lam
            lam1 = 1.0 if seg.t1 <= until else seg.lam_at(until)
            # Only watches whose band this piece of path reaches can fire or change on it.
            p0, p1 = seg.price(lam0), seg.price(lam1)
            low, high = (p0, p1) if p0 <= p1 else (p1, p0)
            reached = [w for w in watches if _reaches(w, low, high)]
            trailing = [w for w in reached if isinstance(w, TrailingWatch)]
            best = first_hit(reached, seg, lam0, lam1) if reached else None
            if best is not None:
                hit, watch = best
                for w in trailing:
                    w.pass_over(seg, lam0, hit.lam)
                self.lam = hit.lam
                return Event(watch, seg.time_at(hit.lam), hit.fill, seg.price(hit.lam),
                             hit.at_start), False
            for w in trailing:
                w.pass_over(seg, lam0, lam1)
            if lam1 < 1.0:
                self.lam = lam1
                return None, True
            if self.k == 3:
                self._goto(self.i + 1, 0, 0.0)
                return None, False  # the candle ended at or before `until`
            self._goto(self.i, self.k + 1, 0.0)

    def _first_flagged(self, first: int, last: int, band: tuple[float, float]) -> int | None:
        """First candle in [first, last] whose range reaches outside the band (else None).

        Compares the raw file values against the band scaled back to file units, with one
        tick of margin so rounding can only flag a candle too many, never one too few.
        """
        lo, hi = band
        if lo == -INF and hi == INF:
            return None
        path = self.path
        n = path.n
        rl, rh = path.raw.low, path.raw.high
        i = first
        while i <= last:
            k, j = divmod(i, n)
            s = path.scale(k)
            lo_raw, hi_raw = (lo + 1) / s, (hi - 1) / s
            j_end = min(n - 1, j + (last - i))
            for jj in range(j, j_end + 1):
                if rl[jj] <= lo_raw or rh[jj] >= hi_raw:
                    return k * n + jj
            i = k * n + j_end + 1
        return None


def first_hit(watches: list[Watch], seg: Segment, lam0: float, lam1: float):
    """The earliest (hit, watch) on `seg` within [lam0, lam1]; ties go by the watches' rank."""
    best: tuple[Hit, Watch] | None = None
    for w in watches:
        hit = w.first_hit(seg, lam0, lam1)
        if hit is not None and (best is None or (hit.lam, w.rank) < (best[0].lam, best[1].rank)):
            best = (hit, w)
    return best
