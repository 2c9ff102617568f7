"""Redis keys of the intake, the market feed and the signal engine.

The stream names are the old system's (SPEC "Input"), so its producers and consumers keep
working; keys the old system did not have follow the same `quantum:` prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Trade intents from the old producers and from our signal engine; the intake's consumer group.
TRADE_INTENT_STREAM = "quantum:stream:trade.intent"
TRADE_INTENT_DLQ_STREAM = "quantum:stream:trade.intent.dlq"
INTAKE_GROUP = "quantum:group:temporal-intake"
# Per-consumer counters the intake publishes for `qt status` (hash per consumer, with a TTL).
INTAKE_STATS_KEY = "quantum:intake:stats:{consumer}"
INTAKE_STATS_PATTERN = "quantum:intake:stats:*"

# Market feed (ccxt → Redis): one entry per tick poll / per closed candle, capped streams.
MARKET_TICK_STREAM = "quantum:stream:market.tick"
MARKET_KLINES_STREAM = "quantum:stream:market.klines"
# Latest price per symbol (hash: price, timestamp ms (exchange time), received_ms (wall clock),
# exchange, funding_rate, and `price:{venue}` per venue when a second venue is configured).
LATEST_PRICE_KEY = "quantum:market:price:{symbol}"
# Open time (ms) of the last candle the feed published per symbol: a restart never repeats one.
FEED_LAST_KLINE_KEY = "quantum:feed:last_kline:{symbol}"

# Signal engine: every evaluation, and the cooldown marker per symbol (market time).
SIGNAL_STREAM = "quantum:stream:ai.signal_generated"
SIGNAL_COOLDOWN_KEY = "quantum:signal:last_intent:{symbol}"


def latest_price_key(symbol: str) -> str:
    return LATEST_PRICE_KEY.format(symbol=symbol)


@dataclass(frozen=True)
class LatestPrice:
    """The primary venue's fields of a LATEST_PRICE_KEY hash."""

    price: Decimal
    exchange_ms: int  # the exchange's time of the price (market clock)
    received_ms: int  # wall clock when the feed wrote it

    def age_ms(self, wall_ms: float) -> float:
        return wall_ms - self.received_ms


def parse_latest_price(fields: Mapping | None) -> LatestPrice | None:
    """The hash as HGETALL returns it (str or bytes); None when a field is missing or garbled."""
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (fields or {}).items()}
    try:
        return LatestPrice(Decimal(text["price"]), int(text["timestamp"]), int(text["received_ms"]))
    except (KeyError, ValueError, TypeError, InvalidOperation):
        return None


# Signal engine's own progress (added with the engine): the open time of the last candle
# evaluated per symbol (a restarted or second engine never evaluates a candle twice), and the
# id of the last klines entry evaluated (where a restarted engine resumes reading).
# Trade rejections per refusing gate (HINCRBY by the gate activity; read by `qt status`).
GATE_REJECTIONS_KEY = "quantum:stats:gate_rejections"

SIGNAL_LAST_EVAL_KEY = "quantum:signal:last_eval:{symbol}"
SIGNAL_CHECKPOINT_KEY = "quantum:signal:klines_checkpoint"
