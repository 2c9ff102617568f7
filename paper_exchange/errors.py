"""Binance USD-M futures error codes, their exact messages and HTTP statuses, in one table.

ccxt matches the `msg` text exactly first and the `code` second (see `handle_errors` in ccxt's
binance.py), so the texts below are Binance's own, character for character. Messages with a
`{}` placeholder are filled per request (a parameter name, a leverage, a notional).
"""

from __future__ import annotations

from typing import Any

# code: (HTTP status, message template)
ERRORS: dict[int, tuple[int, str]] = {
    -1000: (400, "An unknown error occured while processing the request."),
    -1001: (503, "Internal error; unable to process your request. Please try again."),
    -1003: (429, "Too many requests; current limit is 2400 requests per minute."),
    -1021: (400, "Timestamp for this request is outside of the recvWindow."),
    -1022: (400, "Signature for this request is not valid."),
    -1100: (400, "Illegal characters found in parameter '{}'; legal range is '{}'."),
    -1102: (400, "Mandatory parameter '{}' was not sent, was empty/null, or malformed."),
    -1106: (400, "Parameter '{}' sent when not required."),
    -1111: (400, "Precision is over the maximum defined for this asset."),
    -1115: (400, "Invalid timeInForce."),
    -1116: (400, "Invalid orderType."),
    -1117: (400, "Invalid side."),
    -1120: (400, "Invalid interval."),
    -1121: (400, "Invalid symbol."),
    -1130: (400, "Data sent for parameter '{}' is not valid."),
    -2011: (400, "Unknown order sent."),
    -2013: (400, "Order does not exist."),
    -2015: (401, "Invalid API-key, IP, or permissions for action."),
    -2019: (400, "Margin is insufficient."),
    -2021: (400, "Order would immediately trigger."),
    -2022: (400, "ReduceOnly Order is rejected."),
    -4001: (400, "Price less than 0."),
    -4003: (400, "Quantity less than or equal to zero."),
    -4005: (400, "Quantity greater than max quantity."),
    -4006: (400, "Stop price less than zero."),
    -4014: (400, "Price not increased by tick size."),
    -4015: (400, "Client order id is not valid."),
    -4023: (400, "Quantity not increased by step size."),
    -4028: (400, "Leverage {} is not valid"),
    -4046: (400, "No need to change margin type."),
    -4059: (400, "No need to change position side."),
    -4061: (400, "Order's position side does not match user's setting."),
    -4116: (400, "ClientOrderId is duplicated."),
    -4120: (
        400,
        "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
    ),
    -4164: (400, "Order's notional must be no smaller than {} (unless you choose reduce only)."),
    -5000: (404, "Path {}, Method {} is invalid"),
    -5021: (
        400,
        "Due to the order could not be filled immediately, the FOK order has been rejected.",
    ),
    -5022: (
        400,
        "Due to the order could not be executed as maker, the Post Only order will be rejected.",
    ),
}


class BinanceError(Exception):
    """A request the exchange refuses: becomes `{"code": ..., "msg": ...}` with `status`."""

    def __init__(self, code: int, *args: Any, msg: str | None = None, status: int | None = None):
        default_status, template = ERRORS.get(code, (400, "Unknown error."))
        self.code = code
        self.msg = msg if msg is not None else template.format(*args)
        self.status = status if status is not None else default_status
        super().__init__(f"{code}: {self.msg}")

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def default_status(code: int) -> int:
    return ERRORS.get(code, (400, ""))[0]


def default_message(code: int) -> str:
    return ERRORS.get(code, (400, "Unknown error."))[1]
