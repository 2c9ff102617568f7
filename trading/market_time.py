"""Market time: exchange milliseconds since the epoch ⇄ aware UTC datetimes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_of_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ms_of_utc(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
