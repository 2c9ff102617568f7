"""Order activities: every order a TradeWorkflow sends, idempotent by client order id.

The caller (the workflow) derives each client id from its workflow id and step, so a retried
activity, a replayed workflow or a crashed worker asks the exchange about the same id. Every
placement therefore looks the id up first and places only when the exchange has never seen it;
a -4116 "duplicate" answer also means "already placed". Failures become `ApplicationError`s
via `to_application_error`: transient ones are retried by Temporal, the rest are not.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from exchange.client import ExchangeHolder, ExchangeSource, shared_order_exchange
from exchange.errors import FailureKind, classify_exchange_error
from activities.heartbeats import Heartbeats
from activities.market import resolve_symbol, to_decimal
from activities.circuit_breaker import CircuitBreaker
from activities.schemas.orders import (  # noqa: F401 (re-exported for callers of this module)
    WOULD_TRIGGER_IMMEDIATELY, CancelResult, ClosePositionRequest, ClosePositionResult, Fill,
    FillsRequest, FillsResult, FundingPayment, OrderRef, OrderResult, OrderType, PlaceOrderRequest,
    PositionRequest, PositionResult,
)
from activities.temporal_errors import to_application_error
from exchange.models import Position
from exchange.parse import fill_of, order_of, position_of
from trading.models import Side

# -- helpers -------------------------------------------------------------------------------------


def _order_result(order: dict, symbol_id: str, *, conditional: bool, existed: bool) -> OrderResult:
    return OrderResult(**dict(order_of(order, symbol_id, conditional=conditional)), already_existed=existed)


def _is_not_found(exc: BaseException) -> bool:
    return classify_exchange_error(exc).kind is FailureKind.ORDER_NOT_FOUND


def _application_error(exc: BaseException) -> ApplicationError:
    """`to_application_error`, but -2021 gets the type the workflow branches on."""
    failure = classify_exchange_error(exc)
    if failure.kind is FailureKind.WOULD_TRIGGER_IMMEDIATELY:
        return ApplicationError(
            f"order would trigger immediately ({failure.code}): {failure.message}; "
            "act at market instead",
            failure.as_details(), type=WOULD_TRIGGER_IMMEDIATELY, non_retryable=True,
        )
    return to_application_error(exc)


# -- activities ----------------------------------------------------------------------------------


class OrderActivities:
    def __init__(self, exchange: ExchangeSource = shared_order_exchange, breaker: CircuitBreaker | None = None) -> None:
        """`breaker`: counts failed order requests and sets safe mode when they pile up
        (activities/circuit_breaker.py); None: nothing counted (tests of the mechanics)."""
        self._holder = ExchangeHolder(exchange)
        self._breaker = breaker

    async def _client(self, symbol: str) -> tuple[Any, str, str]:
        exchange = await self._holder.exchange()
        unified = resolve_symbol(exchange, symbol)
        return exchange, unified, exchange.market(unified)["id"]

    async def _lookup(self, exchange: Any, unified: str, symbol_id: str, client_id: str,
                      conditional: bool) -> OrderResult | None:
        params: dict[str, Any] = {"clientOrderId": client_id}
        if conditional:
            params["trigger"] = True
        try:
            order = await exchange.fetch_order(None, unified, params)
        except Exception as exc:  # noqa: BLE001
            if _is_not_found(exc):
                return None
            raise to_application_error(exc) from exc
        return _order_result(order, symbol_id, conditional=conditional, existed=True)

    async def exchange(self) -> Any:
        """The order client itself, markets loaded (reconciliation reads the whole account)."""
        return await self._holder.exchange()

    # The entry activity (activities/entry.py) builds on these.
    client = _client
    lookup = _lookup

    @staticmethod
    async def _set_leverage(exchange: Any, unified: str, leverage: int, isolated: bool) -> str:
        mode = "isolated" if isolated else "cross"
        for call in (lambda: exchange.set_margin_mode(mode, unified),
                     lambda: exchange.set_leverage(leverage, unified)):
            try:
                await call()
            except Exception as exc:  # noqa: BLE001
                if classify_exchange_error(exc).kind is not FailureKind.ALREADY_SET:
                    raise to_application_error(exc) from exc
        return mode

    set_margin_and_leverage = _set_leverage  # (for activities/entry.py)

    @activity.defn(name="place_order")
    async def place_order(self, request: PlaceOrderRequest) -> OrderResult:
        exchange, unified, symbol_id = await self._client(request.symbol)
        conditional = request.type.conditional
        cid = request.client_order_id
        # A previous attempt may have placed it (and lost the answer): never place twice.
        existing = await self._lookup(exchange, unified, symbol_id, cid, conditional)
        if existing is not None:
            return existing
        return await self.send_new(exchange, unified, symbol_id, request)

    async def send_new(self, exchange: Any, unified: str, symbol_id: str,
                       request: PlaceOrderRequest, signing: dict[str, int] | None = None) -> OrderResult:
        """Send an order the exchange was just asked about and does not have (`_lookup`).
        `signing`: `timestamp` / `recvWindow` to sign it with (the entry binds its request to
        its attempt's start: see activities/entry.py)."""
        conditional = request.type.conditional
        cid = request.client_order_id
        if request.leverage is not None:
            await self._set_leverage(exchange, unified, request.leverage, isolated=True)
        order_type, params = self._ccxt_order(exchange, unified, request)
        params.update(signing or {})
        try:
            order = await exchange.create_order(
                unified, order_type, request.side.value.lower(),
                float(exchange.amount_to_precision(unified, request.quantity)),
                float(request.price) if request.price is not None else None, params)
        except Exception as exc:  # noqa: BLE001
            kind = classify_exchange_error(exc).kind
            if kind is FailureKind.DUPLICATE_CLIENT_ORDER_ID:
                found = await self._lookup(exchange, unified, symbol_id, cid, conditional)
                if found is not None:
                    return found
            error = _application_error(exc)
            if self._breaker is not None:
                await self._breaker.order_failed(kind, f"{request.type} {cid}: {error}")
            raise error from exc
        activity.logger.info("placed %s %s %s cid=%s", request.type, request.side, symbol_id, cid)
        return _order_result(order, symbol_id, conditional=conditional, existed=False)

    @staticmethod
    def _ccxt_order(exchange: Any, unified: str, request: PlaceOrderRequest) -> tuple[str, dict]:
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.reduce_only:
            params["reduceOnly"] = True
        kind = request.type
        if kind is OrderType.LIMIT:
            if request.price is None:
                raise ApplicationError("LIMIT needs a price", type=FailureKind.BAD_REQUEST.value,
                                       non_retryable=True)
            params["timeInForce"] = request.time_in_force or "GTC"
            return "limit", params
        if kind is OrderType.MARKET:
            return "market", params
        if kind is OrderType.TRAILING_STOP_MARKET:
            if request.callback_rate_pct is None:
                raise ApplicationError("TRAILING_STOP_MARKET needs callback_rate_pct",
                                       type=FailureKind.BAD_REQUEST.value, non_retryable=True)
            params["callbackRate"] = float(request.callback_rate_pct)
            if request.activation_price is not None:
                params["activationPrice"] = float(request.activation_price)
            return "TRAILING_STOP_MARKET", params
        if request.trigger_price is None:
            raise ApplicationError(f"{kind} needs a trigger_price",
                                   type=FailureKind.BAD_REQUEST.value, non_retryable=True)
        params["triggerPrice"] = float(exchange.price_to_precision(unified, request.trigger_price))
        return kind.value, params

    @activity.defn(name="get_order")
    async def get_order(self, request: OrderRef) -> OrderResult | None:
        """The order with this client id, or None if the exchange never accepted it."""
        exchange, unified, symbol_id = await self._client(request.symbol)
        return await self._lookup(exchange, unified, symbol_id, request.client_order_id,
                                  request.conditional)

    @activity.defn(name="cancel_order")
    async def cancel_order(self, request: OrderRef) -> CancelResult:
        """Cancel if still open. Unknown or already finished orders are a success."""
        exchange, unified, symbol_id = await self._client(request.symbol)
        cid, conditional = request.client_order_id, request.conditional
        order = await self._lookup(exchange, unified, symbol_id, cid, conditional)
        if order is None:
            return CancelResult(found=False, canceled_now=False)
        if not order.is_open:
            return CancelResult(found=True, canceled_now=False, order=order)
        canceled_now = True
        try:
            await exchange.cancel_order(order.order_id, unified, {"trigger": True} if conditional else {})
        except Exception as exc:  # noqa: BLE001
            if not _is_not_found(exc):  # it filled or was cancelled in between: fine
                raise to_application_error(exc) from exc
            canceled_now = False
        final = await self._lookup(exchange, unified, symbol_id, cid, conditional)
        return CancelResult(found=True, canceled_now=canceled_now, order=final or order)

    async def _signed_position(self, exchange: Any, unified: str) -> tuple[Decimal, Position | None]:
        try:
            positions = await exchange.fetch_positions([unified], {"useV2": True})
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        for raw in positions:
            position = position_of(raw) if raw.get("symbol") == unified else None
            if position is not None:
                return position.quantity, position
        return Decimal(0), None

    signed_position = _signed_position  # (for activities/entry.py)

    @activity.defn(name="close_position")
    async def close_position(self, request: ClosePositionRequest) -> ClosePositionResult:
        # Heartbeats: with the cancels and the fills in the same attempt, a busy order throttle
        # can make it long (mass closes); a dead worker is still noticed within seconds. A
        # second attempt meeting one still in flight cannot over-close: both are reduce-only
        # and each reads the position first.
        async with Heartbeats():
            return await self._close_position(request)

    async def _close_position(self, request: ClosePositionRequest) -> ClosePositionResult:
        exchange, unified, symbol_id = await self._client(request.symbol)
        cid = request.client_order_id
        # A retry after the close went through finds the order and must not look for more.
        existing = await self._lookup(exchange, unified, symbol_id, cid, False)
        quantity, _ = await self._signed_position(exchange, unified)
        if existing is not None:
            result = ClosePositionResult(was_flat=False, order=existing, remaining_quantity=quantity)
        elif quantity == 0:
            result = ClosePositionResult(was_flat=True, remaining_quantity=Decimal(0))
        else:
            order = await self.place_order(PlaceOrderRequest(
                symbol=symbol_id, side=Side.SELL if quantity > 0 else Side.BUY,
                type=OrderType.MARKET, quantity=abs(quantity), client_order_id=cid, reduce_only=True,
            ))
            remaining, _ = await self._signed_position(exchange, unified)
            result = ClosePositionResult(was_flat=False, order=order, remaining_quantity=remaining)
        if result.remaining_quantity == 0:
            await self._after_flat(request, result)
        return result

    async def _after_flat(self, request: ClosePositionRequest, result: ClosePositionResult) -> None:
        """Cancel the trade's stops, then read its fills. Refusals on their merits are reported;
        transient failures raised (the retry finds the close by its client id and goes on)."""
        for stop_id in request.cancel_stop_client_order_ids:
            try:
                await self.cancel_order(OrderRef(symbol=request.symbol, client_order_id=stop_id, conditional=True))
            except ApplicationError as err:
                if not err.non_retryable:
                    raise
                result.stops_not_cancelled.append(stop_id)
        if request.fills is not None:
            try:
                result.fills = await self.get_fills(request.fills)
            except ApplicationError as err:
                if not err.non_retryable:
                    raise
                result.fills_error = str(err)

    @activity.defn(name="get_position")
    async def get_position(self, request: PositionRequest) -> PositionResult:
        exchange, unified, symbol_id = await self._client(request.symbol)
        quantity, position = await self._signed_position(exchange, unified)
        try:
            time_ms = int(await exchange.fetch_time())
            leverage = position.leverage if position else None
            if leverage is None:  # flat: positionRisk lists nothing, ask for the setting
                leverage = (await exchange.fetch_leverage(unified)).get("longLeverage")
            mark = None
            if position is None:
                mark = (await exchange.fetch_mark_price(unified)).get("markPrice")
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        if position is None:
            return PositionResult(symbol=symbol_id, quantity=Decimal(0),
                                  leverage=int(leverage) if leverage else None,
                                  mark_price=to_decimal(mark), exchange_time_ms=time_ms)
        return PositionResult(
            symbol=symbol_id, quantity=quantity, entry_price=position.entry_price,
            liquidation_price=position.liquidation_price, leverage=int(leverage) if leverage else None,
            margin_mode=position.margin_mode, unrealized_pnl=position.unrealized_pnl,
            mark_price=position.mark_price, exchange_time_ms=time_ms,
        )

    @activity.defn(name="get_fills")
    async def get_fills(self, request: FillsRequest) -> FillsResult:
        exchange, unified, symbol_id = await self._client(request.symbol)
        try:
            raw: dict[str, dict] = {}
            client_of: dict[str, str] = {}
            for cid in request.client_order_ids:
                # Fills belong to regular orders; a triggered stop's market order has its id.
                order = await self._lookup(exchange, unified, symbol_id, cid, False)
                if order is None:
                    continue
                client_of[order.order_id] = cid
                for t in await exchange.fetch_my_trades(unified, None, 1000, {"orderId": order.order_id}):
                    raw[str(t["id"])] = t
            if request.since_ms is not None:
                # The symbol's fills since the entry (a triggered stop's market order is known by
                # no id of ours), but none older than this trade's own first fill: trade ids only
                # grow, and an earlier trade's fills can share the entry's millisecond (a market
                # clock that stands still, a quick re-entry) and were counted twice before.
                first_own = min((int(i) for i in raw), default=None)
                for t in await self._trades_since(exchange, unified, request.since_ms):
                    if first_own is None or int(t["id"]) >= first_own:
                        raw[str(t["id"])] = t
            funding = []
            if request.funding_since_ms is not None:
                funding = await self._funding_since(exchange, symbol_id, request.funding_since_ms)
        except ApplicationError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise to_application_error(exc) from exc
        fills = sorted((self._fill(t, client_of) for t in raw.values()),
                       key=lambda f: (f.time_ms, int(f.trade_id)))
        return FillsResult(
            symbol=symbol_id, fills=fills, funding=funding,
            realized_pnl=sum((f.realized_pnl for f in fills), Decimal(0)),
            fees=sum((f.fee for f in fills), Decimal(0)),
            funding_total=sum((p.amount for p in funding), Decimal(0)),
        )

    @staticmethod
    async def _trades_since(exchange: Any, unified: str, since_ms: int) -> list[dict]:
        trades = await exchange.fetch_my_trades(unified, since_ms, 1000)
        page = trades
        while len(page) == 1000:  # more than one page: continue by trade id
            last_id = max(int(t["id"]) for t in page)
            page = await exchange.fetch_my_trades(unified, None, 1000, {"fromId": last_id + 1})
            trades += page
        return trades

    @staticmethod
    async def _funding_since(exchange: Any, symbol_id: str, since_ms: int) -> list[FundingPayment]:
        payments: list[FundingPayment] = []
        start = since_ms
        while True:
            page = await exchange.fapiPrivateGetIncome(
                {"symbol": symbol_id, "incomeType": "FUNDING_FEE", "startTime": start, "limit": 1000})
            payments += [FundingPayment(amount=Decimal(str(p["income"])), time_ms=int(p["time"]))
                         for p in page]
            if len(page) < 1000:
                return payments
            start = max(int(p["time"]) for p in page) + 1

    @staticmethod
    def _fill(trade: dict, client_of: dict[str, str]) -> Fill:
        return fill_of(trade, client_of)
