"""The account at a glance: `GET /portfolio` (what the exchange holds, beside the trades that own
it) and `GET /performance` (what the closed trades made: `trading/performance.py`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status

from activities.market import to_decimal
from api.closed_trades import read_closed_trades
from api.routers.trades import summary_of
from api.schemas import Portfolio, PositionView
from api.security import TOKEN_ERRORS, require_token
from api.services import Services, services
from trading.performance import PerformanceReport, performance_report
from common import search_attributes as sa
from workflows.starter import WORKFLOW_TYPE

router = APIRouter(prefix="/api/v1", tags=["account"], dependencies=[Depends(require_token)], responses=TOKEN_ERRORS)

_HOLDING = ("OPENING", "OPEN", "CLOSING")


async def _exchange(svc: Services) -> Any:
    if not svc.exchange.markets:
        await svc.exchange.load_markets()
    return svc.exchange


async def _balance(svc: Services) -> dict[str, Any]:
    return (await (await _exchange(svc)).fetch_balance()).get("info") or {}


@router.get("/portfolio", response_model=Portfolio,
            summary="Open positions as the exchange reports them, beside the trades that own them")
async def portfolio(svc: Services = Depends(services)) -> Portfolio:
    exchange = await _exchange(svc)
    holding = " OR ".join(f"{sa.TRADE_STATUS.name} = '{s}'" for s in _HOLDING)
    trades = [summary_of(svc, w) async for w in svc.temporal.list_workflows(
        f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND ({holding})")]
    positions, balance = await exchange.fetch_positions(), await _balance(svc)
    views: list[PositionView] = []
    for p in positions:
        info = p.get("info") or {}
        amount = to_decimal(info.get("positionAmt")) or Decimal(0)
        if not amount:
            continue
        symbol = info.get("symbol") or p["symbol"]
        mark = to_decimal(info.get("markPrice"))
        owners = sorted(t.workflow_id for t in trades if t.symbol == symbol)
        leverage = info.get("leverage") or p.get("leverage")
        views.append(PositionView(
            symbol=symbol, side="LONG" if amount > 0 else "SHORT", quantity=abs(amount),
            entry_price=to_decimal(info.get("entryPrice")), mark_price=mark,
            notional=abs(to_decimal(info.get("notional")) or amount * (mark or Decimal(0))),
            unrealized_pnl=to_decimal(info.get("unRealizedProfit")) or Decimal(0),
            leverage=int(float(leverage)) if leverage else None,
            liquidation_price=to_decimal(info.get("liquidationPrice")) or None,
            owners=owners, orphan=not owners))
    exposure: dict[str, Decimal] = {}
    for view in views:
        exposure[view.symbol] = exposure.get(view.symbol, Decimal(0)) + view.notional
    return Portfolio(
        positions=sorted(views, key=lambda v: v.symbol), open_trades=trades,
        exposure_by_symbol=dict(sorted(exposure.items())), total_exposure=sum(exposure.values(), Decimal(0)),
        unrealized_pnl=sum((v.unrealized_pnl for v in views), Decimal(0)),
        wallet_balance=to_decimal(balance.get("totalWalletBalance")),
        free_margin=to_decimal(balance.get("availableBalance")),
        equity=to_decimal(balance.get("totalMarginBalance")))


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
        wallet = to_decimal((await _balance(svc)).get("totalWalletBalance")) or Decimal(0)
        starting_equity = wallet - sum((t.net_pnl for t in after), Decimal(0))
        if starting_equity <= 0:
            starting_equity = Decimal(1)  # a wiped-out account: ratios become meaningless, not errors
    return performance_report(trades, starting_equity)
