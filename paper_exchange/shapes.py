"""Binance USD-M JSON shapes, field for field what ccxt's binance parsers read.

Numbers go out as strings with the market's precision (prices, quantities) or 8 decimals
(money), as Binance sends them; ids and times as integers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from paper_exchange import ledger
from paper_exchange.engine import Engine
from paper_exchange.models import ZERO, AlgoOrder, Income, Market, Order, Trade, money, plain
from paper_exchange.replay import CANDLE_MS, SymbolPath, next_funding_time, round_half_up

DAY_MS = 86_400_000
ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
               "TRAILING_STOP_MARKET"]


def m8(value: Decimal) -> str:
    return f"{money(value):.8f}"


def exchange_info(markets: dict[str, Market], now: int, onboard: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [_symbol_info(m, onboard) for m in markets.values()],
    }


def _symbol_info(m: Market, onboard: int) -> dict[str, Any]:
    tick, step = plain(m.tick), plain(m.step)
    max_qty = plain(m.qty(m.max_qty_steps))
    return {
        "symbol": m.symbol, "pair": m.symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": onboard, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": m.base, "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": m.price_precision, "quantityPrecision": m.quantity_precision,
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
        "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "100000000",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": max_qty, "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": max_qty,
             "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": plain(m.min_notional)},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
             "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def order(o: Order, m: Market, *, query: bool = False, ack: bool = False) -> dict[str, Any]:
    """Order as /fapi/v1/order returns it (`query` adds `time`; ACK shows it as accepted)."""
    executed, cum, avg, status = o.executed, o.cum_quote, o.avg_price, o.status
    if ack:
        executed, cum, avg, status = 0, ZERO, ZERO, "NEW"
    out = {
        "orderId": o.order_id, "symbol": o.symbol, "status": status,
        "clientOrderId": o.client_id, "price": m.fmt_price(o.price),
        "avgPrice": f"{avg:.{m.price_precision + 3}f}", "origQty": m.fmt_qty(o.qty),
        "executedQty": m.fmt_qty(executed), "cumQty": m.fmt_qty(executed),
        "cumQuote": m8(cum), "timeInForce": o.time_in_force, "type": o.type,
        "reduceOnly": o.reduce_only, "closePosition": o.close_position, "side": o.side,
        "positionSide": "BOTH", "stopPrice": m.fmt_price(o.stop_price),
        "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.orig_type,
        "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
        "updateTime": o.update_time,
    }
    if query:
        out["time"] = o.time
    return out


def algo_order(a: AlgoOrder, m: Market) -> dict[str, Any]:
    trailing = a.order_type == "TRAILING_STOP_MARKET"
    return {
        "algoId": a.algo_id, "clientAlgoId": a.client_id, "algoType": "CONDITIONAL",
        "orderType": a.order_type, "symbol": a.symbol, "side": a.side, "positionSide": "BOTH",
        "timeInForce": "GTC", "quantity": m.fmt_qty(a.qty), "algoStatus": a.status,
        "actualOrderId": str(a.actual_order_id) if a.actual_order_id else "",
        "actualPrice": m.fmt_price(a.actual_price if a.actual_price is not None else ZERO),
        "triggerPrice": m.fmt_price(a.trigger), "price": m.fmt_price(0),
        "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type, "priceMatch": "NONE",
        "closePosition": a.close_position, "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "activatePrice": m.fmt_price(a.activate) if trailing and a.activate else "",
        "callbackRate": plain(a.callback_rate) if trailing and a.callback_rate else "",
        "createTime": a.create_time, "updateTime": a.update_time,
        "triggerTime": a.trigger_time, "goodTillDate": 0,
    }


def algo_cancel(a: AlgoOrder) -> dict[str, Any]:
    return {"algoId": a.algo_id, "clientAlgoId": a.client_id, "code": "200", "msg": "success"}


def trade(t: Trade, m: Market) -> dict[str, Any]:
    return {
        "buyer": t.side == "BUY", "commission": m8(t.commission), "commissionAsset": "USDT",
        "id": t.trade_id, "maker": t.maker, "orderId": t.order_id,
        "price": m.fmt_price(t.price), "qty": m.fmt_qty(t.qty), "quoteQty": m8(t.quote_qty),
        "realizedPnl": m8(t.realized_pnl), "side": t.side, "positionSide": "BOTH",
        "symbol": t.symbol, "time": t.time,
    }


def income(r: Income) -> dict[str, Any]:
    return {
        "symbol": r.symbol, "incomeType": r.income_type, "income": m8(r.income),
        "asset": "USDT", "info": r.info or r.income_type, "time": r.time,
        "tranId": r.tran_id, "tradeId": r.trade_id,
    }


# -- positions and account ----------------------------------------------------------------------


class PositionView:
    """Everything the account endpoints say about one symbol, at the current price."""

    def __init__(self, engine: Engine, symbol: str) -> None:
        m = engine.markets[symbol]
        p = engine.positions[symbol]
        self.market, self.position = m, p
        self.taker = engine.fees.taker
        self.mark = engine.price_ticks(symbol)
        self.leverage = engine.leverage[symbol]
        self.notional = ledger.notional(p, m, self.mark)
        self.upnl = ledger.unrealized_pnl(p, m, self.mark)
        self.initial = money(abs(self.notional) / self.leverage)
        self.maint = money(abs(self.notional) * m.mmr)
        self.order_margin = sum((o.reserved_margin for o in engine.open_orders[symbol].values()),
                                ZERO)
        self.liq = ledger.liquidation_price(p, m)
        self.has_orders = bool(engine.open_orders[symbol] or engine.open_algos[symbol])

    def break_even(self) -> Decimal:
        p = self.position
        if not p.qty:
            return ZERO
        # Entry moved by the taker fee of the open and of the close.
        return p.entry * (1 + 2 * self.taker) if p.qty > 0 else p.entry * (1 - 2 * self.taker)

    def risk_v3(self) -> dict[str, Any]:
        m, p = self.market, self.position
        return {
            "symbol": m.symbol, "positionSide": "BOTH", "positionAmt": m.fmt_qty(p.qty),
            "entryPrice": plain_price(p.entry), "breakEvenPrice": plain_price(self.break_even()),
            "markPrice": m.fmt_price(self.mark), "unRealizedProfit": m8(self.upnl),
            "liquidationPrice": plain_price(self.liq),
            "isolatedMargin": m8(p.isolated_wallet + self.upnl), "notional": m8(self.notional),
            "marginAsset": "USDT", "isolatedWallet": m8(p.isolated_wallet),
            "initialMargin": m8(self.initial + self.order_margin), "maintMargin": m8(self.maint),
            "positionInitialMargin": m8(self.initial),
            "openOrderInitialMargin": m8(self.order_margin), "adl": 0, "bidNotional": "0",
            "askNotional": "0", "updateTime": p.update_time,
        }

    def risk_v2(self) -> dict[str, Any]:
        m, p = self.market, self.position
        return {
            "symbol": m.symbol, "positionAmt": m.fmt_qty(p.qty), "entryPrice": plain_price(p.entry),
            "breakEvenPrice": plain_price(self.break_even()), "markPrice": m.fmt_price(self.mark),
            "unRealizedProfit": m8(self.upnl), "liquidationPrice": plain_price(self.liq),
            "leverage": str(self.leverage), "maxNotionalValue": "1000000000",
            "marginType": "isolated", "isolatedMargin": m8(p.isolated_wallet + self.upnl),
            "isAutoAddMargin": "false", "positionSide": "BOTH", "notional": m8(self.notional),
            "isolatedWallet": m8(p.isolated_wallet), "updateTime": p.update_time,
            "isolated": True, "adlQuantile": 0,
        }

    def account_v3(self) -> dict[str, Any]:
        m, p = self.market, self.position
        return {
            "symbol": m.symbol, "positionSide": "BOTH", "positionAmt": m.fmt_qty(p.qty),
            "unrealizedProfit": m8(self.upnl), "isolatedMargin": m8(p.isolated_wallet + self.upnl),
            "notional": m8(self.notional), "isolatedWallet": m8(p.isolated_wallet),
            "initialMargin": m8(self.initial + self.order_margin), "maintMargin": m8(self.maint),
            "updateTime": p.update_time,
        }

    def account_v2(self) -> dict[str, Any]:
        m, p = self.market, self.position
        return {
            "symbol": m.symbol, "initialMargin": m8(self.initial + self.order_margin),
            "maintMargin": m8(self.maint), "unrealizedProfit": m8(self.upnl),
            "positionInitialMargin": m8(self.initial),
            "openOrderInitialMargin": m8(self.order_margin), "leverage": str(self.leverage),
            "isolated": True, "entryPrice": plain_price(p.entry),
            "breakEvenPrice": plain_price(self.break_even()), "maxNotional": "1000000000",
            "bidNotional": "0", "askNotional": "0", "positionSide": "BOTH",
            "positionAmt": m.fmt_qty(p.qty), "notional": m8(self.notional),
            "isolatedWallet": m8(p.isolated_wallet), "updateTime": p.update_time,
        }


def plain_price(value: Decimal) -> str:
    return "0.0" if not value else plain(value.quantize(Decimal("0.00000001")))


def views(engine: Engine) -> list[PositionView]:
    return [PositionView(engine, s) for s in engine.symbols]


def usdt_asset(engine: Engine, vs: list[PositionView]) -> dict[str, Any]:
    upnl = sum((v.upnl for v in vs), ZERO)
    pos_im = sum((v.initial for v in vs), ZERO)
    order_im = sum((v.order_margin for v in vs), ZERO)
    isolated = sum((v.position.isolated_wallet for v in vs), ZERO)
    available = engine.available()
    return {
        "asset": "USDT", "walletBalance": m8(engine.wallet), "unrealizedProfit": m8(upnl),
        "marginBalance": m8(engine.wallet + upnl),
        "maintMargin": m8(sum((v.maint for v in vs), ZERO)),
        "initialMargin": m8(pos_im + order_im), "positionInitialMargin": m8(pos_im),
        "openOrderInitialMargin": m8(order_im), "crossWalletBalance": m8(engine.wallet - isolated),
        "crossUnPnl": m8(ZERO), "availableBalance": m8(available),
        "maxWithdrawAmount": m8(max(ZERO, available)), "marginAvailable": True,
        "updateTime": max(1, engine.account_update_ms),
    }


def account(engine: Engine, version: int) -> dict[str, Any]:
    vs = views(engine)
    asset = usdt_asset(engine, vs)
    totals = {
        "totalInitialMargin": asset["initialMargin"], "totalMaintMargin": asset["maintMargin"],
        "totalWalletBalance": asset["walletBalance"],
        "totalUnrealizedProfit": asset["unrealizedProfit"],
        "totalMarginBalance": asset["marginBalance"],
        "totalPositionInitialMargin": asset["positionInitialMargin"],
        "totalOpenOrderInitialMargin": asset["openOrderInitialMargin"],
        "totalCrossWalletBalance": asset["crossWalletBalance"],
        "totalCrossUnPnl": asset["crossUnPnl"], "availableBalance": asset["availableBalance"],
        "maxWithdrawAmount": asset["maxWithdrawAmount"],
    }
    if version == 3:
        positions = [v.account_v3() for v in vs if v.position.qty or v.has_orders]
        return {**totals, "assets": [asset], "positions": positions}
    return {
        "feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
        "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1,
        **totals, "assets": [asset], "positions": [v.account_v2() for v in vs],
    }


def balance(engine: Engine) -> list[dict[str, Any]]:
    asset = usdt_asset(engine, views(engine))
    return [{
        "accountAlias": "paper", "asset": "USDT", "balance": asset["walletBalance"],
        "crossWalletBalance": asset["crossWalletBalance"], "crossUnPnl": asset["crossUnPnl"],
        "availableBalance": asset["availableBalance"],
        "maxWithdrawAmount": asset["maxWithdrawAmount"], "marginAvailable": True,
        "updateTime": asset["updateTime"],
    }]


def position_risk(engine: Engine, version: int, symbol: str | None) -> list[dict[str, Any]]:
    symbols = [symbol] if symbol else engine.symbols
    vs = [PositionView(engine, s) for s in symbols]
    if version == 3:
        return [v.risk_v3() for v in vs if v.position.qty or v.has_orders]
    return [v.risk_v2() for v in vs]


def leverage_bracket(m: Market) -> dict[str, Any]:
    return {
        "symbol": m.symbol, "notionalCoef": 1.0,
        "brackets": [{
            "bracket": 1, "initialLeverage": m.max_leverage, "notionalCap": 1_000_000_000,
            "notionalFloor": 0, "maintMarginRatio": float(m.mmr), "cum": 0.0,
        }],
    }


# -- market data --------------------------------------------------------------------------------


def ticker_24h(engine: Engine, path: SymbolPath, symbol: str, now: int) -> dict[str, Any]:
    m = engine.markets[symbol]
    start = max(path.epoch, now - DAY_MS)
    first, current = path.index_at(start), path.index_at(now)
    candles = [path.candle(i) for i in range(first, current)]
    candles.append(path.partial(current, now))
    last = engine.price_ticks(symbol)
    open_price = round_half_up(path.price_at(start))
    high = max(max(c[1] for c in candles), last)
    low = min(min(c[2] for c in candles), last)
    volume = sum(c[4] for c in candles)
    change = m.price(last) - m.price(open_price)
    weighted = m.price(round_half_up((high + low + last) / 3))
    base_volume = Decimal(repr(volume)).quantize(Decimal("0.001"))
    return {
        "symbol": symbol, "priceChange": m.fmt_price(change),
        "priceChangePercent": f"{change / m.price(open_price) * 100:.3f}",
        "weightedAvgPrice": m.fmt_price(weighted), "lastPrice": m.fmt_price(last),
        "lastQty": m.fmt_qty(1), "openPrice": m.fmt_price(open_price),
        "highPrice": m.fmt_price(high), "lowPrice": m.fmt_price(low),
        "volume": plain(base_volume) if base_volume else "0",
        "quoteVolume": m8(base_volume * m.price(last)),
        "openTime": start, "closeTime": now, "firstId": 1, "lastId": max(1, len(candles)),
        "count": len(candles),
    }


def ticker_price(engine: Engine, symbol: str, now: int) -> dict[str, Any]:
    m = engine.markets[symbol]
    return {"symbol": symbol, "price": m.fmt_price(engine.price_ticks(symbol)), "time": now}


def book_ticker(engine: Engine, symbol: str, now: int) -> dict[str, Any]:
    m = engine.markets[symbol]
    price = m.fmt_price(engine.price_ticks(symbol))
    qty = m.fmt_qty(m.max_qty_steps)
    return {"symbol": symbol, "bidPrice": price, "bidQty": qty, "askPrice": price,
            "askQty": qty, "time": now, "lastUpdateId": now}


def premium_index(engine: Engine, symbol: str, now: int) -> dict[str, Any]:
    m = engine.markets[symbol]
    price = m.fmt_price(engine.price_ticks(symbol))
    rate = engine.funding[symbol].rate_at(now)
    return {
        "symbol": symbol, "markPrice": price, "indexPrice": price,
        "estimatedSettlePrice": price, "lastFundingRate": f"{rate:.8f}",
        "interestRate": "0.00010000", "nextFundingTime": next_funding_time(now), "time": now,
    }


def kline_row(m: Market, row: tuple) -> list[Any]:
    o_time, o, h, low, c, volume, c_time = row
    vol = Decimal(repr(volume)).quantize(Decimal("0.001"))
    quote = vol * m.price(c)
    return [o_time, m.fmt_price(o), m.fmt_price(h), m.fmt_price(low), m.fmt_price(c),
            plain(vol) if vol else "0", c_time, m8(quote), max(1, (c_time - o_time) // CANDLE_MS),
            plain(vol / 2) if vol else "0", m8(quote / 2), "0"]
