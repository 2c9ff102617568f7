"""The order half of the engine: placing, filling, triggering, cancelling, liquidating.

`OrderFlow` is a mixin of `Engine` (engine.py), which owns the state it works on (markets,
positions, orders, wallet, change tracking) and calls `_fill_resting`, `_trigger` and
`_liquidate` when the replay reaches a resting order or a liquidation price. Validation here is
what needs the account or the market: client id in use (-4116), reduce-only (-2022),
notional (-4164), immediate trigger (-2021), post-only (-5022), FOK (-5021), margin (-2019).
"""

from __future__ import annotations

import random
from decimal import Decimal

from paper_exchange import ledger
from paper_exchange.errors import BinanceError
from paper_exchange.models import ZERO, AlgoOrder, Order, Trade, money, plain
from paper_exchange.order_params import NewAlgoOrder, NewOrder

# How client ids may be reused (QT_PAPER_CLIENT_ID_REUSE; the rule is in engine.py
# `_check_client_id`): "binance" = unique among open orders, "never" = once per account.
REUSE_BINANCE, REUSE_NEVER = "binance", "never"
CLIENT_ID_REUSE = (REUSE_BINANCE, REUSE_NEVER)


class OrderFlow:
    def _margin_check(self, symbol: str, sign: int, qty: int, price_ticks: int,
                      reduce_only: bool, fee_rate: Decimal) -> Decimal:
        """Initial margin the order's opening part needs; -2019 when not available."""
        market = self.markets[symbol]
        if reduce_only:
            return ZERO
        _, opening = ledger.split(self.positions[symbol].qty, sign, qty)
        margin = ledger.initial_margin(market, opening, price_ticks, self.leverage[symbol])
        fee = money(market.price(price_ticks) * market.qty(qty) * fee_rate)
        if margin + fee > self.available():
            raise BinanceError(-2019)
        return margin

    # -- fills ----------------------------------------------------------------------------------

    def _execute(self, order: Order, qty: int, price_ticks: int, t: int, maker: bool,
                 fee: bool = True) -> None:
        """Fill `qty` steps of `order` at `price_ticks`: position, wallet, trade, income."""
        symbol = order.symbol
        market = self.markets[symbol]
        sign = 1 if order.side == "BUY" else -1
        position = self.positions[symbol]
        result = ledger.apply_fill(position, market, sign, qty, price_ticks,
                                   self.leverage[symbol])
        commission = money(result.notional * (self.fees.maker if maker else self.fees.taker))
        if not fee:
            commission = ZERO
        self.wallet += result.realized_pnl - commission
        position.update_time = self.account_update_ms = t
        trade = Trade(self._next("next_trade_id"), symbol, order.order_id, order.side,
                      price_ticks, qty, result.notional, commission, result.realized_pnl,
                      maker, t)
        self.trades.append(trade)
        self.changes.trades.append(trade)
        if result.closing and result.realized_pnl:
            self._income(symbol, "REALIZED_PNL", result.realized_pnl, t, str(trade.trade_id))
        if commission:
            self._income(symbol, "COMMISSION", -commission, t, str(trade.trade_id))
        order.executed += qty
        order.cum_quote += result.notional
        order.avg_price = (order.cum_quote / market.qty(order.executed)).quantize(
            Decimal(1).scaleb(-(market.price_precision + 3)))
        order.update_time = t
        self.changes.positions.add(symbol)
        self.changes.orders.add(order.order_id)
        self._touch(symbol)

    def _new_order(self, symbol: str, client_id: str, side: str, order_type: str,
                   orig_type: str, tif: str, price: int, qty: int, reduce_only: bool,
                   t: int, close_position: bool = False, stop_price: int = 0) -> Order:
        order = Order(self._next("next_order_id"), symbol, client_id, side, order_type,
                      orig_type, tif, price, qty, reduce_only, "NEW", t, t,
                      close_position=close_position, stop_price=stop_price)
        self.orders[order.order_id] = order
        self.order_by_client[(symbol, client_id)] = order
        self.changes.orders.add(order.order_id)
        return order

    def _market_fill_price(self, order_id: int, side: str, price: int) -> int:
        """The current price, moved against the taker by a seeded slippage (0 by default)."""
        if not self.fees.slippage_bps:
            return price
        draw = random.Random(f"{self.seed}:{order_id}").random()
        slip = int(Decimal(repr(draw)) * self.fees.slippage_bps / 10_000 * price)
        return price + slip if side == "BUY" else max(1, price - slip)

    # -- regular orders -------------------------------------------------------------------------

    def place_order(self, req: NewOrder, now: int, client_id_reuse: str = REUSE_BINANCE) -> Order:
        market = self.markets[req.symbol]
        position = self.positions[req.symbol]
        sign = 1 if req.side == "BUY" else -1
        self._check_client_id(req.client_id, client_id_reuse)
        if req.reduce_only and not ledger.reducible(position.qty, sign, req.qty):
            raise BinanceError(-2022)
        current = self.price_ticks(req.symbol)
        reference = req.price if req.type == "LIMIT" else current
        if not req.reduce_only and market.price(reference) * market.qty(req.qty) < market.min_notional:
            raise BinanceError(-4164, plain(market.min_notional))
        marketable = req.type == "MARKET" or (current <= req.price if sign > 0
                                                 else current >= req.price)
        if req.time_in_force == "GTX" and marketable:
            raise BinanceError(-5022)
        if req.time_in_force == "FOK" and not marketable:
            raise BinanceError(-5021)
        if marketable:
            self._margin_check(req.symbol, sign, req.qty, current, req.reduce_only,
                               self.fees.taker)
            reserve = ZERO
        else:
            reserve = ZERO if req.time_in_force == "IOC" else self._margin_check(
                req.symbol, sign, req.qty, req.price, req.reduce_only, ZERO)
        client_id = self._use_client_id(req.client_id, client_id_reuse)
        order = self._new_order(req.symbol, client_id, req.side, req.type, req.type,
                                req.time_in_force, req.price, req.qty, req.reduce_only, now)
        if marketable:
            fill_price = (self._market_fill_price(order.order_id, req.side, current)
                          if req.type == "MARKET" else current)
            qty = ledger.reducible(position.qty, sign, req.qty) if req.reduce_only else req.qty
            self._execute(order, qty, fill_price, now, maker=False)
            order.status = "FILLED" if order.executed == order.qty else "EXPIRED"
        elif req.time_in_force == "IOC":
            order.status = "EXPIRED"
        else:
            order.reserved_margin = reserve
            self.open_orders[req.symbol][order.order_id] = order
            self._touch(req.symbol)
        return order

    def _fill_resting(self, order: Order, fill: int, t: int) -> None:
        del self.open_orders[order.symbol][order.order_id]
        order.reserved_margin = ZERO
        sign = 1 if order.side == "BUY" else -1
        position = self.positions[order.symbol]
        qty = ledger.reducible(position.qty, sign, order.qty) if order.reduce_only else order.qty
        if qty:
            self._execute(order, qty, fill, t, maker=True)
        order.status = "FILLED" if order.executed == order.qty else "EXPIRED"
        order.update_time = t
        self.changes.orders.add(order.order_id)
        self.audit("filled" if qty else "expired", t, symbol=order.symbol, side=order.side,
                   type=order.type, client_id=order.client_id, order_id=order.order_id,
                   extra={"price": str(self.markets[order.symbol].price(fill))})

    def find_order(self, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        """By order id, else the most recent order on `symbol` with this client id."""
        order = self.orders.get(order_id) if order_id is not None else (
            self.order_by_client.get((symbol, client_id)) if client_id is not None else None)
        return order if order is not None and order.symbol == symbol else None

    def cancel_order(self, symbol: str, order_id: int | None, client_id: str | None,
                     now: int) -> Order:
        order = self.find_order(symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise BinanceError(-2011)
        self._cancel(order, now)
        return order

    def _cancel(self, order: Order, t: int) -> None:
        del self.open_orders[order.symbol][order.order_id]
        order.status, order.update_time, order.reserved_margin = "CANCELED", t, ZERO
        self.changes.orders.add(order.order_id)
        self._touch(order.symbol)

    def cancel_all(self, symbol: str, now: int) -> list[Order]:
        orders = list(self.open_orders[symbol].values())
        for order in orders:
            self._cancel(order, now)
        return orders

    # -- conditional (algo) orders --------------------------------------------------------------

    def place_algo_order(self, req: NewAlgoOrder, now: int,
                         client_id_reuse: str = REUSE_BINANCE) -> AlgoOrder:
        market = self.markets[req.symbol]
        position = self.positions[req.symbol]
        sign = 1 if req.side == "BUY" else -1
        self._check_client_id(req.client_id, client_id_reuse)
        closing_only = req.reduce_only or req.close_position
        # Flat is fine for a reduce-only stop (it expires if still flat when it triggers);
        # an existing position on the order's own side would be increased.
        if closing_only and position.qty * sign > 0:
            raise BinanceError(-2022)
        current = self.price_ticks(req.symbol)
        trailing = req.type == "TRAILING_STOP_MARKET"
        reference = (req.activate or current) if trailing else req.trigger
        if not closing_only and market.price(reference) * market.qty(req.qty) < market.min_notional:
            raise BinanceError(-4164, plain(market.min_notional))
        if trailing:
            if req.activate is not None and (
                    req.activate <= current if sign < 0 else req.activate >= current):
                raise BinanceError(-2021)
        else:
            falls = (req.type == "STOP_MARKET") == (sign < 0)
            if (current <= req.trigger) if falls else (current >= req.trigger):
                raise BinanceError(-2021)
        client_id = self._use_client_id(req.client_id, client_id_reuse)
        algo = AlgoOrder(
            self._next("next_algo_id"), req.symbol, client_id, req.side, req.type, req.qty,
            req.trigger, req.reduce_only, req.close_position, "NEW", now, now,
            working_type=req.working_type, price_protect=req.price_protect,
            activate=req.activate, callback_rate=req.callback_rate,
            active=trailing and req.activate is None,
            extreme=self.price(req.symbol) if trailing and req.activate is None else None,
        )
        self.algos[algo.algo_id] = algo
        self.algo_by_client[(req.symbol, client_id)] = algo
        self.open_algos[req.symbol][algo.algo_id] = algo
        self.changes.algos.add(algo.algo_id)
        self._touch(req.symbol)
        return algo

    def _trigger(self, algo: AlgoOrder, fill: int, t: int) -> None:
        """The trigger fires: send the market order (or expire a reduce-only with nothing left)."""
        del self.open_algos[algo.symbol][algo.algo_id]
        algo.trigger_time = algo.update_time = t
        self.changes.algos.add(algo.algo_id)
        position = self.positions[algo.symbol]
        sign = 1 if algo.side == "BUY" else -1
        if algo.close_position:
            qty = ledger.reducible(position.qty, sign, None)
        elif algo.reduce_only:
            qty = ledger.reducible(position.qty, sign, algo.qty)
        else:
            qty = algo.qty
        fields = dict(symbol=algo.symbol, side=algo.side, type=algo.order_type,
                      client_id=algo.client_id, algo_id=algo.algo_id)
        if not qty:
            algo.status = "EXPIRED"
            self.audit("expired", t, msg="reduce-only with no position to reduce", **fields)
            return
        reduce_only = algo.reduce_only or algo.close_position
        try:
            self._margin_check(algo.symbol, sign, qty, fill, reduce_only, self.fees.taker)
        except BinanceError as exc:
            algo.status = "REJECTED"
            self.audit("rejected", t, code=exc.code, msg=exc.msg, **fields)
            return
        # The market order carries the stop's client id (fetchable as an ordinary order). No
        # -4116 check: the id was taken by the stop, which stops being open right here.
        order = self._new_order(algo.symbol, algo.client_id, algo.side, "MARKET",
                                algo.order_type, "GTC", 0, qty, reduce_only, t,
                                close_position=algo.close_position, stop_price=algo.trigger)
        self._execute(order, qty, fill, t, maker=False)
        order.status = "FILLED"
        algo.status = "FINISHED"
        algo.actual_order_id = order.order_id
        algo.actual_price = self.markets[algo.symbol].price(fill)
        self.audit("triggered", t, order_id=order.order_id,
                   extra={"price": str(algo.actual_price), "qty": str(
                       self.markets[algo.symbol].qty(qty))}, **fields)

    def find_algo(self, symbol: str, algo_id: int | None, client_id: str | None) -> AlgoOrder | None:
        """By algo id, else the most recent algo order on `symbol` with this client id."""
        algo = self.algos.get(algo_id) if algo_id is not None else (
            self.algo_by_client.get((symbol, client_id)) if client_id is not None else None)
        return algo if algo is not None and algo.symbol == symbol else None

    def cancel_algo_order(self, symbol: str, algo_id: int | None, client_id: str | None,
                          now: int) -> AlgoOrder:
        algo = self.find_algo(symbol, algo_id, client_id)
        if algo is None or not algo.is_open:
            raise BinanceError(-2011)
        self._cancel_algo(algo, now)
        return algo

    def _cancel_algo(self, algo: AlgoOrder, t: int) -> None:
        del self.open_algos[algo.symbol][algo.algo_id]
        algo.status, algo.update_time = "CANCELED", t
        self.changes.algos.add(algo.algo_id)
        self._touch(algo.symbol)

    def cancel_all_algo_orders(self, symbol: str, now: int) -> list[AlgoOrder]:
        algos = list(self.open_algos[symbol].values())
        for algo in algos:
            self._cancel_algo(algo, now)
        return algos

    # -- liquidation ----------------------------------------------------------------------------

    def _liquidate(self, symbol: str, fill: int, t: int) -> None:
        """Close the whole position at the liquidation fill; the isolated margin is lost."""
        position = self.positions[symbol]
        for order in list(self.open_orders[symbol].values()):
            self._cancel(order, t)
            self.audit("canceled", t, symbol=symbol, side=order.side, type=order.type,
                       client_id=order.client_id, order_id=order.order_id, msg="liquidation")
        for algo in list(self.open_algos[symbol].values()):
            self._cancel_algo(algo, t)
            self.audit("canceled", t, symbol=symbol, side=algo.side, type=algo.order_type,
                       client_id=algo.client_id, algo_id=algo.algo_id, msg="liquidation")
        margin = position.isolated_wallet
        side = "SELL" if position.qty > 0 else "BUY"
        qty = abs(position.qty)
        order_id = self.counters.next_order_id
        order = self._new_order(symbol, f"autoclose-{order_id}", side, "MARKET", "LIQUIDATION",
                                "IOC", 0, qty, True, t)
        pnl_before = self.wallet
        self._execute(order, qty, fill, t, maker=False, fee=False)
        order.status = "FILLED"
        realized = self.wallet - pnl_before
        clearance = -(margin + realized)  # whatever margin is left goes to the insurance fund
        if clearance:
            self.wallet += clearance
            self._income(symbol, "INSURANCE_CLEAR", clearance, t, info="LIQUIDATION")
        self.audit("liquidated", t, symbol=symbol, side=side, type="LIQUIDATION",
                   client_id=order.client_id, order_id=order.order_id,
                   extra={"price": str(self.markets[symbol].price(fill)),
                          "qty": str(self.markets[symbol].qty(qty))})
