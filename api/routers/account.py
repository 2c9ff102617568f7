"""The account at a glance: `GET /portfolio` (what the exchange holds, beside the trades that own
it) and `GET /performance` (what the closed trades made: `trading/performance.py`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.closed_trades import read_closed_trades
from api.routers.trades import summary_of
from api.schemas import Portfolio, PositionView
from api.security import TOKEN_ERRORS, require_token
from api.services import Services, services
from exchange.models import Balance
from exchange.parse import balance_of, positions_of
from trading.performance import PerformanceReport, performance_report
from common import search_attributes as sa
from workflows.starter import WORKFLOW_TYPE

router = APIRouter(prefix="/api/v1", tags=["account"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)

_HOLDING = ("OPENING", "OPEN", "CLOSING")


async def _balance(svc: Services) -> Balance:
    return balance_of(await (await svc.market_exchange()).fetch_balance())


@router.get("/portfolio", response_model=Portfolio,
            summary="Open positions as the exchange reports them, beside the trades that own them")
async def portfolio(svc: Services = Depends(services)) -> Portfolio:
    exchange = await svc.market_exchange()
    holding = " OR ".join(f"{sa.TRADE_STATUS.name} = '{s}'" for s in _HOLDING)
    trades = [summary_of(svc, w) async for w in svc.temporal.list_workflows(
        f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND ({holding})")]
    positions, balance = positions_of(await exchange.fetch_positions()), await _balance(svc)
    views: list[PositionView] = []
    for p in positions:
        owners = sorted(t.workflow_id for t in trades if t.symbol == p.symbol)
        views.append(PositionView(
            symbol=p.symbol, side=p.side, quantity=abs(p.quantity), entry_price=p.entry_price,
            mark_price=p.mark_price, notional=p.notional, unrealized_pnl=p.unrealized_pnl, leverage=p.leverage,
            liquidation_price=p.liquidation_price, owners=owners, orphan=not owners))
    exposure: dict[str, Decimal] = {}
    for view in views:
        exposure[view.symbol] = exposure.get(view.symbol, Decimal(0)) + view.notional
    return Portfolio(
        positions=sorted(views, key=lambda v: v.symbol), open_trades=trades,
        exposure_by_symbol=dict(sorted(exposure.items())), total_exposure=sum(exposure.values(), Decimal(0)),
        unrealized_pnl=sum((v.unrealized_pnl for v in views), Decimal(0)),
        wallet_balance=balance.wallet_balance, free_margin=balance.available_balance,
        equity=balance.margin_balance)


def _epoch_ms(value: datetime | None, name: str) -> int | None:
    """Milliseconds since the epoch; a date the platform cannot place there (year 1 in local
    time, say) is a 422 naming the parameter, not a 500."""
    if value is None:
        return None
    try:
        return int(value.timestamp() * 1000)
    except (ValueError, OverflowError, OSError) as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["query", name], "msg": f"out of range: {err}", "type": "value_error"}]) from None


@router.get("/performance", response_model=PerformanceReport,
            summary="Realized PnL (net, fees, funding) with breakdowns, win rate, profit factor, "
                    "expectancy, drawdown, Sharpe and Sortino of daily returns")
async def performance(
    svc: Services = Depends(services),
    since: Annotated[datetime | None, Query(description="closed at or after (ISO 8601, with a zone)")] = None,
    until: Annotated[datetime | None, Query(description="closed before (ISO 8601, with a zone)")] = None,
    starting_equity: Annotated[Decimal | None, Query(ge=Decimal("0.01"), lt=Decimal("1e12"), description=(
        "equity before the first close (USDT, at least 0.01: a drawdown fraction of a smaller one "
        "overflows a float); default: today's wallet balance minus what the trades closed since "
        "`since` made"))] = None,
) -> PerformanceReport:
    since_ms, until_ms = _epoch_ms(since, "since"), _epoch_ms(until, "until")
    # One read of the journal from `since` on: the period's trades, and (for the default
    # starting equity) everything the account made since then.
    after, _ = await read_closed_trades(svc.redis, since_ms, None)
    trades = [t for t in after if until_ms is None or t.closed_at.timestamp() * 1000 < until_ms]
    if starting_equity is None:
        wallet = (await _balance(svc)).wallet_balance or Decimal(0)
        starting_equity = wallet - sum((t.net_pnl for t in after), Decimal(0))
        if starting_equity <= 0:
            starting_equity = Decimal(1)  # a wiped-out account: ratios become meaningless, not errors
    return performance_report(trades, starting_equity)
