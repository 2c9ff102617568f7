"""`qt status`'s view of the intent intake: is anything stuck between Redis and Temporal?"""

from __future__ import annotations

import redis.asyncio as aioredis
from rich.table import Table

from signals_ingest.intake_settings import IntakeSettings
from signals_ingest.intake_status import IntakeStatus, read_intake_status
from common.redis_keys import GATE_REJECTIONS_KEY


async def fetch_intake_status(redis_url: str, settings: IntakeSettings | None = None) -> IntakeStatus | str:
    """The status (with the gates' rejection counts), or a one-line reason it could not be read."""
    redis = aioredis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        status = await read_intake_status(redis, settings or IntakeSettings())
        raw = await redis.hgetall(GATE_REJECTIONS_KEY)
        status.gate_rejections = {k.decode(): int(v) for k, v in raw.items()}
        return status
    except aioredis.RedisError as err:
        return f"redis unreachable at {redis_url}: {err}"
    finally:
        await redis.aclose()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def intake_table(status: IntakeStatus, settings: IntakeSettings | None = None,
                 trades: str | None = None) -> Table:
    """`trades`: the TradeWorkflows Temporal holds (qt/trade_counts.py), what the intake's
    per-process counters cannot tell once the process that counted has stopped."""
    settings = settings or IntakeSettings()
    table = Table(title=f"Intent intake: {settings.stream} → TradeWorkflows (group {settings.group})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    alive = [c for c in status.consumers if c.alive]
    backlog_style = "green" if not status.backlog else ("yellow" if (status.oldest_pending_age_s or 0) < 60 else "red")
    rows = [
        ("stream length", str(status.stream_length)),
        ("lag (not yet read)", "-" if status.lag is None else f"[{backlog_style}]{status.lag}[/]"),
        ("pending (read, not yet started)", f"[{backlog_style}]{status.pending}[/]"),
        ("oldest pending age", _age(status.oldest_pending_age_s)),
        ("starts/s (last 10 s)", f"{status.total('starts_per_s'):.1f}"),
        ("started / duplicates / dead-lettered (running intakes, since their start)",
         "{:.0f} / {:.0f} / {:.0f}".format(status.total("started"), status.total("duplicates"),
                                           status.total("dead_lettered")) if alive else "- (no intake runs)"),
        ("of them stale on arrival (lowest priority)", f"{status.total('deprioritized'):.0f}"),
        ("of them proven stale (REJECTED, no activity)", f"{status.total('stale_at_intake'):.0f}"),
        ("intent_id conflicts (dead-lettered)", f"{status.total('conflicts'):.0f}"),
        ("DLQ length", f"[{'yellow' if status.dlq_length else 'green'}]{status.dlq_length}[/]"),
        ("consumers active / registered", f"{len(alive)} / {len(status.consumers)}"),
    ]
    if trades is not None:
        rows.insert(5, ("TradeWorkflows in Temporal (every start so far)", trades))
    if not status.group_exists:
        rows.insert(1, ("group", "[yellow]not created yet (no `qt ingest` has run)[/]"))
    if any(c.stats.get("backing_off") == "1" for c in alive):
        rows.append(("Temporal", "[red]unreachable: starts paused, entries kept pending[/]"))
    if status.gate_rejections:
        ranked = sorted(status.gate_rejections.items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append(("trades rejected, by gate", ", ".join(f"{gate} {n}" for gate, n in ranked)))
    for name, value in rows:
        table.add_row(name, value)
    for c in status.consumers:
        state = "active" if c.alive else "[yellow]gone[/]"
        table.add_row(f"  consumer {c.name}", f"{state}, {c.pending} pending, idle {_age(c.idle_ms / 1000)}")
    return table
