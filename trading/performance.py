"""Realized performance of closed trades: totals, breakdowns, daily returns and risk ratios.

Pure functions over `ClosedTrade` records (the fields of `TradeClosedEvent` that matter here;
trading/ does not import activities/). `performance_report` returns a `PerformanceReport`, a
pydantic model an API can return as JSON as it is (money as Decimal, serialised as strings;
ratios as float or None, never NaN or infinity).

Conventions
-----------
* Money is Decimal, summed exactly (50 digits); ratios are float.
* Net PnL = gross − fees + funding (fees positive = paid, funding positive = received), as
  `TradeClosedEvent.realized_pnl`. The report takes `net_pnl` as given; it does not recompute it.
* A win is a trade with net > 0, a loss one with net < 0; a flat trade (net == 0) is neither but
  counts in `trades`, so win_rate = wins / trades (a flat trade is not a win, as the learning
  label 0 = "loss or flat").
* profit_factor = Σ net of wins / |Σ net of losses|. None when there is no losing trade (nothing
  to divide by): with wins > 0 that means "only wins (and flats)", with trades == 0 "no trades";
  read `wins`/`losses` to tell them apart.
* expectancy = mean net per trade (USDT). expectancy_r = mean r_multiple over the trades that
  have one (`r_trades` of them); None when none has.
* Days are UTC calendar days, half-open [00:00, 24:00): a trade closed exactly at 00:00:00.000
  UTC belongs to the day that starts then, not to the day before. Weeks are ISO weeks
  (`2025-W01`, Monday first, ISO year), months `2025-01`, days `2025-01-31`.
* Daily series: every calendar day from the day of the first close to the day of the last close,
  inclusive; a day without closes has net 0 and return 0 (it is counted in the ratios, as a flat
  day of a book that was running). return(day) = net(day) / equity at the start of that day, with
  equity(start of first day) = `starting_equity` and equity(start of next day) = equity(start of
  day) + net(day). Equity only moves on closes: open positions are not marked to market.
* Equity curve: one point at each UTC midnight, from the start of the first day to the end of the
  last day (n days → n + 1 points); the equity at midnight T is starting_equity + net of the trades
  closed before T. Its last point is starting_equity + total net.
* Max drawdown is taken on that daily curve (end-of-day equity, the starting equity as the first
  peak), so dips inside a day are not seen. Both figures are positive magnitudes, each its own
  maximum (they may come from different troughs): `max_drawdown` = max(peak − equity) in USDT,
  `max_drawdown_fraction` = max((peak − equity) / peak) — empyrical's `max_drawdown` of the daily
  returns, with the opposite sign.
* Sharpe = mean(r) / stdev(r, ddof=1) × √365 and Sortino = mean(r) / DD × √365 with
  DD = √(mean(min(r, 0)²)) over all days (empyrical's downside_risk with required return 0);
  risk-free rate 0. Annualised with 365 periods: crypto futures trade every day of the year (252
  would be the equity-market convention). None when fewer than 2 daily returns, when all returns
  are equal (Sharpe: zero dispersion) or when no day lost (Sortino: zero downside deviation) —
  where empyrical returns NaN or ±inf — and when a day started with equity ≤ 0 (its return, then
  None, is undefined).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal, localcontext

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trading.models import ExitReason

PERIODS_PER_YEAR = 365  # crypto trades every calendar day
NO_MODEL = "(none)"  # the by_model key of trades without a model version (the trend rule, manual)

_CTX = Context(prec=50)
_ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ClosedTrade(BaseModel):
    """One closed trade, as `TradeClosedEvent` records it:

    ClosedTrade(symbol=e.symbol, exit_reason=e.exit_reason, model=e.model,
                net_pnl=e.realized_pnl, gross_pnl=e.gross_pnl, fees=e.fees,
                funding=e.funding, r_multiple=e.r_multiple, closed_at=e.closed_at_ms)

    `closed_at` takes an aware datetime or an int of epoch milliseconds (the event's
    closed_at_ms); it is kept in UTC. A naive datetime is refused (its zone is unknown).
    """

    model_config = ConfigDict(frozen=True)

    symbol: str
    exit_reason: ExitReason
    model: str | None = None
    net_pnl: Decimal  # gross − fees + funding
    gross_pnl: Decimal = _ZERO
    fees: Decimal = _ZERO  # positive = paid
    funding: Decimal = _ZERO  # positive = received
    r_multiple: Decimal | None = None
    closed_at: datetime

    @field_validator("closed_at", mode="before")
    @classmethod
    def _utc(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return _EPOCH + timedelta(milliseconds=value)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("closed_at must be timezone-aware (or epoch milliseconds)")
            return value.astimezone(UTC)
        return value

    @field_validator("net_pnl", "gross_pnl", "fees", "funding", "r_multiple")
    @classmethod
    def _finite(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not value.is_finite():
            raise ValueError(f"must be finite, got {value}")
        return value

    @property
    def day(self) -> date:
        """The UTC day of the close (00:00:00.000 belongs to the new day)."""
        return self.closed_at.astimezone(UTC).date()


class GroupStats(BaseModel):
    """One slice of the trades (a symbol, an exit reason, a model version, a day...)."""

    model_config = ConfigDict(frozen=True)

    trades: int
    wins: int
    losses: int
    net: Decimal
    gross: Decimal
    fees: Decimal
    funding: Decimal
    win_rate: float | None  # wins / trades; None only when trades == 0


class Totals(GroupStats):
    flat: int  # net == 0: neither a win nor a loss
    wins_net: Decimal  # Σ net of the winning trades (≥ 0)
    losses_net: Decimal  # Σ net of the losing trades (≤ 0)
    profit_factor: float | None  # wins_net / |losses_net|; None when there is no losing trade
    expectancy: Decimal | None  # mean net per trade; None when no trades
    expectancy_r: float | None  # mean r_multiple of the r_trades that have one
    r_trades: int


class DailyPoint(BaseModel):
    """One UTC day of the daily series (days without closes included, with zeros)."""

    model_config = ConfigDict(frozen=True)

    day: date
    trades: int
    net: Decimal
    fees: Decimal
    funding: Decimal
    equity_start: Decimal
    equity_end: Decimal
    daily_return: float | None  # net / equity_start; None when equity_start ≤ 0


class EquityPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime  # a UTC midnight
    equity: Decimal  # starting_equity + net of the trades closed before `at`


class RiskStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    periods_per_year: int = PERIODS_PER_YEAR
    days: int  # daily returns the ratios are computed from
    max_drawdown: Decimal  # USDT, ≥ 0
    max_drawdown_fraction: float  # of the running peak, ≥ 0
    sharpe: float | None
    sortino: float | None


class PerformanceReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    starting_equity: Decimal
    ending_equity: Decimal  # starting_equity + totals.net
    first_day: date | None  # UTC day of the first close
    last_day: date | None
    totals: Totals
    risk: RiskStats
    # Breakdowns, keys sorted; only keys with at least one trade.
    by_symbol: dict[str, GroupStats] = Field(default_factory=dict)
    by_exit_reason: dict[str, GroupStats] = Field(default_factory=dict)
    by_model: dict[str, GroupStats] = Field(default_factory=dict)  # NO_MODEL for None
    by_day: dict[str, GroupStats] = Field(default_factory=dict)  # 2025-01-31
    by_week: dict[str, GroupStats] = Field(default_factory=dict)  # 2025-W05 (ISO)
    by_month: dict[str, GroupStats] = Field(default_factory=dict)  # 2025-01
    daily: list[DailyPoint] = Field(default_factory=list)  # first_day .. last_day, every day
    equity_curve: list[EquityPoint] = Field(default_factory=list)  # len(daily) + 1 points


def performance_report(trades: Iterable[ClosedTrade], starting_equity: Decimal) -> PerformanceReport:
    """Everything `GET /performance` shows, from the closed trades and the equity they started
    from (`starting_equity` > 0, USDT). Order of `trades` does not matter."""
    starting_equity = Decimal(starting_equity)
    if not starting_equity.is_finite() or starting_equity <= 0:
        raise ValueError(f"starting_equity must be a finite number > 0, got {starting_equity}")
    rows = sorted(trades, key=lambda t: t.closed_at)

    with localcontext(_CTX):
        totals = _totals(rows)
        daily = _daily(rows, starting_equity)
        curve = _equity_curve(daily, starting_equity)
        dd_abs, dd_frac = _drawdowns([p.equity for p in curve])
        returns = [p.daily_return for p in daily]
        # a day that started with equity <= 0 has no return: then no ratio at all
        defined = [r for r in returns if r is not None] if None not in returns else []
        report = PerformanceReport(
            starting_equity=starting_equity,
            ending_equity=starting_equity + totals.net,
            first_day=daily[0].day if daily else None,
            last_day=daily[-1].day if daily else None,
            totals=totals,
            risk=RiskStats(
                days=len(returns),
                max_drawdown=dd_abs,
                max_drawdown_fraction=dd_frac,
                sharpe=sharpe_ratio(defined),
                sortino=sortino_ratio(defined),
            ),
            by_symbol=_group(rows, lambda t: t.symbol),
            by_exit_reason=_group(rows, lambda t: str(t.exit_reason)),
            by_model=_group(rows, lambda t: t.model if t.model is not None else NO_MODEL),
            by_day=_group(rows, lambda t: t.day.isoformat()),
            by_week=_group(rows, _iso_week),
            by_month=_group(rows, lambda t: t.day.strftime("%Y-%m")),
            daily=daily,
            equity_curve=curve,
        )
    return report


def sharpe_ratio(returns: Sequence[float], periods_per_year: int = PERIODS_PER_YEAR) -> float | None:
    """mean / sample stdev (ddof=1) × √periods, risk-free 0 (empyrical's `sharpe_ratio`).
    None for fewer than 2 returns or returns that are all equal (zero dispersion)."""
    if len(returns) < 2 or max(returns) == min(returns):
        return None
    n = len(returns)
    mean = math.fsum(returns) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in returns) / (n - 1))
    if std == 0:
        return None
    return mean / std * math.sqrt(periods_per_year)


def sortino_ratio(returns: Sequence[float], periods_per_year: int = PERIODS_PER_YEAR) -> float | None:
    """mean / downside deviation × √periods, required return 0, downside deviation
    √(mean over ALL periods of min(r, 0)²) (empyrical's `sortino_ratio`/`downside_risk`).
    None for fewer than 2 returns or no negative return (zero downside deviation)."""
    if len(returns) < 2:
        return None
    n = len(returns)
    downside = math.sqrt(math.fsum(min(r, 0.0) ** 2 for r in returns) / n)
    if downside == 0:
        return None
    return math.fsum(returns) / n / downside * math.sqrt(periods_per_year)


def max_drawdown_fraction(returns: Sequence[float]) -> float:
    """Largest fall from a running peak of the compounded returns (the start counts as a peak),
    as a positive fraction: −empyrical.max_drawdown(returns); 0.0 for no returns."""
    wealth = peak = 1.0
    worst = 0.0
    for r in returns:
        wealth *= 1.0 + r
        peak = max(peak, wealth)
        worst = max(worst, (peak - wealth) / peak)
    return worst


# -- internals ---------------------------------------------------------------------------------


def _stats(rows: Sequence[ClosedTrade]) -> dict:
    wins = sum(1 for t in rows if t.net_pnl > 0)
    losses = sum(1 for t in rows if t.net_pnl < 0)
    return {
        "trades": len(rows),
        "wins": wins,
        "losses": losses,
        "net": sum((t.net_pnl for t in rows), _ZERO),
        "gross": sum((t.gross_pnl for t in rows), _ZERO),
        "fees": sum((t.fees for t in rows), _ZERO),
        "funding": sum((t.funding for t in rows), _ZERO),
        "win_rate": wins / len(rows) if rows else None,
    }


def _totals(rows: Sequence[ClosedTrade]) -> Totals:
    base = _stats(rows)
    wins_net = sum((t.net_pnl for t in rows if t.net_pnl > 0), _ZERO)
    losses_net = sum((t.net_pnl for t in rows if t.net_pnl < 0), _ZERO)
    r_values = [t.r_multiple for t in rows if t.r_multiple is not None]
    return Totals(
        **base,
        flat=base["trades"] - base["wins"] - base["losses"],
        wins_net=wins_net,
        losses_net=losses_net,
        profit_factor=float(wins_net / -losses_net) if losses_net < 0 else None,
        expectancy=base["net"] / len(rows) if rows else None,
        expectancy_r=float(sum(r_values, _ZERO) / len(r_values)) if r_values else None,
        r_trades=len(r_values),
    )


def _group(rows: Sequence[ClosedTrade], key: Callable[[ClosedTrade], str]) -> dict[str, GroupStats]:
    groups: dict[str, list[ClosedTrade]] = {}
    for t in rows:
        groups.setdefault(key(t), []).append(t)
    return {k: GroupStats(**_stats(groups[k])) for k in sorted(groups)}


def _iso_week(t: ClosedTrade) -> str:
    year, week, _ = t.day.isocalendar()
    return f"{year}-W{week:02d}"


def _daily(rows: Sequence[ClosedTrade], starting_equity: Decimal) -> list[DailyPoint]:
    if not rows:
        return []
    by_day: dict[date, list[ClosedTrade]] = {}
    for t in rows:
        by_day.setdefault(t.day, []).append(t)
    first, last = min(by_day), max(by_day)
    out: list[DailyPoint] = []
    equity = starting_equity
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        todays = by_day.get(day, [])
        net = sum((t.net_pnl for t in todays), _ZERO)
        out.append(
            DailyPoint(
                day=day,
                trades=len(todays),
                net=net,
                fees=sum((t.fees for t in todays), _ZERO),
                funding=sum((t.funding for t in todays), _ZERO),
                equity_start=equity,
                equity_end=equity + net,
                daily_return=float(net / equity) if equity > 0 else None,
            )
        )
        equity += net
    return out


def _equity_curve(daily: Sequence[DailyPoint], starting_equity: Decimal) -> list[EquityPoint]:
    if not daily:
        return []
    points = [EquityPoint(at=_midnight(daily[0].day), equity=starting_equity)]
    points += [EquityPoint(at=_midnight(p.day + timedelta(days=1)), equity=p.equity_end) for p in daily]
    return points


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _drawdowns(equity: Sequence[Decimal]) -> tuple[Decimal, float]:
    """(max peak − equity in USDT, max (peak − equity) / peak) over the curve; the first point is
    the starting equity (> 0), so every peak is > 0."""
    worst_abs, worst_frac = _ZERO, _ZERO
    peak: Decimal | None = None
    for value in equity:
        peak = value if peak is None else max(peak, value)
        worst_abs = max(worst_abs, peak - value)
        worst_frac = max(worst_frac, (peak - value) / peak)
    return worst_abs, float(worst_frac)
