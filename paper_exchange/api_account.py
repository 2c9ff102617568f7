"""Account endpoints: balances, positions, income, leverage, margin and position mode."""

from __future__ import annotations

from paper_exchange import shapes
from paper_exchange.api import Call, route, window
from paper_exchange.errors import BinanceError
from paper_exchange.order_params import boolean, required

SEVEN_DAYS_MS = 7 * 86_400_000
INCOME_TYPES = ("REALIZED_PNL", "COMMISSION", "FUNDING_FEE", "INSURANCE_CLEAR", "TRANSFER")


@route("GET", "/fapi/v3/account", private=True)
def account_v3(call: Call):
    return shapes.account(call.engine, 3)


@route("GET", "/fapi/v2/account", private=True)
def account_v2(call: Call):
    return shapes.account(call.engine, 2)


@route("GET", "/fapi/v3/balance", private=True)
def balance_v3(call: Call):
    return shapes.balance(call.engine)


@route("GET", "/fapi/v2/balance", private=True)
def balance_v2(call: Call):
    return shapes.balance(call.engine)


@route("GET", "/fapi/v3/positionRisk", private=True)
def position_risk_v3(call: Call):
    market = call.optional_market()
    return shapes.position_risk(call.engine, 3, market.symbol if market else None)


@route("GET", "/fapi/v2/positionRisk", private=True)
def position_risk_v2(call: Call):
    market = call.optional_market()
    return shapes.position_risk(call.engine, 2, market.symbol if market else None)


@route("GET", "/fapi/v1/income", private=True)
def income(call: Call):
    market = call.optional_market()
    kind = call.params.get("incomeType") or None
    if kind is not None and kind not in INCOME_TYPES:
        raise BinanceError(-1130, "incomeType")
    records = [r for r in call.engine.income
               if (market is None or r.symbol == market.symbol)
               and (kind is None or r.income_type == kind)]
    selected = window(call, records, lambda r: r.time, 100, 1000, default_span=SEVEN_DAYS_MS)
    return [shapes.income(r) for r in selected]


@route("POST", "/fapi/v1/leverage", private=True)
def set_leverage(call: Call):
    market = call.market()
    leverage = call.int_param("leverage")
    if leverage is None:
        raise BinanceError(-1102, "leverage")
    call.engine.set_leverage(market.symbol, leverage)
    return {"leverage": leverage, "maxNotionalValue": "1000000000", "symbol": market.symbol}


@route("POST", "/fapi/v1/marginType", private=True)
def set_margin_type(call: Call):
    """Positions are isolated only: ISOLATED is a no-op (-4046); CROSSED is not modelled."""
    call.market()
    margin_type = required(call.params, "marginType").upper()
    if margin_type == "ISOLATED":
        raise BinanceError(-4046)
    raise BinanceError(-1130, "marginType")


@route("GET", "/fapi/v1/symbolConfig", private=True)
def symbol_config(call: Call):
    """Per-symbol leverage and margin type (ccxt's fetch_leverage / fetch_margin_mode)."""
    market = call.optional_market()
    symbols = [market.symbol] if market else call.engine.symbols
    return [{"symbol": s, "marginType": "ISOLATED", "isAutoAddMargin": "false",
             "leverage": call.engine.leverage[s], "maxNotionalValue": "1000000000"}
            for s in symbols]


@route("GET", "/fapi/v1/leverageBracket", private=True)
def leverage_bracket(call: Call):
    market = call.optional_market()
    if market is not None:
        return shapes.leverage_bracket(market)
    return [shapes.leverage_bracket(m) for m in call.svc.markets.values()]


@route("GET", "/fapi/v1/positionSide/dual", private=True)
def position_mode(call: Call):
    return {"dualSidePosition": False}


@route("POST", "/fapi/v1/positionSide/dual", private=True)
def set_position_mode(call: Call):
    """One-way mode only: asking for it again is -4059, hedge mode is not modelled."""
    dual = boolean(call.params, "dualSidePosition")
    if dual is None:
        raise BinanceError(-1102, "dualSidePosition")
    if not dual:
        raise BinanceError(-4059)
    raise BinanceError(-1130, "dualSidePosition")


@route("GET", "/fapi/v1/multiAssetsMargin", private=True)
def multi_assets_margin(call: Call):
    return {"multiAssetsMargin": False}


@route("GET", "/fapi/v1/commissionRate", private=True)
def commission_rate(call: Call):
    market = call.market()
    fees = call.engine.fees
    return {"symbol": market.symbol, "makerCommissionRate": f"{fees.maker:.6f}",
            "takerCommissionRate": f"{fees.taker:.6f}", "rpiCommissionRate": "0"}

