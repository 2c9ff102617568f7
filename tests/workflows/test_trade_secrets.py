"""No signed request URL, signature or API key ever leaves the exchange adapter: not in a
workflow's history (what the Web UI shows), not in any log line (messages, extras, tracebacks).

A dropped connection makes ccxt raise `ExchangeNotAvailable("binanceusdm GET http://…?…&
signature=…")`; the activities turn it into an `ApplicationError` chained to it, which the SDK
serializes (cause included) into the failure and logs with its traceback. Here the entry's
order lookup (a signed GET) keeps losing its connection until every attempt of `place_order` has
failed, so the exchange error reaches the history (each retry's last failure, the final failure,
the trade's FAILED reason) and the worker log (one warning with a traceback per attempt).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from trading.models import TradeStatus

pytestmark = pytest.mark.timeout(150)

# Loggers whose records the test reads at DEBUG (ccxt logs every request at DEBUG).
_LOGGERS = ("", "temporalio", "temporalio.activity", "temporalio.workflow", "temporalio.worker",
            "ccxt", "activities", "workflows")


def _record_text(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """Everything a log handler could write: the formatted line with its traceback, and every
    extra attribute (structured handlers write those too)."""
    parts = [formatter.format(record)]
    parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in ("msg", "args")]
    return "\n".join(parts)


def _leaks(text: str, secrets: tuple[str, ...]) -> list[str]:
    found = [s for s in secrets if s in text]
    return found + (["signature="] if "signature=" in text else []) + (
        ["query string"] if "?timestamp=" in text or "&recvWindow=" in text else [])


async def _entry_failed(handle, timeout: float) -> None:
    """Until an activity failed for good (all its attempts): an ActivityTaskFailed event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = await handle.fetch_history()
        if any(e.HasField("activity_task_failed_event_attributes") for e in history.events):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"no activity failed within {timeout} s")


async def test_exchange_outage_leaks_no_signature_or_key(rig, paper, caplog):
    for name in _LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    key, secret = paper.settings.api_key, paper.settings.api_secret
    paper.set_price("BTCUSDT", 63000)
    # Every order lookup (signed GET /fapi/v1/order?…&signature=…) loses its connection, and
    # an order that gets as far as being sent is refused (503): the entry fails for good.
    paper.add_fault(path="/fapi/v1/order", method="GET", drop_after_accept=True, count=10_000)
    paper.add_fault(path="/fapi/v1/order", method="POST", status=503, count=10_000)
    handle = await rig.start(rig.intent("BTCUSDT", "BUY", 63000))
    try:
        await _entry_failed(handle, timeout=90)
    finally:
        paper.clear_faults()  # the outage ends: the workflow confirms it is flat and ends FAILED
    result = await rig.result(handle)
    assert result.status is TradeStatus.FAILED

    # The error still says what happened: kind, method and endpoint path.
    assert "exchange_busy" in result.reason, result.reason
    assert "GET" in result.reason and "/fapi/v1/order" in result.reason, result.reason

    history = (await handle.fetch_history()).to_json()
    assert "ExchangeNotAvailable" in history and "/fapi/v1/order" in history  # the failure is there
    assert _leaks(history, (key, secret)) == [], "the workflow history carries request secrets"

    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    texts = [_record_text(r, formatter) for r in caplog.records]
    failed = [t for t in texts if "Completing activity as failed" in t]
    assert failed and any("ExchangeNotAvailable" in t for t in failed)  # the attempts were logged
    # ccxt's DEBUG line of each request (URL, headers with the key) was written, and sanitized.
    assert any(r.name.startswith("ccxt") and "X-MBX-APIKEY" in r.getMessage() for r in caplog.records)
    leaking = [(t[:300], _leaks(t, (key, secret))) for t in texts if _leaks(t, (key, secret))]
    assert leaking == [], f"{len(leaking)} log records carry request secrets: {leaking[:3]}"
