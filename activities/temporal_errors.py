"""Exchange exceptions → Temporal `ApplicationError`, decided in one place.

Temporal retries an activity unless its error is non-retryable, so the retry policy of every
exchange call follows `classify_exchange_error`: network trouble, timeouts, 429s and -1001 are
retried (order activities look the order up by client id first, so a retry never doubles an
order); anything the exchange refused on its merits is not. The error `type` is the failure
kind, so workflows branch on `"insufficient_funds"` rather than on ccxt class names, and the
details carry the exchange's own code and message for the UI, plus the endpoint asked (method and
path, never its query: see `exchange.errors.redact`).

Activities raise the result `from` the ccxt exception, so the SDK serializes that exception too
(as the failure's cause, with its stack trace) and logs it: the exchange client has already
re-raised every request error as a sanitized copy with no chained original, so nothing here can
carry a signed URL.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from exchange.errors import classify_exchange_error


def to_application_error(exc: BaseException) -> ApplicationError:
    if isinstance(exc, ApplicationError):  # already decided by an inner layer
        return exc
    failure = classify_exchange_error(exc)
    code = f" ({failure.code})" if failure.code is not None else ""
    where = ""
    if failure.endpoint and failure.endpoint.split(" ")[-1] not in failure.message:
        status = f", HTTP {failure.http_status}" if failure.http_status else ""
        where = f" [{failure.endpoint}{status}]"
    return ApplicationError(
        f"{failure.kind.value}{code}: {failure.message}{where}",
        failure.as_details(),
        type=failure.kind.value,
        non_retryable=not failure.retryable,
    )
