"""Dead letters: an entry that must not run, kept with everything needed to understand it.

A DLQ entry holds the original fields (as JSON, exactly as read: bytes that are not UTF-8 are
shown with backslash escapes, values above a size limit are cut and flagged), the id and name of
the stream it came from, a readable error, and who rejected it when. Flat string fields, so
`XRANGE quantum:stream:trade.intent.dlq - +` in redis-cli is enough to read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="backslashreplace") if isinstance(raw, bytes) else str(raw)


def original_fields_json(fields: Mapping[bytes | str, bytes | str], max_value_bytes: int) -> tuple[str, bool]:
    """The entry's fields as a JSON object (order kept) and whether any value was cut."""
    out: dict[str, str] = {}
    cut = False
    for key, value in fields.items():
        text = _text(value)
        if len(text.encode("utf-8", errors="replace")) > max_value_bytes:
            text = text.encode("utf-8", errors="replace")[:max_value_bytes].decode("utf-8", errors="ignore")
            text += f"... [cut: {len(_text(value))} characters in the original]"
            cut = True
        name = _text(key)
        if len(name) > 256:
            name, cut = name[:256] + "...", True
        out[name] = text
    return json.dumps(out, ensure_ascii=False), cut


def dead_letter(
    fields: Mapping[bytes | str, bytes | str],
    *,
    stream: str,
    stream_id: str,
    problems: list[str],
    consumer: str,
    max_value_bytes: int = 16_384,
    now: datetime | None = None,
) -> dict[str, str]:
    """The DLQ entry for `fields` (read from `stream` at `stream_id`) refused for `problems`."""
    original, cut = original_fields_json(fields, max_value_bytes)
    moment = now or datetime.now(UTC)
    return {
        "error": "; ".join(problems) or "invalid trade intent",
        "problems": json.dumps(problems, ensure_ascii=False),
        "stream": stream,
        "stream_id": stream_id,
        "original_fields": original,
        "original_truncated": "1" if cut else "0",
        "consumer": consumer,
        "dead_lettered_at": moment.isoformat(),
    }
