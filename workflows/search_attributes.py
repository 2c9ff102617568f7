"""Typed keys of the TradeWorkflow's search attributes (SPEC names; registered by `qt up`)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SYMBOL = SearchAttributeKey.for_keyword("Symbol")
SIDE = SearchAttributeKey.for_keyword("Side")
TRADE_STATUS = SearchAttributeKey.for_keyword("TradeStatus")
EXIT_REASON = SearchAttributeKey.for_keyword("ExitReason")
INTENT_SOURCE = SearchAttributeKey.for_keyword("IntentSource")
MODEL_VERSION = SearchAttributeKey.for_keyword("ModelVersion")
REALIZED_PNL = SearchAttributeKey.for_float("RealizedPnl")
LEVERAGE = SearchAttributeKey.for_float("Leverage")
CONFIDENCE = SearchAttributeKey.for_float("Confidence")
