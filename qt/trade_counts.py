"""How many TradeWorkflows exist, per `TradeStatus`: the intake's outcome as Temporal keeps it.

The intake's own counters (`started / duplicates / dead-lettered`) live in a per-process hash
that expires (and is deleted) when that `qt ingest` stops, and start from 0 in the next one:
right after `qt demo` (whose in-process intake started 23 workflows and then exited) they read
0 / 0 / 0. Temporal's visibility store keeps every workflow for the namespace's retention, so
`qt status` counts the trades there; the DLQ stream keeps what was dead-lettered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from temporalio.client import Client

from trading.models import TradeStatus

WORKFLOW_TYPE = "TradeWorkflow"  # workflows/starter.py's, without importing the workflow code


@dataclass
class TradeCounts:
    total: int
    by_status: dict[str, int] = field(default_factory=dict)  # only the non-zero ones

    def text(self) -> str:
        parts = ", ".join(f"{status} {n}" for status, n in self.by_status.items())
        return f"{self.total}" + (f" ({parts})" if parts else "")


async def count_trades(client: Client) -> TradeCounts:
    base = f'WorkflowType="{WORKFLOW_TYPE}"'
    statuses = list(TradeStatus)
    counts = await asyncio.gather(
        client.count_workflows(base),
        *(client.count_workflows(f'{base} AND TradeStatus="{s.value}"') for s in statuses))
    by_status = {s.value: c.count for s, c in zip(statuses, counts[1:], strict=True) if c.count}
    return TradeCounts(counts[0].count, by_status)
