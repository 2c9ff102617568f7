"""The trade intent: what a producer asks for, parsed from a Redis stream entry and validated.

Old producers XADD flat string fields ("0.72", "1", "BUY"); newer ones put one JSON object in a
`payload`, `data` or `json` field. Both arrive here. Anything invalid raises `IntentError`, whose
`problems` are short readable sentences: the ingest writes them to the DLQ next to the original
fields, so whoever reads the DLQ sees *why* without reading code.

Also here: the workflow id of an intent (idempotency: a re-published duplicate maps to the same
id) and the staleness check (a replayed backlog must never open hours-old trades).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trading.models import Side

MAX_FIELD_BYTES = 4096  # any single field (name or value) above this is refused
MAX_PAYLOAD_BYTES = 65536  # the one JSON field holding the whole intent
MAX_FIELDS = 64
JSON_FIELDS = ("payload", "data", "json")  # checked in this order; at most one may be present
MIN_LEVERAGE, MAX_LEVERAGE = 1, 125  # Binance USD-M range
MAX_AMOUNT = Decimal("1e12")  # above any real price or USD size; keeps later arithmetic sane
# Short texts that become search attributes (Keyword values are limited to 2 KB by Temporal's
# default `limit.searchAttributeSizeLimit`; a longer one would fail the workflow task forever).
MAX_LABEL_CHARS = {"model": 128, "source": 128, "regime": 64, "intent_id": MAX_FIELD_BYTES, "reason": 1024}

# Producers written in Python turn None into "None"; treat these like an absent field.
_ABSENT_TEXT = frozenset({"", "none", "null"})
# Exchange ids as Binance spells them: NEARUSDT, 1000PEPEUSDT, and non-ASCII bases such as
# 币安人生USDT (on the old allowlist). Upper case after normalisation; no separators.
_SYMBOL = re.compile(r"[^\W_]{1,20}USDT")
_CCXT_SYMBOL = re.compile(r"([^\W_]{1,20})/USDT(?::USDT)?")  # NEAR/USDT:USDT, NEAR/USDT
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_FROM = Decimal("1e11")  # a number above this is milliseconds (1e11 s is year 5138)
_EPOCH_MS_UNTIL = Decimal("1e14")
_OLDEST = datetime(2000, 1, 1, tzinfo=UTC)  # outside these bounds a timestamp is a unit mix-up
_NEWEST = datetime(2100, 1, 1, tzinfo=UTC)
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
_MAX_ID_PART = 64


class IntentError(ValueError):
    """An intent that must not run. `problems` are readable sentences, one per defect."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems) or ["invalid trade intent"]
        super().__init__("invalid trade intent: " + "; ".join(self.problems))


class TradeIntent(BaseModel):
    """One request to open a trade, as the old producers write it (SPEC "Input: the trade intent").

    Prices and USD sizes are `Decimal` (exact, parsed from the producer's text); scores and
    rates are floats. `timestamp` is always timezone-aware UTC. `stop_loss` / `take_profit`
    are the producer's suggestion: optional, but checked against `entry_price` when present.
    `leverage` is a whole number (Binance only takes integers): a fractional value is floored,
    i.e. rounded toward less risk.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())

    symbol: str
    side: Side
    confidence: float
    entry_price: Decimal
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    position_size_usd: Decimal
    leverage: int
    timestamp: datetime
    model: str = "unknown"
    reason: str = ""
    atr_value: Decimal | None = None
    volatility_factor: float | None = None
    exchange_divergence: float | None = None
    funding_rate: float | None = None
    regime: str | None = None
    intent_id: str | None = None
    source: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_absent_and_refuse_huge(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        huge = [
            f"field {str(key)[:40]!r} is too large ({size} bytes, limit {MAX_FIELD_BYTES})"
            for key, value in data.items()
            if (size := _size_of(value)) > MAX_FIELD_BYTES
        ]
        if huge:
            raise ValueError("; ".join(huge))
        return {key: value for key, value in data.items() if not _is_absent(value)}

    @field_validator("symbol", mode="before")
    @classmethod
    def _symbol(cls, value: Any, info: ValidationInfo) -> str:
        known = info.context.get("known_symbols") if isinstance(info.context, Mapping) else None
        return normalise_symbol(value, known)

    @field_validator("side", mode="before")
    @classmethod
    def _side(cls, value: Any) -> Side:
        return Side.parse(_required(value))

    @field_validator("entry_price", "position_size_usd", mode="before")
    @classmethod
    def _positive_amount(cls, value: Any) -> Decimal:
        return _positive(_decimal(_required(value)))

    @field_validator("stop_loss", "take_profit", mode="before")
    @classmethod
    def _optional_price(cls, value: Any) -> Decimal | None:
        return None if value is None else _positive(_decimal(value))

    @field_validator("atr_value", mode="before")
    @classmethod
    def _atr(cls, value: Any) -> Decimal | None:
        return None if value is None else _not_negative(_decimal(value))

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> float:
        number = _decimal(_required(value))
        if not 0 <= number <= 1:
            raise ValueError(f"must be between 0 and 1, got {_show(value)}")
        return float(number)

    @field_validator("volatility_factor", mode="before")
    @classmethod
    def _volatility(cls, value: Any) -> float | None:
        return None if value is None else float(_not_negative(_decimal(value)))

    @field_validator("exchange_divergence", "funding_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float | None:
        return None if value is None else float(_decimal(value))

    @field_validator("leverage", mode="before")
    @classmethod
    def _leverage(cls, value: Any) -> int:
        number = _decimal(_required(value))
        if not MIN_LEVERAGE <= number <= MAX_LEVERAGE:
            raise ValueError(f"must be between {MIN_LEVERAGE} and {MAX_LEVERAGE}, got {_show(value)}")
        return int(number.to_integral_value(rounding=ROUND_FLOOR))

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        return parse_timestamp(_required(value))

    @field_validator("model", "reason", "regime", "intent_id", "source", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if isinstance(value, bytes):
            value = _utf8(value)
        if not isinstance(value, str | int | float | Decimal) or isinstance(value, bool):
            raise ValueError(f"must be text, got {_show(value)}")
        text, limit = str(value).strip(), MAX_LABEL_CHARS[info.field_name]
        if len(text) > limit:
            raise ValueError(f"is too long ({len(text)} characters, limit {limit})")
        return text

    @model_validator(mode="after")
    def _levels_on_the_right_side(self) -> TradeIntent:
        entry, problems = self.entry_price, []
        below, above = ("below", "above") if self.side is Side.BUY else ("above", "below")
        checks = (("stop_loss", self.stop_loss, below), ("take_profit", self.take_profit, above))
        for name, price, where in checks:
            if price is None:
                continue
            ok = price < entry if where == "below" else price > entry
            if not ok:
                problems.append(f"{name} {price} must be {where} entry_price {entry} for a {self.side}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_stream_fields(
    fields: Mapping[str | bytes, str | bytes],
    *,
    known_symbols: Collection[str] | None = None,
) -> TradeIntent:
    """A Redis stream entry (flat fields, or one JSON field) → a valid `TradeIntent`.

    `known_symbols` (the exchange's markets) turns an unlisted symbol into a problem; without it
    only the symbol's format is checked. Raises `IntentError` listing every problem found.
    """
    if not fields:
        raise IntentError(["empty stream entry: no fields"])
    if len(fields) > MAX_FIELDS:
        raise IntentError([f"too many fields ({len(fields)}, limit {MAX_FIELDS})"])
    flat, problems = _decode_fields(fields)
    if problems:
        raise IntentError(problems)

    json_keys = [key for key in JSON_FIELDS if key in flat]
    if len(json_keys) > 1:
        raise IntentError([f"ambiguous entry: more than one JSON field ({', '.join(json_keys)})"])
    data: dict[str, Any] = dict(flat)
    if json_keys:
        key = json_keys[0]
        # Fields beside the JSON (an envelope's `source`, say) fill gaps; the JSON object wins.
        data.pop(key)
        data.update(_load_json_object(key, flat[key]))

    try:
        return TradeIntent.model_validate(data, context={"known_symbols": known_symbols})
    except ValidationError as err:
        raise IntentError(_readable(err)) from None


def to_stream_fields(intent: TradeIntent) -> dict[str, str]:
    """The flat XADD form of an intent (what old producers write); absent fields are left out."""
    out: dict[str, str] = {}
    for name, value in intent.model_dump().items():
        if value is None:
            continue
        if isinstance(value, Decimal):
            out[name] = format(value, "f")
        elif isinstance(value, datetime):
            out[name] = value.isoformat()
        else:
            out[name] = str(value)
    return out


def normalise_symbol(value: Any, known_symbols: Collection[str] | None = None) -> str:
    """`nearusdt`, `NEAR/USDT:USDT` → `NEARUSDT`; refuses anything that is not a USDT market id."""
    if isinstance(value, bytes):
        value = _utf8(value)
    if not isinstance(value, str):
        raise ValueError(f"must be text like NEARUSDT, got {_show(_required(value))}")
    text = value.strip().upper()
    if ccxt_form := _CCXT_SYMBOL.fullmatch(text):
        text = ccxt_form.group(1) + "USDT"
    if not _SYMBOL.fullmatch(text):
        raise ValueError(
            f"must look like NEARUSDT (letters and digits quoted in USDT), got {_show(value)}"
        )
    if known_symbols is not None and text not in known_symbols:
        raise ValueError(f"unknown symbol {text!r}: not listed on the exchange")
    return text


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (naive = UTC), epoch seconds or epoch milliseconds → aware UTC datetime."""
    if isinstance(value, bytes):
        value = _utf8(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        raise ValueError(f"not a date/time: {_show(value)}")
    elif isinstance(value, int | float | Decimal):
        moment = _from_epoch(_decimal(value, bounded=False), value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            moment = _from_epoch(Decimal(text), value)
        else:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"not a date/time: {_show(value)} (expected ISO 8601 or epoch seconds/milliseconds)"
                ) from None
    else:
        raise ValueError(f"not a date/time: {_show(value)}")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if not _OLDEST <= moment < _NEWEST:
        raise ValueError(f"out of range: {_show(value)} is {moment:%Y-%m-%d}, not between 2000 and 2100")
    return moment


def intent_fingerprint(intent: TradeIntent) -> str:
    """A short stable hash of what makes an intent *this* intent (not of its free-text fields).

    Numbers and times are put in canonical form first, so "1.4650" and "1.465", or an ISO time
    and the same instant in epoch milliseconds, give the same fingerprint.
    """
    identity = "|".join(
        [
            "v1",
            intent.symbol,
            intent.side.value,
            format(intent.entry_price.normalize(), "f"),
            intent.timestamp.isoformat(timespec="microseconds"),
            intent.model,
            intent.source or "",
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def workflow_id_for(intent: TradeIntent) -> str:
    """`trade-{intent_id}` (made safe), else `trade-{fingerprint}`: duplicates share one id.

    An intent id with characters outside `[A-Za-z0-9._-]`, or longer than 64, is replaced
    by its safe prefix plus a hash of the original, so two ids that only differ in unsafe
    characters still get different workflow ids.
    """
    if not intent.intent_id:
        return f"trade-{intent_fingerprint(intent)}"
    return workflow_id_for_intent_id(intent.intent_id)


def workflow_id_for_intent_id(raw: str) -> str:
    """`trade-{intent_id}` made safe (see `workflow_id_for`)."""
    safe = _UNSAFE_ID.sub("_", raw)
    if safe != raw or len(safe) > _MAX_ID_PART:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        safe = f"{safe[:40]}-{digest}"
    return f"trade-{safe}"


def intent_differences(existing: TradeIntent, new: TradeIntent) -> list[str]:
    """What differs between two intents, field by field (`side: BUY -> SELL`); empty: the same
    intent. Values are compared parsed, so "1.4650" equals "1.465" and an ISO time equals the
    same instant in epoch milliseconds: a producer's re-publish is not a difference."""
    a, b = existing.model_dump(), new.model_dump()
    return [f"{name}: {_show_value(a[name])} -> {_show_value(b[name])}"
            for name in TradeIntent.model_fields if name not in _FREE_TEXT and a[name] != b[name]]


# Not part of what the intent asks for: a producer may regenerate it on a re-publish.
_FREE_TEXT = frozenset({"reason"})


def _show_value(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(getattr(value, "value", value))


def intent_age_s(intent: TradeIntent, now: datetime) -> float:
    """Seconds from the intent's timestamp to `now` (market time; naive = UTC). Negative: future."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
    return (now - intent.timestamp).total_seconds()


def is_stale(intent: TradeIntent, now: datetime, max_age_s: float = 120.0) -> bool:
    """Older than `max_age_s` at market time `now`: must not be executed (SPEC gate "stale")."""
    return intent_age_s(intent, now) > max_age_s


def is_from_future(intent: TradeIntent, now: datetime, tolerance_s: float = 5.0) -> bool:
    """Timestamped more than `tolerance_s` after `now`: a producer's clock (or unit) is wrong.

    Not stale, but worth a warning or a gate of its own; a small tolerance absorbs clock skew.
    """
    return intent_age_s(intent, now) < -tolerance_s


# --- helpers -------------------------------------------------------------------------------


def _decode_fields(fields: Mapping[str | bytes, Any]) -> tuple[dict[str, Any], list[str]]:
    """Bytes → text, names lower-cased, sizes checked. Returns the fields and any problems."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for raw_key, raw_value in fields.items():
        try:
            key = (_utf8(raw_key) if isinstance(raw_key, bytes) else str(raw_key)).strip().lower()
            value = _utf8(raw_value) if isinstance(raw_value, bytes) else raw_value
        except ValueError as err:
            problems.append(f"field {_show(raw_key)}: {err}")
            continue
        limit = MAX_PAYLOAD_BYTES if key in JSON_FIELDS else MAX_FIELD_BYTES
        if (key_size := len(key.encode())) > MAX_FIELD_BYTES:
            problems.append(f"a field name is too large ({key_size} bytes, limit {MAX_FIELD_BYTES})")
        elif (size := _size_of(value)) > limit:
            problems.append(f"field {key!r} is too large ({size} bytes, limit {limit})")
        elif key in out:
            problems.append(f"field {key!r} appears more than once")
        else:
            out[key] = value
    return out, problems


def _load_json_object(key: str, text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise IntentError([f"field {key!r} must hold JSON text, got {_show(text)}"])
    try:
        # parse_float=Decimal keeps the producer's digits exactly (0.11935679999999999 stays so).
        obj = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise IntentError([f"field {key!r} is not valid JSON: {err.msg} ({where})"]) from None
    if isinstance(obj, str) and obj.lstrip().startswith("{"):
        try:  # double-encoded by a producer that json.dumps'ed twice
            obj = json.loads(obj, parse_float=Decimal)
        except json.JSONDecodeError:
            pass
    if not isinstance(obj, dict):
        raise IntentError([f"field {key!r} must hold a JSON object, got {type(obj).__name__}"])
    if len(obj) > MAX_FIELDS:
        raise IntentError([f"JSON in field {key!r} has too many fields ({len(obj)}, limit {MAX_FIELDS})"])
    return {str(name).strip().lower(): value for name, value in obj.items()}


def _readable(err: ValidationError) -> list[str]:
    problems: list[str] = []
    for item in err.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"])
        message = "missing required field" if item["type"] == "missing" else item["msg"]
        message = message.removeprefix("Value error, ")
        parts = message.split("; ") if not field else [message]  # model-level: one per problem
        problems.extend(f"{field}: {part}" if field else part for part in parts)
    return problems


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError("missing required field")
    return value


def _decimal(value: Any, *, bounded: bool = True) -> Decimal:
    """Exact number from text or JSON; readable refusal of text, NaN, inf and absurd sizes."""
    if isinstance(value, bytes):
        value = _utf8(value)
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {_show(value)}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # the shortest text that round-trips, not binary noise
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"must be a number, got {_show(value)}") from None
    else:
        raise ValueError(f"must be a number, got {_show(value)}")
    if not number.is_finite():
        raise ValueError(f"must be a finite number, got {_show(value)}")
    if bounded and abs(number) >= MAX_AMOUNT:
        raise ValueError(f"is implausibly large: {_show(value)}")
    return number


def _positive(number: Decimal) -> Decimal:
    if number <= 0:
        raise ValueError(f"must be greater than 0, got {number}")
    return number


def _not_negative(number: Decimal) -> Decimal:
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def _from_epoch(number: Decimal, original: Any) -> datetime:
    if number <= 0 or number >= _EPOCH_MS_UNTIL:
        raise ValueError(f"out of range: {_show(original)} is neither epoch seconds nor milliseconds")
    seconds = number / 1000 if number >= _EPOCH_MS_FROM else number
    micros = int((seconds * 1_000_000).to_integral_value())
    return _EPOCH + timedelta(microseconds=micros)


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _ABSENT_TEXT)


def _size_of(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict | list):
        return len(json.dumps(value, default=str))
    return 0


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not valid UTF-8") from None


def _show(value: Any) -> str:
    """A value for an error message: repr, cut short so a DLQ reason stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
