"""Between the API's request body and the project's one intent parser (`trading/intent.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from api.schemas import ManualIntentRequest
from trading.intent import IntentError, TradeIntent


def request_fields(body: ManualIntentRequest) -> dict[str, Any]:
    """The fields the caller gave, as stream fields (what the intake would read)."""
    return {name: value for name, value in body.model_dump(mode="json", exclude_none=True).items()
            if not (name == "reason" and value == "")}


def intent_problems_as_422(err: IntentError) -> HTTPException:
    """The parser's problems ("side: must be BUY or SELL") as FastAPI's 422 shape, field named."""
    detail = []
    for problem in err.problems:
        field, sep, message = problem.partition(": ")
        if sep and field in TradeIntent.model_fields:
            detail.append({"loc": ["body", field], "msg": message, "type": "value_error"})
        else:
            detail.append({"loc": ["body"], "msg": problem, "type": "value_error"})
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
