"""Reconciliation's one decision: where the account's three books disagree, and what to do.

The books: the exchange (positions, open orders, open conditional orders), the TradeWorkflows
that are still running (Temporal visibility, and the `state` of the OPEN ones) and Redis (symbol
locks, the old system's position hashes). `find_discrepancies` compares them and names an
action for each finding; `confirmed` keeps only what two snapshots taken a few seconds apart
agree on, so a trade caught between two steps (an entry that just filled, a lock just taken,
visibility a second behind) is never "fixed". Pure: the ReconcileWorkflow orchestrates, the
activities read and act (activities/reconcile.py).

Rules that protect the account:
- fail closed: an incomplete snapshot decides nothing (`decide`);
- an order whose client id this system did not make is never touched (several bots may share
  one account: `trading.client_ids.owner_key_of`);
- a reduce-only order that still protects an open position nobody manages is kept until the
  position is flat or adopted (cancelling it would leave the position naked); when flattening,
  it is cancelled once the position is flat, never before.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field

from trading.client_ids import owner_key_of
from trading.models import TradeStatus


class OrphanMode(StrEnum):
    """What to do with a position no running workflow owns (`QT_RECONCILE_ORPHANS`)."""

    ADOPT = "adopt"  # a TradeWorkflow in adopt mode takes it over: stop at once, then managed
    FLATTEN = "flatten"  # a reduce-only market close
    REPORT = "report"  # told, nothing done


class FindingKind(StrEnum):
    ORPHAN_POSITION = "orphan_position"  # on the exchange, no running workflow owns it
    VANISHED_POSITION = "vanished_position"  # a workflow OPEN, the exchange flat
    SIZE_MISMATCH = "size_mismatch"  # a workflow OPEN with another size than the exchange's
    MISSING_STOP = "missing_stop"  # a workflow OPEN, its stop not resting on the exchange
    ORPHAN_ORDER = "orphan_order"  # our client id, no running workflow owns it
    ORPHAN_LOCK = "orphan_lock"  # a symbol lock whose workflow has ended
    STALE_POSITION_HASH = "stale_position_hash"  # a position hash whose workflow has ended


class Action(StrEnum):
    ADOPT = "adopt"  # start a TradeWorkflow in adopt mode (child, abandoned)
    FLATTEN = "flatten"  # reduce-only market close of the orphan position
    TELL_WORKFLOW = "tell_workflow"  # signal the owner: it checks the exchange itself and acts
    CANCEL = "cancel"  # cancel the orphan order
    RELEASE = "release"  # release the lock (only if the same owner still holds it)
    REMOVE = "remove"  # delete the hash (only if the same workflow still owns it)
    REPORT = "report"  # nothing to do but tell


class ExchangePosition(BaseModel):
    symbol: str  # exchange id, BTCUSDT
    quantity: Decimal  # signed: > 0 long, < 0 short
    entry_price: Decimal | None = None
    leverage: int | None = None


class OpenOrder(BaseModel):
    symbol: str
    client_order_id: str
    conditional: bool  # a resting conditional ("algo") order: stops
    reduce_only: bool = False
    side: str = ""
    type: str = ""


class LiveTrade(BaseModel):
    """A running TradeWorkflow as reconciliation sees it."""

    workflow_id: str
    owner_key: str | None  # `trading.client_ids.owner_key` of its orders (None: unknown)
    symbol: str | None  # None: visibility has not got it yet
    status: TradeStatus | None
    # From the `state` query of an OPEN trade (None when not asked or not answered):
    open_qty: Decimal | None = None
    side: str | None = None  # BUY / SELL
    stop_client_id: str | None = None


class RedisLock(BaseModel):
    symbol: str
    owner: str  # workflow id


class PositionHash(BaseModel):
    symbol: str
    workflow_id: str | None  # None: written by the old system (plan_id only), or unreadable


class AccountSnapshot(BaseModel):
    """The three books at one moment. `problems` non-empty = incomplete: decide nothing."""

    taken_at_ms: int
    positions: list[ExchangePosition] = Field(default_factory=list)
    orders: list[OpenOrder] = Field(default_factory=list)
    trades: list[LiveTrade] = Field(default_factory=list)
    locks: list[RedisLock] = Field(default_factory=list)
    position_hashes: list[PositionHash] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    # OPEN trades whose `state` did not answer in time: still owners, not checked this run.
    unchecked: list[str] = Field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems


class Finding(BaseModel):
    kind: FindingKind
    action: Action
    symbol: str
    detail: str
    workflow_id: str | None = None  # the owner told / the lock's or hash's owner
    client_order_id: str | None = None  # the orphan order / the missing stop
    conditional: bool = False
    quantity: Decimal | None = None  # the exchange's signed size (positions)
    entry_price: Decimal | None = None
    leverage: int | None = None
    # An orphan position's: the ended trade's lock on its symbol (released by the flatten once
    # flat, handed to the adopter by its gates) and its stops (cancelled by the flatten once flat).
    lock_owner: str | None = None
    stops: list[str] = Field(default_factory=list)

    @property
    def key(self) -> tuple:
        """What two snapshots must agree on for the finding to be acted on."""
        return (self.kind, self.symbol, self.workflow_id, self.client_order_id, self.quantity)


def _side_of(quantity: Decimal) -> str:
    return "BUY" if quantity > 0 else "SELL"


def find_discrepancies(snap: AccountSnapshot, orphans: OrphanMode = OrphanMode.ADOPT) -> list[Finding]:
    """Every disagreement of one complete snapshot, with its action. Nothing is decided on an
    incomplete one (see `decide`)."""
    findings: list[Finding] = []
    live_ids = {t.workflow_id for t in snap.trades}
    owners = {t.owner_key for t in snap.trades if t.owner_key}
    # A symbol some running trade holds (any status: PENDING → CLOSING) is never orphaned; so is
    # one visibility has not placed yet, if any running trade lacks a symbol (fail closed).
    held = {t.symbol for t in snap.trades if t.symbol}
    unknown_symbol = any(t.symbol is None for t in snap.trades)
    unknown_owner = any(t.owner_key is None for t in snap.trades)
    position_of = {p.symbol: p for p in snap.positions if p.quantity != 0}

    unmanaged: set[str] = set()  # open positions nobody manages (their stops are kept)
    for symbol, position in sorted(position_of.items()):
        if symbol in held or unknown_symbol:
            continue
        unmanaged.add(symbol)
        action = {OrphanMode.ADOPT: Action.ADOPT, OrphanMode.FLATTEN: Action.FLATTEN,
                  OrphanMode.REPORT: Action.REPORT}[orphans]
        findings.append(Finding(
            kind=FindingKind.ORPHAN_POSITION, action=action, symbol=symbol, quantity=position.quantity,
            entry_price=position.entry_price, leverage=position.leverage,
            detail=f"{_side_of(position.quantity)} {abs(position.quantity)} @ {position.entry_price} "
                   f"on the exchange, no running workflow holds {symbol}"))

    resting = {o.client_order_id for o in snap.orders if o.conditional}
    for trade in sorted(snap.trades, key=lambda t: t.workflow_id):
        if trade.status is not TradeStatus.OPEN or trade.symbol is None or trade.open_qty is None:
            continue  # in transition (or not answered): its own steps are checking right now
        position = position_of.get(trade.symbol)
        tell = {"action": Action.TELL_WORKFLOW, "symbol": trade.symbol, "workflow_id": trade.workflow_id}
        if position is None:
            findings.append(Finding(kind=FindingKind.VANISHED_POSITION, quantity=Decimal(0), **tell,
                                    detail=f"the workflow holds {trade.open_qty}, the exchange is flat"))
            continue
        if trade.side is not None and _side_of(position.quantity) != trade.side:
            findings.append(Finding(kind=FindingKind.SIZE_MISMATCH, quantity=position.quantity,
                                    **{**tell, "action": Action.REPORT},
                                    detail=f"the workflow holds {trade.side} {trade.open_qty}, the exchange "
                                           f"{_side_of(position.quantity)} {abs(position.quantity)}: "
                                           f"an operator must look"))
            continue
        if abs(position.quantity) != trade.open_qty:
            findings.append(Finding(kind=FindingKind.SIZE_MISMATCH, quantity=position.quantity, **tell,
                                    detail=f"the workflow holds {trade.open_qty}, the exchange "
                                           f"{abs(position.quantity)}"))
        if trade.stop_client_id is None or trade.stop_client_id not in resting:
            findings.append(Finding(kind=FindingKind.MISSING_STOP, client_order_id=trade.stop_client_id,
                                    conditional=True, **tell,
                                    detail=f"stop {trade.stop_client_id or '(none)'} is not resting on the exchange"))

    # A symbol whose position is protected by its holder's own resting stop: only there may an
    # ended trade's stop go (an adopter still placing its stop, a trade closing, keep the old one).
    protected = {t.symbol for t in snap.trades
                 if t.status is TradeStatus.OPEN and t.stop_client_id and t.stop_client_id in resting}
    orphan_of = {f.symbol: f for f in findings if f.kind is FindingKind.ORPHAN_POSITION}
    for order in sorted(snap.orders, key=lambda o: (o.symbol, o.client_order_id)):
        key = owner_key_of(order.client_order_id)
        if key is None or key in owners or unknown_symbol or unknown_owner:
            continue  # another bot's, or a running trade's (or a running trade is not known well enough)
        common = {"kind": FindingKind.ORPHAN_ORDER, "symbol": order.symbol,
                  "client_order_id": order.client_order_id, "conditional": order.conditional}
        protective = order.reduce_only and order.conditional and order.symbol in position_of
        if protective and order.symbol in unmanaged and orphans is OrphanMode.FLATTEN:
            orphan_of[order.symbol].stops.append(order.client_order_id)  # cancelled once flat
            findings.append(Finding(action=Action.REPORT, **common,
                                    detail=f"{order.type} {order.client_order_id} of an ended trade: cancelled "
                                           f"by the flatten once {order.symbol} is flat"))
        elif protective and order.symbol not in protected:
            findings.append(Finding(action=Action.REPORT, **common,
                                    detail=f"{order.type} {order.client_order_id} of an ended trade kept: it "
                                           f"protects the {order.symbol} position until a trade's own stop rests"))
        else:
            findings.append(Finding(action=Action.CANCEL, **common,
                                    detail=f"{order.type} {order.side} {order.client_order_id}: no running "
                                           f"workflow owns it"))

    for lock in sorted(snap.locks, key=lambda lock: lock.symbol):
        if lock.owner in live_ids:
            continue
        common = {"kind": FindingKind.ORPHAN_LOCK, "symbol": lock.symbol, "workflow_id": lock.owner}
        orphan = orphan_of.get(lock.symbol)
        if orphan is not None and orphans is not OrphanMode.REPORT:
            # The ended trade kept it because it could not get flat: it passes with the position.
            orphan.lock_owner = lock.owner
            findings.append(Finding(action=Action.REPORT, **common, detail=(
                f"held by {lock.owner}, which has ended with the position open: "
                + ("released by the flatten once flat" if orphans is OrphanMode.FLATTEN else
                   "handed to the adopting trade by its gates"))))
        elif lock.symbol in position_of:
            findings.append(Finding(action=Action.REPORT, **common,
                                    detail=f"held by {lock.owner}, which has ended; kept: {lock.symbol} still "
                                           f"has a position, nothing new may enter it"))
        else:
            findings.append(Finding(action=Action.RELEASE, **common, detail=f"held by {lock.owner}, which has ended"))

    for record in sorted(snap.position_hashes, key=lambda h: h.symbol):
        if record.workflow_id is None:
            if record.symbol not in held and record.symbol not in position_of:
                findings.append(Finding(kind=FindingKind.STALE_POSITION_HASH, action=Action.REPORT,
                                        symbol=record.symbol,
                                        detail="a position hash with no workflow id (the old system's?) and "
                                               "no position on the exchange: left for an operator"))
        elif record.workflow_id not in live_ids:
            findings.append(Finding(kind=FindingKind.STALE_POSITION_HASH, action=Action.REMOVE,
                                    symbol=record.symbol, workflow_id=record.workflow_id,
                                    detail=f"written by {record.workflow_id}, which has ended"))
    return findings


def confirmed(first: list[Finding], second: list[Finding]) -> list[Finding]:
    """The findings of `second` that `first` saw too (same kind, symbol, owner, order and size)."""
    seen = {f.key for f in first}
    return [f for f in second if f.key in seen]


def actionable(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.action is not Action.REPORT]
