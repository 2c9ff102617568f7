"""A workflow that decides in its first task with no activity: the floor a stale intent's
TradeWorkflow is measured against (`benchmarks/stale_decisions.py`). Its own module: Temporal's
sandbox re-executes a workflow's module for every run, so it holds nothing else."""

from __future__ import annotations

from typing import Any

from temporalio import workflow


@workflow.defn(name="BenchZeroActivity")
class ZeroActivityWorkflow:
    @workflow.run
    async def run(self, fields: dict[str, Any]) -> str:
        return "REJECTED"
