"""ccxt's results → the typed records of `exchange/models.py`, in one place.

Binance's raw fields (`info`: exact strings, signed position amounts, algo-order states) come
first; ccxt's unified fields are the fallback for an exchange or a ccxt version that leaves
them out. No ccxt import: these are functions of plain dicts, unit-tested on recorded payloads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from exchange.models import Balance, ExchangeOrder, Fill, FundingRate, Position, Tick


def to_decimal(value: Any) -> Decimal | None:
    """Exact Decimal from an exchange string/number; None for absent or empty values."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _decimal_or_none(value: Any) -> Decimal | None:
    """Like `to_decimal`, but a garbled value is absent (one bad entry never loses a whole poll)."""
    try:
        number = to_decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number is None or number.is_finite() else None


def _info(raw: Mapping | None) -> Mapping:
    return (raw or {}).get("info") or {}


def last_price(ticker: Mapping) -> Decimal:
    """A ticker's last trade price (Binance's string, exact)."""
    return Decimal(str(_info(ticker).get("lastPrice") or ticker["last"]))


def order_of(order: Mapping, symbol_id: str, *, conditional: bool) -> ExchangeOrder:
    info = _info(order)
    if conditional:
        exchange_type = info.get("orderType") or str(order.get("type")).upper()
        exchange_status = info.get("algoStatus") or str(order.get("status"))
        quantity = to_decimal(info.get("quantity")) or to_decimal(order.get("amount"))
        filled = Decimal(0)  # an algo order fills through its triggered market order
    else:
        exchange_type = info.get("type") or str(order.get("type")).upper()
        exchange_status = info.get("status") or str(order.get("status"))
        quantity = to_decimal(info.get("origQty")) or to_decimal(order.get("amount"))
        filled = to_decimal(info.get("executedQty")) or to_decimal(order.get("filled")) or Decimal(0)
    average = to_decimal(info.get("avgPrice")) or to_decimal(order.get("average"))
    price = to_decimal(info.get("price")) or to_decimal(order.get("price"))
    trigger = to_decimal(info.get("triggerPrice") or info.get("stopPrice")) or to_decimal(order.get("triggerPrice"))
    status = order.get("status")
    if conditional and exchange_status in ("TRIGGERED", "FINISHED"):
        status = "closed"  # ccxt leaves some algo states unmapped
    return ExchangeOrder(
        symbol=symbol_id,
        order_id=str(order.get("id")),
        client_order_id=str(order.get("clientOrderId") or info.get("clientAlgoId") or info.get("clientOrderId")),
        side=str(info.get("side") or order.get("side", "")).upper(),
        type=exchange_type,
        conditional=conditional,
        status=str(status or exchange_status).lower(),
        exchange_status=str(exchange_status),
        quantity=quantity or Decimal(0),
        filled=filled,
        average_price=average if average else None,  # Binance sends "0" before any fill
        price=price if price else None,
        trigger_price=trigger if trigger else None,
        reduce_only=bool(order.get("reduceOnly") or info.get("reduceOnly")),
        triggered_order_id=str(info["actualOrderId"]) if info.get("actualOrderId") else None,
        time_ms=order.get("timestamp") or info.get("updateTime") or info.get("createTime"),
    )


def fill_of(trade: Mapping, client_of: Mapping[str, str]) -> Fill:
    """One of our trades (a fill); `client_of` maps order ids to client order ids."""
    info = _info(trade)
    order_id = str(info.get("orderId") or trade.get("order"))
    fee = trade.get("fee") or {}
    return Fill(
        trade_id=str(info.get("id") or trade["id"]),
        order_id=order_id,
        client_order_id=client_of.get(order_id),
        side=str(info.get("side") or trade.get("side")).upper(),
        price=to_decimal(info.get("price")) or Decimal(str(trade["price"])),
        quantity=to_decimal(info.get("qty")) or Decimal(str(trade["amount"])),
        fee=to_decimal(info.get("commission")) or Decimal(str(fee.get("cost") or 0)),
        fee_asset=str(info.get("commissionAsset") or fee.get("currency") or ""),
        realized_pnl=to_decimal(info.get("realizedPnl")) or Decimal(0),
        time_ms=int(info.get("time") or trade["timestamp"]),
    )


def position_of(raw: Mapping) -> Position | None:
    """An open position; None when flat (positionRisk lists flat symbols too)."""
    info = _info(raw)
    amount = to_decimal(info.get("positionAmt"))
    if amount is None:  # ccxt's unsigned contracts + side
        amount = to_decimal(raw.get("contracts")) or Decimal(0)
        amount = -amount if raw.get("side") == "short" else amount
    if not amount:
        return None
    mark = to_decimal(info.get("markPrice")) or to_decimal(raw.get("markPrice"))
    notional = to_decimal(info.get("notional")) or amount * (mark or Decimal(0))
    leverage = info.get("leverage") or raw.get("leverage")
    return Position(
        symbol=str(info.get("symbol") or raw.get("id") or raw["symbol"]),
        quantity=amount,
        entry_price=to_decimal(info.get("entryPrice")) or to_decimal(raw.get("entryPrice")),
        mark_price=mark,
        liquidation_price=to_decimal(info.get("liquidationPrice")) or to_decimal(raw.get("liquidationPrice")) or None,
        leverage=int(float(leverage)) or None if leverage else None,  # portfolio margin sends "0"
        margin_mode=raw.get("marginMode") or info.get("marginType"),
        unrealized_pnl=to_decimal(info.get("unRealizedProfit")) or to_decimal(raw.get("unrealizedPnl")) or Decimal(0),
        notional=abs(notional),
    )


def positions_of(raws: Iterable[Mapping]) -> list[Position]:
    """The open positions among ccxt's `fetch_positions` answer."""
    return [p for p in map(position_of, raws) if p is not None]


def balance_of(raw: Mapping) -> Balance:
    """ccxt's `fetch_balance` answer → the account's totals (Binance's own figures)."""
    info = _info(raw)
    return Balance(wallet_balance=to_decimal(info.get("totalWalletBalance")),
                   available_balance=to_decimal(info.get("availableBalance")),
                   margin_balance=to_decimal(info.get("totalMarginBalance")),
                   unrealized_pnl=to_decimal(info.get("totalUnrealizedProfit")))


def symbol_filters(market: Mapping) -> dict[str, dict]:
    """A market's raw Binance filters by type (PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL, ...)."""
    return {f.get("filterType"): f for f in _info(market).get("filters") or []}


def ticks_of(prices: Mapping[str, Mapping], books: Mapping[str, Mapping] | None = None,
             symbols: Collection[str] | None = None) -> list[Tick]:
    """`fetch_last_prices` (and `fetch_bids_asks`) → one tick per symbol (of `symbols`, when given)
    that has a readable price; a tick's time is None when neither the price nor the book carried
    one."""
    book_by_id = {_info(b).get("symbol"): _info(b) for b in (books or {}).values() if _info(b)}
    ticks = []
    for ticker in prices.values():
        info = _info(ticker)
        symbol = info.get("symbol")
        if not symbol or (symbols is not None and symbol not in symbols):
            continue
        price = _decimal_or_none(info.get("price"))
        if price is None:
            continue
        book = book_by_id.get(symbol, {})
        stamp = info.get("time") or ticker.get("timestamp") or book.get("time")
        ticks.append(Tick(symbol=symbol, price=price, time_ms=int(stamp) if stamp else None,
                          bid=_decimal_or_none(book.get("bidPrice")), ask=_decimal_or_none(book.get("askPrice"))))
    return ticks


def funding_rates_of(rates: Mapping[str, Mapping], symbols: Collection[str] | None = None) -> list[FundingRate]:
    """`fetch_funding_rates` → the current rate and next funding time per symbol (of `symbols`)."""
    out = []
    for rate in rates.values():
        info = _info(rate)
        symbol = info.get("symbol")
        if not symbol or (symbols is not None and symbol not in symbols):
            continue
        value = _decimal_or_none(info.get("lastFundingRate", rate.get("fundingRate")))
        if value is None:
            continue
        next_ms = info.get("nextFundingTime") or rate.get("fundingTimestamp")
        out.append(FundingRate(symbol=symbol, rate=value, next_funding_ms=int(next_ms) if next_ms else None))
    return out


def open_orders_of(raws: Iterable[Mapping], *, conditional: bool) -> list[ExchangeOrder]:
    """ccxt's `fetch_open_orders` answer for every symbol (no symbol given) → typed orders,
    each with its own exchange symbol id."""
    return [order_of(raw, str(_info(raw).get("symbol") or raw.get("symbol")), conditional=conditional)
            for raw in raws]
