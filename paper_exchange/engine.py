"""The exchange itself: account state, matching along the replay, funding, price pins.

Order placement, fills, triggers and liquidation are in order_flow.py (a mixin of `Engine`).
Pure Python, no I/O: the app feeds it requests with the market time, and the store persists
what `changes` says was touched. All methods run synchronously inside one event-loop step, so
a request always sees (and mutates) a consistent state.

Time: `advance(now)` runs matching for every symbol from the last processed market time to
`now`, in market-time order across symbols (a heap of each symbol's next event), and applies
funding at each 00/08/16 UTC boundary it crosses (after the path events at or before that
instant). Same data + seed + requests + clock jumps → same fills.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from decimal import Decimal

from paper_exchange import ledger
from paper_exchange.errors import BinanceError
from paper_exchange.matching import (
    GE, LE, Event, LevelWatch, TrailingWatch, Walker, Watch, first_hit,
)
from paper_exchange.models import (
    ZERO, AlgoOrder, AuditEvent, Counters, Income, Market, Order, Position, Trade, money,
)
from paper_exchange.order_flow import CLIENT_ID_REUSE, REUSE_BINANCE, REUSE_NEVER, OrderFlow
from paper_exchange.replay import FundingRates, Segment, SymbolPath, funding_times, round_half_up


@dataclass
class Fees:
    taker: Decimal
    maker: Decimal
    slippage_bps: Decimal = ZERO


@dataclass
class Changes:
    """What to persist at the next flush. `material` says whether a flush is due at all."""

    orders: set[int] = field(default_factory=set)
    algos: set[int] = field(default_factory=set)
    positions: set[str] = field(default_factory=set)
    trades: list[Trade] = field(default_factory=list)
    income: list[Income] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)
    audit: list[AuditEvent] = field(default_factory=list)
    meta: bool = False

    @property
    def material(self) -> bool:
        return bool(self.orders or self.algos or self.positions or self.trades or self.income
                    or self.client_ids or self.audit or self.meta)


class Engine(OrderFlow):
    """State, clock-driven matching and funding; order handling comes from `OrderFlow`."""

    def __init__(self, markets: dict[str, Market], paths: dict[str, SymbolPath],
                 funding: dict[str, FundingRates], fees: Fees, initial_balance: Decimal,
                 seed: int, processed_ms: int) -> None:
        self.markets = markets
        self.symbols = sorted(markets)
        self.paths = paths
        self.funding = funding
        self.fees = fees
        self.initial_balance = initial_balance
        self.seed = seed
        self.counters = Counters()
        self.processed_ms = processed_ms
        self.walkers = {s: Walker(paths[s], processed_ms) for s in self.symbols}
        self.wall_ms = 0  # wall time of the current request, for audit lines only
        self.changes = Changes()
        self._clear_account()

    # -- state ----------------------------------------------------------------------------------

    def _clear_account(self) -> None:
        self.wallet = self.initial_balance
        self.positions: dict[str, Position] = {s: Position(s) for s in self.symbols}
        self.orders: dict[int, Order] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.trades: list[Trade] = []
        self.income: list[Income] = []
        self.client_ids: set[str] = set()
        self.leverage = {s: m.default_leverage for s, m in self.markets.items()}
        self.pins: dict[str, int] = {}
        self.account_update_ms = self.processed_ms
        self._index()

    def _index(self) -> None:
        self.open_orders: dict[str, dict[int, Order]] = {s: {} for s in self.symbols}
        self.open_algos: dict[str, dict[int, AlgoOrder]] = {s: {} for s in self.symbols}
        # (symbol, client id) -> the most recent order / algo order with that id on that symbol
        # (ids are reusable once no order with them is open: see `_check_client_id`).
        self.order_by_client: dict[tuple[str, str], Order] = {}
        self.algo_by_client: dict[tuple[str, str], AlgoOrder] = {}
        for o in sorted(self.orders.values(), key=lambda o: o.order_id):
            self.order_by_client[(o.symbol, o.client_id)] = o
            if o.is_open and o.symbol in self.open_orders:
                self.open_orders[o.symbol][o.order_id] = o
        for a in sorted(self.algos.values(), key=lambda a: a.algo_id):
            self.algo_by_client[(a.symbol, a.client_id)] = a
            if a.is_open and a.symbol in self.open_algos:
                self.open_algos[a.symbol][a.algo_id] = a
        self._watch_cache: dict[str, list[Watch] | None] = {s: None for s in self.symbols}

    def reset(self) -> None:
        """Initial account: no positions, orders, fills, used client ids, pins. Clock kept."""
        self._clear_account()
        self.changes = Changes(meta=True)

    def restore(self, *, wallet: Decimal, positions: list[Position], orders: list[Order],
                algos: list[AlgoOrder], trades: list[Trade], income: list[Income],
                client_ids: set[str], leverage: dict[str, int], pins: dict[str, int],
                counters: Counters, account_update_ms: int) -> None:
        self.wallet = wallet
        for p in positions:
            if p.symbol in self.positions:
                self.positions[p.symbol] = p
        self.orders = {o.order_id: o for o in orders}
        self.algos = {a.algo_id: a for a in algos}
        self.trades, self.income = trades, income
        self.client_ids = client_ids
        self.leverage.update({s: v for s, v in leverage.items() if s in self.markets})
        self.pins = {s: v for s, v in pins.items() if s in self.markets}
        self.counters = counters
        self.account_update_ms = account_update_ms
        self._index()

    # -- prices ---------------------------------------------------------------------------------

    def price(self, symbol: str) -> float:
        """Current price in ticks (a float on the path, an integer when pinned)."""
        if symbol in self.pins:
            return float(self.pins[symbol])
        return self.walkers[symbol].price()

    def price_ticks(self, symbol: str) -> int:
        return round_half_up(self.price(symbol))

    # -- the replay -----------------------------------------------------------------------------

    def advance(self, now: int, wall_ms: int) -> None:
        """Run matching and funding up to market time `now`."""
        self.wall_ms = wall_ms
        if now <= self.processed_ms:
            return
        for t in funding_times(self.processed_ms, now):
            self._run_until(t)
            self.processed_ms = t
            self._apply_funding(t)
        self._run_until(now)
        self.processed_ms = now

    def _run_until(self, until: int) -> None:
        heap: list[tuple[int, str, Event]] = []
        for symbol in self.symbols:
            self._peek(symbol, until, heap)
        while heap:
            _, symbol, event = heapq.heappop(heap)
            self._on_event(symbol, event)
            self._peek(symbol, until, heap)

    def _peek(self, symbol: str, until: int, heap: list) -> None:
        walker = self.walkers[symbol]
        if symbol in self.pins:
            walker.seek(until)
            return
        event = walker.next_event(self._watches(symbol), until)
        if event is not None:
            heapq.heappush(heap, (event.time, symbol, event))

    def _watches(self, symbol: str) -> list[Watch]:
        cached = self._watch_cache[symbol]
        if cached is not None:
            return cached
        watches: list[Watch] = []
        for o in self.open_orders[symbol].values():
            if o.type == "LIMIT":
                direction = LE if o.side == "BUY" else GE
                watches.append(LevelWatch(("order", o.order_id), (0, o.time, 0, o.order_id),
                                          direction, float(o.price), limit=True))
        for a in self.open_algos[symbol].values():
            rank = (0, a.create_time, 1, a.algo_id)
            if a.order_type == "TRAILING_STOP_MARKET":
                watches.append(TrailingWatch(("algo", a.algo_id), rank, a,
                                             float(a.callback_rate) / 100))
            else:
                falls = (a.order_type == "STOP_MARKET") == (a.side == "SELL")
                watches.append(LevelWatch(("algo", a.algo_id), rank, LE if falls else GE,
                                          float(a.trigger), limit=False))
        position = self.positions[symbol]
        liq = ledger.liquidation_price(position, self.markets[symbol])
        if position.qty and liq > 0:
            level = float(liq / self.markets[symbol].tick)
            watches.append(LevelWatch(("liq", symbol), (1,), LE if position.qty > 0 else GE,
                                      level, limit=False))
        self._watch_cache[symbol] = watches
        return watches

    def _touch(self, symbol: str) -> None:
        self._watch_cache[symbol] = None

    def _on_event(self, symbol: str, event: Event) -> None:
        kind, ref = event.watch.target
        if kind == "order":
            self._fill_resting(self.orders[ref], event.fill, event.time)
        elif kind == "algo":
            self._trigger(self.algos[ref], event.fill, event.time)
        else:
            self._liquidate(symbol, event.fill, event.time)
        self._touch(symbol)

    def _move(self, symbol: str, start: float, end: float, t: int) -> None:
        """Match a one-off straight move (a price pin, its release) at time t."""
        seg = Segment(t, start, t, end, False)
        lam = 0.0
        while True:
            watches = self._watches(symbol)
            trailing = [w for w in watches if isinstance(w, TrailingWatch)]
            best = first_hit(watches, seg, lam, 1.0)
            if best is None:
                for w in trailing:
                    w.pass_over(seg, lam, 1.0)
                return
            hit, watch = best
            for w in trailing:
                w.pass_over(seg, lam, hit.lam)
            lam = hit.lam
            self._on_event(symbol, Event(watch, t, hit.fill, seg.price(lam), hit.at_start))

    def pin(self, symbol: str, ticks: int, now: int) -> None:
        self._move(symbol, self.price(symbol), float(ticks), now)
        self.pins[symbol] = ticks
        self.changes.meta = True

    def release(self, symbol: str, now: int) -> None:
        if symbol not in self.pins:
            return
        pinned = float(self.pins.pop(symbol))
        self.walkers[symbol].seek(now)
        self._move(symbol, pinned, self.walkers[symbol].price(), now)
        self.changes.meta = True

    # -- funding --------------------------------------------------------------------------------

    def _apply_funding(self, t: int) -> None:
        """Longs pay shorts when the rate is positive: payment = notional × rate."""
        for symbol in self.symbols:
            position = self.positions[symbol]
            if not position.qty:
                continue
            market = self.markets[symbol]
            rate = self.funding[symbol].rate_at(t)
            amount = money(-ledger.notional(position, market, self.price_ticks(symbol)) * rate)
            if not amount:
                continue
            self.wallet += amount
            position.isolated_wallet += amount  # isolated positions settle funding in margin
            position.update_time = t
            self._income(symbol, "FUNDING_FEE", amount, t, info="FUNDING_FEE")
            self.changes.positions.add(symbol)
            self._touch(symbol)

    # -- account --------------------------------------------------------------------------------

    def available(self) -> Decimal:
        held = sum((p.isolated_wallet for p in self.positions.values()), ZERO)
        reserved = sum((o.reserved_margin for book in self.open_orders.values()
                        for o in book.values()), ZERO)
        return self.wallet - held - reserved

    def _income(self, symbol: str, kind: str, amount: Decimal, t: int, trade_id: str = "",
                info: str = "") -> None:
        record = Income(self._next("next_tran_id"), symbol, kind, amount, t, trade_id, info)
        self.income.append(record)
        self.changes.income.append(record)
        self.account_update_ms = t

    def _next(self, counter: str) -> int:
        value = getattr(self.counters, counter)
        setattr(self.counters, counter, value + 1)
        self.changes.meta = True
        return value

    def audit(self, result: str, t: int, **fields) -> None:
        self.changes.audit.append(AuditEvent(market_ms=t, wall_ms=self.wall_ms, result=result,
                                             **fields))

    # -- client ids -----------------------------------------------------------------------------
    #
    # `binance` (the default): as Binance documents `newClientOrderId` / `clientAlgoId`, "a
    # unique id among open orders". A client id is refused (-4116) only while an order with it
    # is open (NEW / PARTIALLY_FILLED; an algo order until it triggers, is cancelled or
    # expires), on any symbol, regular and algo alike; once no such order is open the same id
    # makes a new order, and a query by the id returns the most recent order with it.
    # `never` (QT_PAPER_CLIENT_ID_REUSE=never): stricter than Binance, an id used once on the
    # account is refused forever. Used ids are recorded in both modes (the `client_ids` table),
    # so switching to `never` on a restart also refuses the ids used before.

    def _use_client_id(self, client_id: str | None, reuse: str = REUSE_BINANCE) -> str:
        if client_id is None:
            client_id = f"paper-{self._next('next_client_id')}"
        self._check_client_id(client_id, reuse)
        self.client_ids.add(client_id)
        self.changes.client_ids.append(client_id)
        return client_id

    def _check_client_id(self, client_id: str | None, reuse: str = REUSE_BINANCE) -> None:
        if client_id is None:
            return
        if reuse not in CLIENT_ID_REUSE:
            raise ValueError(f"client id reuse must be one of {CLIENT_ID_REUSE}, not {reuse!r}")
        if client_id in self.client_ids if reuse == REUSE_NEVER else self._open_client_id(
                client_id):
            raise BinanceError(-4116)

    def _open_client_id(self, client_id: str) -> bool:
        """Whether an open order or algo order on any symbol carries this client id.

        Only the most recent order with an id can be open (a new one is accepted only while
        none is), so the by-client maps are enough.
        """
        for symbol in self.symbols:
            order = self.order_by_client.get((symbol, client_id))
            if order is not None and order.is_open:
                return True
            algo = self.algo_by_client.get((symbol, client_id))
            if algo is not None and algo.is_open:
                return True
        return False

    # -- settings -------------------------------------------------------------------------------

    def set_leverage(self, symbol: str, leverage: int) -> None:
        if not 1 <= leverage <= self.markets[symbol].max_leverage:
            raise BinanceError(-4028, leverage)
        self.leverage[symbol] = leverage
        self.changes.meta = True
        self._touch(symbol)

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

