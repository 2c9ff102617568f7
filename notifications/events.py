"""What is worth telling a trader, as messages with an idempotency key each (pure).

A key names one event forever (`closed:trade-x1`, `safe_mode_on:1733090000000`): the notifier
records per key and target what was delivered, so a restart or a retry never sends it twice, and
the key travels in the message (`event: …`) for receivers that deduplicate themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class EventKind(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"
    KILLED = "killed"
    REJECTED = "rejected"
    FAILED = "failed"
    SAFE_MODE = "safe_mode"
    KILL_SWITCH = "kill_switch"


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    kind: EventKind
    title: str
    body: str
    level: str = "info"  # apprise's notify type: info, success, warning, failure

    def message(self) -> str:
        return f"{self.body}\nevent: {self.key}"


def _dec(text: str | None) -> Decimal | None:
    try:
        return Decimal(text) if text not in (None, "") else None
    except InvalidOperation:
        return None


def _signed(value: Decimal | None) -> str:
    return "?" if value is None else f"{value:+.2f}"


def opened(fields: Mapping[str, str]) -> Event | None:
    """An `execution.result` entry of an entry fill; None for any other step."""
    if fields.get("step") != "entry":
        return None
    workflow_id = fields.get("workflow_id", "?")
    return Event(key=f"opened:{workflow_id}", kind=EventKind.OPENED,
                 title=f"Opened {fields.get('side', '?')} {fields.get('symbol', '?')}",
                 body=f"{workflow_id}: {fields.get('quantity') or fields.get('qty')} @ {fields.get('price')} "
                      f"×{fields.get('leverage', '?')}")


def closed(fields: Mapping[str, str]) -> Event:
    """A `trade.closed` entry: closed with its PnL and reason (KILLED ones as `killed`)."""
    workflow_id = fields.get("workflow_id", "?")
    reason = fields.get("exit_reason", "?")
    pnl = _dec(fields.get("realized_pnl"))
    kind = EventKind.KILLED if reason == "KILLED" else EventKind.CLOSED
    level = "success" if pnl is not None and pnl > 0 else "warning"
    return Event(key=f"{kind.value}:{workflow_id}", kind=kind, level=level,
                 title=f"{'Killed' if kind is EventKind.KILLED else 'Closed'} {fields.get('side', '?')} "
                       f"{fields.get('symbol', '?')}: {_signed(pnl)} USDT ({reason})",
                 body=f"{workflow_id}: entry {fields.get('entry_price')}, exit {fields.get('exit_price') or '-'}, "
                      f"net {_signed(pnl)} USDT (fees {fields.get('fees')}, funding {fields.get('funding')})")


def ended_badly(workflow_id: str, run_id: str, status: str, symbol: str | None, reason: str | None) -> Event:
    """A trade that ended REJECTED or FAILED (from visibility)."""
    kind = EventKind.FAILED if status == "FAILED" else EventKind.REJECTED
    return Event(key=f"{kind.value}:{workflow_id}:{run_id}", kind=kind,
                 level="failure" if kind is EventKind.FAILED else "warning",
                 title=f"{status.title()} {symbol or ''}".strip(),
                 body=f"{workflow_id}: {reason or 'see the Web UI'}")


def rejections_summary(rows: list[tuple[str, str | None]], first_key: str, last_key: str) -> Event:
    """Many rejections at once (a replayed backlog): one message with the count per reason."""
    by_gate = Counter((reason or "reason not read").split(":", 1)[0] for _, reason in rows)
    listed = ", ".join(f"{gate} {n}" for gate, n in by_gate.most_common())
    return Event(key=f"rejected-batch:{first_key}:{last_key}", kind=EventKind.REJECTED, level="warning",
                 title=f"{len(rows)} trades rejected", body=f"by gate: {listed}")


def safety_changed(name: str, raw: str | None, previous: str | None) -> Event | None:
    """Safe mode / kill switch switched on (a new value) or off (gone); None: no change."""
    if raw == previous:
        return None
    kind = EventKind.SAFE_MODE if name == "safe_mode" else EventKind.KILL_SWITCH
    label = "Safe mode" if kind is EventKind.SAFE_MODE else "Kill switch"
    if raw is None:
        return Event(key=f"{name}_off:{previous}", kind=kind, title=f"{label} off", body=f"{label} is off again")
    return Event(key=f"{name}_on:{raw}", kind=kind, level="warning", title=f"{label} ON", body=raw)
