"""Binance request parameters → validated order requests, with Binance's error for each fault.

The checks run in the order Binance applies them as far as it is observable: mandatory and
well-formed parameters first (-1102, -1100, -1116/-1117, -4120), then precision (-1111), the
client id (-4015), then the symbol's filters (-4003/-4005, -4014, -4023, -4006). What needs
the account or the market (reduce-only, notional, immediate trigger, margin, duplicate client
id) is the engine's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from paper_exchange.errors import BinanceError
from paper_exchange.models import CONDITIONAL_TYPES, Market

CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
LEGAL_NUMBER = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
SIDES = ("BUY", "SELL")
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTX")
# Everything Binance's /fapi/v1/order refers to the Algo Order API since the 2025 migration.
ALGO_ONLY_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                   "TRAILING_STOP_MARKET")


@dataclass(frozen=True)
class NewOrder:
    symbol: str
    side: str
    type: str  # MARKET / LIMIT
    qty: int  # steps
    price: int  # ticks, 0 for MARKET
    time_in_force: str
    reduce_only: bool
    client_id: str | None
    response_type: str  # ACK / RESULT


@dataclass(frozen=True)
class NewAlgoOrder:
    symbol: str
    side: str
    type: str  # STOP_MARKET / TAKE_PROFIT_MARKET / TRAILING_STOP_MARKET
    qty: int  # steps; 0 with close_position
    trigger: int  # ticks; 0 for trailing
    activate: int | None
    callback_rate: Decimal | None
    reduce_only: bool
    close_position: bool
    client_id: str | None
    working_type: str
    price_protect: bool


def required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise BinanceError(-1102, name)
    return value


def market_of(params: dict[str, str], markets: dict[str, Market]) -> Market:
    symbol = required(params, "symbol")
    market = markets.get(symbol.upper())
    if market is None:
        raise BinanceError(-1121)
    return market


def boolean(params: dict[str, str], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise BinanceError(-1130, name)
    return lowered == "true"


def integer(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not re.fullmatch(r"-?\d{1,19}", value):
        raise BinanceError(-1100, name, r"^[0-9]{1,20}$")
    return int(value)


def decimal(params: dict[str, str], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not NUMBER.match(value):
        raise BinanceError(-1100, name, LEGAL_NUMBER)
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise BinanceError(-1100, name, LEGAL_NUMBER) from None


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def quantity_steps(market: Market, qty: Decimal) -> int:
    if qty <= 0:
        raise BinanceError(-4003)
    if _decimals(qty) > market.quantity_precision:
        raise BinanceError(-1111)
    steps, rest = divmod(qty, market.step)
    if rest:
        raise BinanceError(-4023)
    if steps > market.max_qty_steps:
        raise BinanceError(-4005)
    return int(steps)


def price_ticks(market: Market, price: Decimal, below_zero_code: int) -> int:
    if price <= 0:
        raise BinanceError(below_zero_code)
    if _decimals(price) > market.price_precision:
        raise BinanceError(-1111)
    ticks, rest = divmod(price, market.tick)
    if rest:
        raise BinanceError(-4014)
    return int(ticks)


def _side(params: dict[str, str]) -> str:
    side = required(params, "side").upper()
    if side not in SIDES:
        raise BinanceError(-1117)
    return side


def _client_id(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not CLIENT_ID.match(value):
        raise BinanceError(-4015)
    return value


def _hedge_mode_params(params: dict[str, str]) -> None:
    side = params.get("positionSide")
    if side not in (None, "", "BOTH"):
        raise BinanceError(-4061)


def parse_new_order(params: dict[str, str], markets: dict[str, Market]) -> NewOrder:
    market = market_of(params, markets)
    side = _side(params)
    order_type = required(params, "type").upper()
    if order_type in ALGO_ONLY_TYPES:
        raise BinanceError(-4120)
    if order_type not in ("MARKET", "LIMIT"):
        raise BinanceError(-1116)
    _hedge_mode_params(params)
    if boolean(params, "closePosition"):
        raise BinanceError(-1106, "closePosition")
    qty_value = decimal(params, "quantity")
    if qty_value is None:
        raise BinanceError(-1102, "quantity")
    price_value = decimal(params, "price")
    if order_type == "LIMIT":
        if price_value is None:
            raise BinanceError(-1102, "price")
        tif = required(params, "timeInForce").upper()
        if tif not in TIME_IN_FORCE:
            raise BinanceError(-1115)
    else:
        if price_value is not None:
            raise BinanceError(-1106, "price")
        if params.get("timeInForce"):
            raise BinanceError(-1106, "timeInForce")
        tif = "GTC"
    client_id = _client_id(params, "newClientOrderId")
    qty = quantity_steps(market, qty_value)
    price = price_ticks(market, price_value, -4001) if price_value is not None else 0
    response_type = (params.get("newOrderRespType") or "ACK").upper()
    if response_type not in ("ACK", "RESULT"):
        raise BinanceError(-1130, "newOrderRespType")
    return NewOrder(
        symbol=market.symbol, side=side, type=order_type, qty=qty, price=price,
        time_in_force=tif, reduce_only=bool(boolean(params, "reduceOnly")),
        client_id=client_id, response_type=response_type,
    )


def parse_new_algo_order(params: dict[str, str], markets: dict[str, Market]) -> NewAlgoOrder:
    algo_type = required(params, "algoType").upper()
    if algo_type != "CONDITIONAL":
        raise BinanceError(-1130, "algoType")
    market = market_of(params, markets)
    side = _side(params)
    order_type = required(params, "type").upper()
    if order_type not in CONDITIONAL_TYPES:
        raise BinanceError(-1116)
    _hedge_mode_params(params)
    close_position = bool(boolean(params, "closePosition"))
    reduce_only = boolean(params, "reduceOnly")
    qty_value = decimal(params, "quantity")
    if close_position:
        if order_type == "TRAILING_STOP_MARKET":
            raise BinanceError(-1106, "closePosition")
        if qty_value is not None:
            raise BinanceError(-1106, "quantity")
        if reduce_only is not None:
            raise BinanceError(-1106, "reduceOnly")
    elif qty_value is None:
        raise BinanceError(-1102, "quantity")
    trigger_value = decimal(params, "triggerPrice")
    callback = activate_value = None
    if order_type == "TRAILING_STOP_MARKET":
        callback = decimal(params, "callbackRate")
        if callback is None:
            raise BinanceError(-1102, "callbackRate")
        if not Decimal("0.1") <= callback <= Decimal("10"):
            raise BinanceError(-1130, "callbackRate")
        activate_value = decimal(params, "activatePrice")
    elif trigger_value is None:
        raise BinanceError(-1102, "triggerPrice")
    working_type = (params.get("workingType") or "CONTRACT_PRICE").upper()
    if working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
        raise BinanceError(-1130, "workingType")
    client_id = _client_id(params, "clientAlgoId")
    qty = quantity_steps(market, qty_value) if qty_value is not None else 0
    trigger = price_ticks(market, trigger_value, -4006) if trigger_value is not None else 0
    if order_type == "TRAILING_STOP_MARKET":
        trigger = 0
    activate = price_ticks(market, activate_value, -4006) if activate_value is not None else None
    return NewAlgoOrder(
        symbol=market.symbol, side=side, type=order_type, qty=qty, trigger=trigger,
        activate=activate, callback_rate=callback, reduce_only=bool(reduce_only),
        close_position=close_position, client_id=client_id, working_type=working_type,
        price_protect=bool(boolean(params, "priceProtect")),
    )
