"""Redis replies as text: a client made without `decode_responses` answers bytes, one made with it
answers str; the code that reads shared keys takes either."""

from __future__ import annotations

from typing import Any


def decoded(value: Any) -> Any:
    """bytes → str (UTF-8); anything else (str, None, an integer reply) as it is."""
    return value.decode() if isinstance(value, bytes) else value
