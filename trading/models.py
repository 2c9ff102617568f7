"""Small value types shared by the trading rules, the workflows and the API.

They are `StrEnum`s so they travel as plain strings everywhere that matters: Redis stream
fields, Temporal search attributes (Keyword), JSON payloads and log lines.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Direction of the position a trade opens. The exchange order that closes it is `opposite`."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        """+1 for a long, -1 for a short: PnL = sign × qty × (exit − entry)."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @classmethod
    def parse(cls, value: object) -> Side:
        """Case-insensitive; the old system also wrote LONG/SHORT for positions."""
        text = str(value).strip().upper()
        text = {"LONG": "BUY", "SHORT": "SELL"}.get(text, text)
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"must be BUY or SELL, got {value!r}") from None


class ExitReason(StrEnum):
    """Why a trade ended (SPEC "Close"); also the `ExitReason` search attribute."""

    SL = "SL"
    TP = "TP"
    TRAILING = "TRAILING"
    KILL_SCORE = "KILL_SCORE"
    TIME_LIMIT = "TIME_LIMIT"
    MANUAL = "MANUAL"
    KILLED = "KILLED"
    EXTERNAL = "EXTERNAL"  # the position vanished on the exchange (closed by someone else)
    # Added to the SPEC's list: the protective stop could not be placed after the entry, so the
    # position was closed at market at once (never left unprotected).
    PROTECTION_FAILED = "PROTECTION_FAILED"


class TradeStatus(StrEnum):
    """Where a TradeWorkflow is in its lifecycle; the `TradeStatus` search attribute."""

    PENDING = "PENDING"  # started, gates not yet passed
    REJECTED = "REJECTED"  # a gate said no (stale, cooldown, min notional...); nothing was sent
    OPENING = "OPENING"  # entry order sent, fills being collected
    OPEN = "OPEN"  # position exists and is protected on the exchange
    CLOSING = "CLOSING"  # closing orders sent, waiting until flat
    CLOSED = "CLOSED"  # flat, PnL recorded
    KILLED = "KILLED"  # operator kill: flattened and ended
    FAILED = "FAILED"  # could not reach a safe end by itself; needs an operator

    @property
    def is_final(self) -> bool:
        return self in (TradeStatus.REJECTED, TradeStatus.CLOSED, TradeStatus.KILLED, TradeStatus.FAILED)
