"""Trade intents: the seed samples parse exactly, bad input is refused with a readable reason,
duplicates map to one workflow id, and stale intents are recognised on the market clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.client_ids import client_order_id, is_valid_client_order_id
from trading.intent import (
    IntentError,
    TradeIntent,
    intent_age_s,
    intent_fingerprint,
    is_from_future,
    is_stale,
    parse_stream_fields,
    parse_timestamp,
    to_stream_fields,
    workflow_id_for,
)
from trading.models import Side

# Seed 000: as the old trading bot XADDs it (every value a string).
NEAR_FLAT = {
    "symbol": "NEARUSDT",
    "side": "BUY",
    "confidence": "0.72",
    "entry_price": "1.465",
    "stop_loss": "1.4357",
    "take_profit": "1.4943",
    "position_size_usd": "200.0",
    "leverage": "1",
    "timestamp": "2025-12-24T04:32:14.062679",
    "model": "ensemble",
    "reason": "AI signal",
    "atr_value": "0.02",
    "volatility_factor": "0.5513439007580968",
    "exchange_divergence": "0.0",
    "funding_rate": "0.0",
    "regime": "unknown",
}

# Seed 004: the last message of quantum:stream:trade.intent, verbatim JSON.
FHE_JSON = """{
  "symbol": "FHEUSDT",
  "side": "SELL",
  "confidence": 0.56116,
  "entry_price": 0.12433,
  "stop_loss": 0.1268166,
  "take_profit": 0.11935679999999999,
  "position_size_usd": 200.0,
  "leverage": 10.0,
  "timestamp": "2026-02-03T22:45:36.933921",
  "model": "fallback-trend-following"
}"""

NEAR_TIME = datetime(2025, 12, 24, 4, 32, 14, 62679, tzinfo=UTC)


def near(**changes: str | None) -> dict[str, str]:
    fields = {**NEAR_FLAT, **changes}
    return {key: value for key, value in fields.items() if value is not None}


def problems_of(fields, **kwargs) -> list[str]:
    with pytest.raises(IntentError) as caught:
        parse_stream_fields(fields, **kwargs)
    return caught.value.problems


# --- the seeds -------------------------------------------------------------------------------


def test_near_seed_flat_strings_parse_exactly():
    intent = parse_stream_fields(NEAR_FLAT)
    assert intent.symbol == "NEARUSDT" and intent.side is Side.BUY
    assert intent.confidence == 0.72
    assert intent.entry_price == Decimal("1.465")
    assert intent.stop_loss == Decimal("1.4357") and intent.take_profit == Decimal("1.4943")
    assert intent.position_size_usd == Decimal("200.0") and intent.leverage == 1
    assert intent.timestamp == NEAR_TIME  # naive in the seed: read as UTC
    assert intent.model == "ensemble" and intent.reason == "AI signal"
    assert intent.atr_value == Decimal("0.02") and intent.volatility_factor == 0.5513439007580968
    assert intent.exchange_divergence == 0.0 and intent.funding_rate == 0.0 and intent.regime == "unknown"
    assert intent.intent_id is None and intent.source is None


def test_fhe_seed_as_json_payload_keeps_the_producers_digits():
    intent = parse_stream_fields({"payload": FHE_JSON})
    assert intent.symbol == "FHEUSDT" and intent.side is Side.SELL
    assert intent.take_profit == Decimal("0.11935679999999999")  # not float noise
    assert intent.stop_loss == Decimal("0.1268166") and intent.entry_price == Decimal("0.12433")
    assert intent.leverage == 10 and isinstance(intent.leverage, int)
    assert intent.model == "fallback-trend-following"
    assert intent.timestamp == datetime(2026, 2, 3, 22, 45, 36, 933921, tzinfo=UTC)
    # The metadata the fallback model does not send is simply absent.
    assert intent.reason == "" and intent.atr_value is None and intent.regime is None


@pytest.mark.parametrize("key", ["payload", "data", "json"])
def test_each_json_field_name_is_accepted(key):
    assert parse_stream_fields({key: json.dumps(NEAR_FLAT)}) == parse_stream_fields(NEAR_FLAT)


def test_bytes_keys_and_values_as_redis_returns_them():
    raw = {key.encode(): value.encode() for key, value in NEAR_FLAT.items()}
    assert parse_stream_fields(raw) == parse_stream_fields(NEAR_FLAT)
    assert parse_stream_fields({b"payload": FHE_JSON.encode()}).symbol == "FHEUSDT"


def test_envelope_fields_fill_gaps_but_the_json_wins():
    payload = json.dumps({**NEAR_FLAT, "source": "signal-engine"})
    intent = parse_stream_fields({"payload": payload, "source": "envelope", "intent_id": "abc-1"})
    assert intent.source == "signal-engine" and intent.intent_id == "abc-1"


def test_double_encoded_json_is_unwrapped():
    assert parse_stream_fields({"payload": json.dumps(FHE_JSON)}).symbol == "FHEUSDT"


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "side"), [("buy", Side.BUY), (" Sell ", Side.SELL), ("LONG", Side.BUY), ("short", Side.SELL)])
def test_side_is_case_insensitive(text, side):
    assert parse_stream_fields(near(side=text, stop_loss=None, take_profit=None)).side is side


@pytest.mark.parametrize(
    "value",
    [
        "2025-12-24T04:32:14.062679",
        "2025-12-24T04:32:14.062679Z",
        "2025-12-24T05:32:14.062679+01:00",
        "2025-12-24 04:32:14.062679",
        "1766550734.062679",
        "1766550734062.679",
    ],
)
def test_timestamp_forms_give_the_same_utc_instant(value):
    assert parse_stream_fields(near(timestamp=value)).timestamp == NEAR_TIME


def test_epoch_numbers_in_json_seconds_and_milliseconds():
    seconds = parse_stream_fields({"payload": json.dumps({**NEAR_FLAT, "timestamp": 1770158765})})
    millis = parse_stream_fields({"payload": json.dumps({**NEAR_FLAT, "timestamp": 1770158765000})})
    assert seconds.timestamp == millis.timestamp == datetime(2026, 2, 3, 22, 46, 5, tzinfo=UTC)


def test_symbol_is_normalised():
    assert parse_stream_fields(near(symbol=" nearusdt ")).symbol == "NEARUSDT"
    assert parse_stream_fields(near(symbol="NEAR/USDT:USDT")).symbol == "NEARUSDT"
    assert parse_stream_fields(near(symbol="1000PEPEUSDT")).symbol == "1000PEPEUSDT"
    assert parse_stream_fields(near(symbol="币安人生USDT")).symbol == "币安人生USDT"  # on the old allowlist


def test_fractional_leverage_is_floored_toward_less_risk():
    assert parse_stream_fields(near(leverage="12.7")).leverage == 12


def test_python_none_text_means_absent_for_optional_fields():
    intent = parse_stream_fields(near(stop_loss="None", regime="null", atr_value=""))
    assert intent.stop_loss is None and intent.regime is None and intent.atr_value is None


def test_known_symbols_accepts_a_listed_market():
    assert parse_stream_fields(NEAR_FLAT, known_symbols={"NEARUSDT", "BTCUSDT"}).symbol == "NEARUSDT"


def test_unknown_extra_fields_are_ignored():
    assert parse_stream_fields(near(type="trade_intent", trace_id="x")) == parse_stream_fields(NEAR_FLAT)


# --- refusals, each with its readable reason -------------------------------------------------

BAD_INPUTS = [
    ("bad JSON", {"payload": "{not json"}, {}, "field 'payload' is not valid JSON"),
    ("JSON that is no object", {"data": "[1, 2]"}, {}, "field 'data' must hold a JSON object, got list"),
    ("two JSON fields", {"payload": FHE_JSON, "json": FHE_JSON}, {}, "ambiguous entry: more than one JSON field"),
    ("empty entry", {}, {}, "empty stream entry: no fields"),
    ("missing symbol", near(symbol=None), {}, "symbol: missing required field"),
    ("missing timestamp", near(timestamp=None), {}, "timestamp: missing required field"),
    ("empty required field", near(entry_price=""), {}, "entry_price: missing required field"),
    ("NaN price", near(entry_price="NaN"), {}, "entry_price: must be a finite number, got 'NaN'"),
    ("inf price", near(stop_loss="inf"), {}, "stop_loss: must be a finite number, got 'inf'"),
    ("price as text", near(entry_price="one dollar"), {}, "entry_price: must be a number, got 'one dollar'"),
    ("zero price", near(entry_price="0", stop_loss=None, take_profit=None), {}, "entry_price: must be greater than 0, got 0"),
    ("negative size", near(position_size_usd="-200"), {}, "position_size_usd: must be greater than 0, got -200"),
    ("negative ATR", near(atr_value="-0.02"), {}, "atr_value: must not be negative, got -0.02"),
    ("stop on the wrong side", near(stop_loss="1.5"), {}, "stop_loss 1.5 must be below entry_price 1.465 for a BUY"),
    ("take-profit on the wrong side", near(take_profit="1.4"), {}, "take_profit 1.4 must be above entry_price 1.465 for a BUY"),
    ("stop equal to entry", near(stop_loss="1.465"), {}, "stop_loss 1.465 must be below entry_price 1.465 for a BUY"),
    ("confidence 7", near(confidence="7"), {}, "confidence: must be between 0 and 1, got '7'"),
    ("negative confidence", near(confidence="-0.1"), {}, "confidence: must be between 0 and 1, got '-0.1'"),
    ("leverage 0", near(leverage="0"), {}, "leverage: must be between 1 and 125, got '0'"),
    ("leverage 200", near(leverage="200"), {}, "leverage: must be between 1 and 125, got '200'"),
    ("unknown symbol", NEAR_FLAT, {"known_symbols": {"BTCUSDT"}}, "symbol: unknown symbol 'NEARUSDT': not listed on the exchange"),
    ("symbol format", near(symbol="BTC-PERP"), {}, "symbol: must look like NEARUSDT"),
    ("symbol not in USDT", near(symbol="BTCUSD"), {}, "symbol: must look like NEARUSDT"),
    ("huge field", near(reason="x" * 5000), {}, "field 'reason' is too large (5000 bytes, limit 4096)"),
    ("huge payload", {"payload": " " * 70_000}, {}, "field 'payload' is too large (70000 bytes, limit 65536)"),
    ("model name too long for a search attribute", near(model="m" * 200), {}, "model: is too long (200 characters, limit 128)"),
    ("long reason", near(reason="r" * 2000), {}, "reason: is too long (2000 characters, limit 1024)"),
    ("wrong side value", near(side="HOLD"), {}, "side: must be BUY or SELL, got 'HOLD'"),
    ("garbage timestamp", near(timestamp="yesterday"), {}, "timestamp: not a date/time: 'yesterday'"),
    ("timestamp in microseconds", near(timestamp="1766550734062679"), {}, "neither epoch seconds nor milliseconds"),
    ("timestamp from 1970", near(timestamp="5"), {}, "timestamp: out of range"),
    ("invalid UTF-8", {**NEAR_FLAT, b"reason": b"\xff\xfe"}, {}, "is not valid UTF-8"),
    ("duplicate field", {**NEAR_FLAT, b"symbol": b"NEARUSDT"}, {}, "field 'symbol' appears more than once"),
]


@pytest.mark.parametrize(("fields", "kwargs", "expected"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_with_a_readable_reason(fields, kwargs, expected):
    problems = problems_of(fields, **kwargs)
    assert any(expected in problem for problem in problems), problems


def test_sell_levels_are_checked_the_other_way_round():
    fields = {"payload": FHE_JSON.replace("0.11935679999999999", "0.13")}
    assert problems_of(fields) == ["take_profit 0.13 must be below entry_price 0.12433 for a SELL"]


def test_every_problem_is_reported_at_once():
    problems = problems_of(near(symbol=None, confidence="7", leverage="0", entry_price="nan"))
    assert len(problems) == 4
    error = IntentError(problems)
    assert isinstance(error, ValueError) and str(error).startswith("invalid trade intent: ")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*NEAR_FLAT, "payload", "junk"]), st.text(max_size=30), max_size=20))
def test_arbitrary_fields_give_an_intent_or_an_intent_error_never_a_crash(fields):
    try:
        parse_stream_fields(fields)
    except IntentError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(NEAR_FLAT)), st.one_of(st.text(max_size=20), st.binary(max_size=10)))
def test_one_mangled_field_gives_an_intent_or_an_intent_error(key, value):
    try:
        intent = parse_stream_fields({**NEAR_FLAT, key: value})
    except IntentError as err:
        # Refused: the problem names the field that was mangled (or says what is missing).
        assert err.problems and any(key in p or "required" in p or "missing" in p for p in err.problems), err.problems
    else:
        # Accepted: the value was a valid spelling of the field; every other field is as before.
        baseline = parse_stream_fields(NEAR_FLAT).model_dump()
        changed = {k for k, v in intent.model_dump().items() if baseline[k] != v}
        assert changed <= {key}, (key, value, changed)


# --- round trip ------------------------------------------------------------------------------

intents = st.builds(
    TradeIntent,
    symbol=st.sampled_from(["NEARUSDT", "BTCUSDT", "1000PEPEUSDT"]),
    side=st.sampled_from(Side),
    confidence=st.floats(0, 1),
    entry_price=st.decimals(min_value=Decimal("100"), max_value=Decimal("1000"), places=4),
    position_size_usd=st.decimals(min_value=Decimal("1"), max_value=Decimal("1e6"), places=2),
    leverage=st.integers(1, 125),
    timestamp=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    model=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).map(str.strip),
    atr_value=st.none() | st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=6),
    volatility_factor=st.none() | st.floats(0, 10),
    intent_id=st.none() | st.text("abcXYZ019-_./ :", min_size=1, max_size=80).map(str.strip).filter(bool),
)


@settings(max_examples=100, deadline=None)
@given(intents)
def test_flat_and_json_forms_round_trip(intent):
    if intent.model == "" or intent.model.lower() in ("none", "null"):
        intent = intent.model_copy(update={"model": "unknown"})
    fields = to_stream_fields(intent)
    assert parse_stream_fields(fields) == intent
    assert parse_stream_fields({"payload": json.dumps(fields)}) == intent


# --- workflow ids ----------------------------------------------------------------------------


def test_intent_id_gives_a_readable_workflow_id():
    assert workflow_id_for(parse_stream_fields(near(intent_id="abc-123"))) == "trade-abc-123"


def test_unsafe_intent_ids_are_made_safe_without_collisions():
    a = workflow_id_for(parse_stream_fields(near(intent_id="a/b c")))
    b = workflow_id_for(parse_stream_fields(near(intent_id="a_b_c")))
    c = workflow_id_for(parse_stream_fields(near(intent_id="a b/c")))
    assert a.startswith("trade-a_b_c-") and b == "trade-a_b_c"
    assert len({a, b, c}) == 3
    long_id = workflow_id_for(parse_stream_fields(near(intent_id="x" * 500)))
    assert len(long_id) <= 6 + 40 + 1 + 12


def test_a_republished_duplicate_maps_to_the_same_workflow_id():
    flat = parse_stream_fields(NEAR_FLAT)
    as_json = parse_stream_fields({"payload": json.dumps(NEAR_FLAT)})
    reformatted = parse_stream_fields(near(entry_price="1.46500", timestamp="1766550734062.679", reason="retry"))
    assert workflow_id_for(flat) == workflow_id_for(as_json) == workflow_id_for(reformatted)
    assert workflow_id_for(flat) == f"trade-{intent_fingerprint(flat)}"


@pytest.mark.parametrize(
    "change",
    [{"entry_price": "1.466"}, {"side": "SELL", "stop_loss": None, "take_profit": None}, {"symbol": "NEARUSDT", "source": "manual"},
     {"timestamp": "2025-12-24T04:32:15"}, {"model": "lightgbm-v2"}],
)
def test_a_different_intent_gets_a_different_workflow_id(change):
    assert workflow_id_for(parse_stream_fields(near(**change))) != workflow_id_for(parse_stream_fields(NEAR_FLAT))


@given(st.text(max_size=300))
def test_every_workflow_id_yields_valid_client_order_ids(intent_id):
    intent = parse_stream_fields(NEAR_FLAT).model_copy(update={"intent_id": intent_id or None})
    workflow_id = workflow_id_for(intent)
    assert workflow_id.startswith("trade-")
    assert is_valid_client_order_id(client_order_id(workflow_id, "entry"))


# --- staleness -------------------------------------------------------------------------------


def test_staleness_is_measured_on_the_clock_passed_in():
    intent = parse_stream_fields(NEAR_FLAT)
    assert not is_stale(intent, NEAR_TIME + timedelta(seconds=120))
    assert is_stale(intent, NEAR_TIME + timedelta(seconds=120.001))
    assert is_stale(intent, NEAR_TIME + timedelta(hours=5))  # the stranded backlog
    assert not is_stale(intent, NEAR_TIME + timedelta(seconds=30), max_age_s=60)
    assert intent_age_s(intent, (NEAR_TIME + timedelta(seconds=10)).replace(tzinfo=None)) == 10


def test_future_intents_are_not_stale_but_flagged():
    intent = parse_stream_fields(NEAR_FLAT)
    earlier = NEAR_TIME - timedelta(minutes=10)
    assert not is_stale(intent, earlier)
    assert is_from_future(intent, earlier)
    assert not is_from_future(intent, NEAR_TIME - timedelta(seconds=2))  # clock skew tolerated


def test_parse_timestamp_accepts_datetimes():
    aware = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_timestamp(aware) == aware
    assert parse_timestamp(aware.replace(tzinfo=None)) == aware


def test_intent_differences_ignore_encoding_and_name_each_changed_field():
    from trading.intent import intent_differences

    base = {"intent_id": "x1", "symbol": "NEARUSDT", "side": "BUY", "confidence": "0.8", "entry_price": "1.4650",
            "position_size_usd": "100", "leverage": "10", "timestamp": "2025-01-01T00:00:00+00:00"}
    same = {**base, "entry_price": "1.465", "timestamp": "1735689600000"}
    assert intent_differences(parse_stream_fields(base), parse_stream_fields(same)) == []
    other = {**base, "side": "SELL", "position_size_usd": "900", "stop_loss": "1.5"}
    assert intent_differences(parse_stream_fields(base), parse_stream_fields(other)) == [
        "side: BUY -> SELL", "stop_loss: (absent) -> 1.5", "position_size_usd: 100 -> 900"]


def test_a_size_of_1e12_is_implausible_not_just_above_it():
    fields = {"symbol": "NEARUSDT", "side": "BUY", "confidence": "0.8", "entry_price": "1.465",
              "position_size_usd": "1e12", "leverage": "10", "timestamp": "1735689600"}
    with pytest.raises(IntentError, match="position_size_usd: is implausibly large"):
        parse_stream_fields(fields)
