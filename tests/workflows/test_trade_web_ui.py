"""What the Temporal Web UI shows of a trade: static details set at start (the intent and the
levels it asked for: readable with no worker up) and current details that follow the stage and
render as Markdown blocks (a list after a quote would otherwise render inside the quote)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata

from trading.models import TradeStatus

pytestmark = pytest.mark.integration


def blocks_are_separated(markdown: str) -> bool:
    """No list item directly after a quote line, and the heading apart from what follows."""
    lines = markdown.split("\n")
    return all(not (a.startswith(">") and b.startswith("- ")) for a, b in zip(lines, lines[1:])) and \
        (len(lines) < 2 or lines[1] == "")


async def current_details(handle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def test_static_and_current_details_follow_the_trade(rig, paper):
    paper.set_price("ETHUSDT", 3400)
    handle = await rig.start(rig.intent("ETHUSDT", "SELL", 3400, stop_loss="3468", reason="fading the breakout"))
    description = await handle.describe()
    static = await description.static_details()
    assert "**SELL ETHUSDT**" in static and "entry ≈ 3400" in static and "asked: stop 3468" in static, static
    assert "fading the breakout" in static and blocks_are_separated(static)
    assert (await description.static_summary()).startswith("SELL ETHUSDT · margin")

    state = await rig.wait_for(handle, lambda s: s.status is TradeStatus.OPEN and s.stage.value == "MONITORING")
    details = await current_details(handle)
    assert details.startswith("**OPEN** · stage MONITORING"), details
    assert f"- stop: {state.exit.stop.normalize():f}" in details and blocks_are_separated(details), details

    result = await handle.execute_update("close", {"reason": "test"}, result_type=dict)
    assert result["status"] == "CLOSED"
    details = await current_details(handle)
    assert details.startswith("**CLOSED** · stage DONE") and "> closed by the operator (test)" in details, details
    assert "- realized PnL" in details and blocks_are_separated(details), details
    assert D(result["r_multiple"]) == D(result["r_multiple"]).quantize(D("0.0001"))  # rounded, not 50 digits
