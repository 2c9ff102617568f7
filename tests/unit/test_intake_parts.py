"""Pure parts of the intake: the shared backoff, the starts/s window, the DLQ entry, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from signals_ingest.dead_letters import dead_letter
from signals_ingest.intake import Backoff
from signals_ingest.intake_metrics import RateWindow
from signals_ingest.intake_settings import IntakeSettings
from signals_ingest.intake_status import stream_id_ms


def test_backoff_doubles_to_its_cap_and_resets_on_success():
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    delays = [backoff.failed() for _ in range(6)]
    bases = [1, 2, 4, 8, 8, 8]
    assert all(base * 0.5 <= d <= base for d, base in zip(delays, bases))
    assert backoff.active
    assert backoff.succeeded() is True and not backoff.active
    assert backoff.succeeded() is False  # nothing to end


def test_rate_window_counts_the_last_ten_seconds_only():
    window = RateWindow(window_s=10)
    for second in range(20):
        window.add(5, now=1000 + second)
    assert window.rate(now=1019) == pytest.approx(5.0)
    assert window.rate(now=1040) == 0.0


def test_dead_letter_keeps_the_original_fields_the_id_and_a_readable_error():
    fields = {b"symbol": b"NEARUSDT", b"reason": b"\xff" + b"x" * 50, b"entry_price": b"NaN"}
    letter = dead_letter(fields, stream="s", stream_id="1-0", problems=["entry_price: must be finite", "x"],
                         consumer="c", max_value_bytes=20, now=datetime(2026, 1, 1, tzinfo=UTC))
    original = json.loads(letter["original_fields"])
    assert original["symbol"] == "NEARUSDT" and original["entry_price"] == "NaN"
    assert original["reason"].startswith("\\xff") and "[cut: 54 characters in the original]" in original["reason"]
    assert letter["original_truncated"] == "1"
    assert letter["error"] == "entry_price: must be finite; x"
    assert json.loads(letter["problems"]) == ["entry_price: must be finite", "x"]
    assert (letter["stream"], letter["stream_id"], letter["consumer"]) == ("s", "1-0", "c")
    assert letter["dead_lettered_at"] == "2026-01-01T00:00:00+00:00"
    assert all(isinstance(v, str) for v in letter.values())  # XADD-able as is


@pytest.mark.parametrize("change, words", [
    ({"group_start_id": "yesterday"}, "must be '0', '$' or a stream id"),
    ({"max_in_flight": 0}, "greater than or equal to 1"),
    ({"claim_idle_ms": 10}, "greater than or equal to 100"),
    ({"claim_idle_ms": 1_000, "claim_interval_s": 1.0}, "must be at least twice claim_interval_s"),
    ({"consumer": ""}, "at least 1 character"),
    ({"backoff_initial_s": -1}, "greater than 0"),
])
def test_bad_settings_are_refused_with_a_clear_error(change, words):
    with pytest.raises(ValidationError, match=words.replace("$", r"\$")):
        IntakeSettings(**change)


def test_stream_id_ms():
    assert stream_id_ms(b"1700000000000-3") == 1_700_000_000_000


def test_start_priority_lowers_only_intents_already_stale_on_arrival():
    from temporalio.common import Priority

    from signals_ingest.start_priority import BACKLOG_PRIORITY, start_priority
    from trading.intent import parse_stream_fields

    now_ms = 1_790_000_000_000

    def intent(age_s: float):
        stamp = datetime.fromtimestamp(now_ms / 1000 - age_s, UTC).isoformat()
        return parse_stream_fields({"symbol": "BTCUSDT", "side": "BUY", "confidence": "0.7",
                                    "entry_price": "63000", "position_size_usd": "100", "leverage": "5",
                                    "timestamp": stamp})

    assert start_priority(intent(7_200), now_ms, 240) == BACKLOG_PRIORITY
    assert start_priority(intent(241), now_ms, 240) == BACKLOG_PRIORITY
    assert start_priority(intent(200), now_ms, 240) == Priority.default  # the gate decides
    assert start_priority(intent(-30), now_ms, 240) == Priority.default  # producer clock ahead
    assert start_priority(intent(90 * 86_400), now_ms, 0) == Priority.default  # switched off
    assert BACKLOG_PRIORITY.priority_key == 5  # Temporal's lowest by default


def test_the_documented_variables_set_the_stale_handling(monkeypatch):
    monkeypatch.setenv("QT_INGEST_DEPRIORITIZE_AGE_S", "3600")
    monkeypatch.setenv("QT_INGEST_DECIDE_STALE", "false")
    settings = IntakeSettings()
    assert settings.deprioritize_after_s == 3600 and settings.decide_stale is False
    assert IntakeSettings(deprioritize_after_s=5).deprioritize_after_s == 5  # by name too
