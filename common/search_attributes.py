"""The TradeWorkflow's custom search attributes (SPEC: "Visible in the Web UI"): typed keys for
the workflow and the clients, and `SEARCH_ATTRIBUTES` (name -> Temporal's type name) that the
launcher and every worker register when missing."""

from __future__ import annotations

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

SYMBOL = SearchAttributeKey.for_keyword("Symbol")
SIDE = SearchAttributeKey.for_keyword("Side")
TRADE_STATUS = SearchAttributeKey.for_keyword("TradeStatus")
EXIT_REASON = SearchAttributeKey.for_keyword("ExitReason")
INTENT_SOURCE = SearchAttributeKey.for_keyword("IntentSource")
MODEL_VERSION = SearchAttributeKey.for_keyword("ModelVersion")
REALIZED_PNL = SearchAttributeKey.for_float("RealizedPnl")
LEVERAGE = SearchAttributeKey.for_float("Leverage")
CONFIDENCE = SearchAttributeKey.for_float("Confidence")

_TYPE_NAMES = {SearchAttributeIndexedValueType.KEYWORD: "Keyword", SearchAttributeIndexedValueType.DOUBLE: "Double"}
SEARCH_ATTRIBUTES: dict[str, str] = {
    key.name: _TYPE_NAMES[key.indexed_value_type]
    for key in (SYMBOL, SIDE, TRADE_STATUS, EXIT_REASON, INTENT_SOURCE, MODEL_VERSION, REALIZED_PNL, LEVERAGE,
                CONFIDENCE)
}
