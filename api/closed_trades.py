"""The closed-trade journal (`quantum:stream:trade.closed`, one entry per closed trade written by
the workflow's feedback stage) read back as `trading.performance.ClosedTrade` records."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from pydantic import ValidationError

from common.redis_values import decoded
from common.redis_keys import TRADE_CLOSED_STREAM
from activities.schemas.feedback import TradeClosedEvent
from trading.performance import ClosedTrade

log = logging.getLogger(__name__)
_PAGE = 1_000


def closed_trade_of(fields: dict[str, str]) -> ClosedTrade:
    """One journal entry (flat strings; "" = absent) → the record performance needs."""
    event = TradeClosedEvent.model_validate({k: v for k, v in fields.items() if v != ""})
    return ClosedTrade(symbol=event.symbol, exit_reason=event.exit_reason, model=event.model,
                       net_pnl=event.realized_pnl, gross_pnl=event.gross_pnl, fees=event.fees,
                       funding=event.funding, r_multiple=event.r_multiple, closed_at=event.closed_at_ms)


async def read_closed_trades(redis: aioredis.Redis, since_ms: int | None = None,
                             until_ms: int | None = None) -> tuple[list[ClosedTrade], int]:
    """Every journal entry closed in [since_ms, until_ms), and how many entries were unreadable."""
    trades: list[ClosedTrade] = []
    unreadable, start = 0, "-"
    while True:
        page = await redis.xrange(TRADE_CLOSED_STREAM, min=start, max="+", count=_PAGE)
        for entry_id, raw in page:
            fields = {decoded(k): decoded(v) for k, v in raw.items()}
            try:
                trade = closed_trade_of(fields)
            except (ValidationError, ValueError) as err:
                unreadable += 1
                log.warning("unreadable %s entry %s: %s", TRADE_CLOSED_STREAM, decoded(entry_id), err)
                continue
            at_ms = int(trade.closed_at.timestamp() * 1000)
            if (since_ms is None or at_ms >= since_ms) and (until_ms is None or at_ms < until_ms):
                trades.append(trade)
        if len(page) < _PAGE:
            return trades, unreadable
        start = "(" + decoded(page[-1][0])

