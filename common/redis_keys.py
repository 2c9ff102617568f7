"""Every Redis key and stream name the processes share, in one place.

The old system's names (SPEC "Input", the `quantum:safety:*` switches, the position hash, the
execution and close streams) are kept, so its producers, consumers and tools keep working; keys
it did not have follow the same `quantum:` prefix. `{name}` parts are filled with `.format()`.
"""

from __future__ import annotations

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


# Signal engine's own progress: the open time of the last candle evaluated per symbol (a
# restarted or second engine never evaluates a candle twice), and the id of the last klines
# entry evaluated (where a restarted engine resumes reading).
SIGNAL_LAST_EVAL_KEY = "quantum:signal:last_eval:{symbol}"
SIGNAL_CHECKPOINT_KEY = "quantum:signal:klines_checkpoint"
# The exchange's USDT perpetuals as the intake last loaded them: JSON {"symbols": [...], "loaded_ms": ...}.
KNOWN_SYMBOLS_KEY = "quantum:intake:known_symbols"

# Gates (activities/gates.py): the account's switches, per-symbol cooldown (the market time it
# ends) and lock, and per workflow id the first run that passed the gates (kept 90 days).
SAFE_MODE_KEY = "quantum:safety:safe_mode"
KILL_SWITCH_KEY = "quantum:safety:kill_switch"
COOLDOWN_KEY = "quantum:cooldown:{symbol}"
LOCK_KEY = "quantum:lock:symbol:{symbol}"
FIRST_RUN_KEY = "quantum:trade:first_run:{workflow_id}"
# The circuit breaker's recent order failures per group (sorted set, score = wall ms; see
# activities/circuit_breaker.py): shared by every execution worker.
BREAKER_FAILURES_KEY = "quantum:breaker:failures:{group}"
BREAKER_FAILURES_PATTERN = "quantum:breaker:failures:*"
# Trade rejections per refusing gate (HINCRBY by the gate activity; read by `qt status`).
GATE_REJECTIONS_KEY = "quantum:stats:gate_rejections"

# Feedback (activities/feedback.py): the old system's execution and close streams and position
# hash; the learning step's dataset; the markers that make a retried write a no-op.
EXECUTION_RESULT_STREAM = "quantum:stream:execution.result"
TRADE_CLOSED_STREAM = "quantum:stream:trade.closed"
POSITION_KEY = "quantum:position:{symbol}"
OUTCOME_STREAM = "quantum:dataset:trade_outcomes"
FEEDBACK_DONE_KEY = "quantum:feedback:done:{workflow_id}:{kind}:{id}"

# Notifications (notifications/notifier.py): the outbox, a cursor per source and per target,
# the events already collected / counted, and the last safety state sent.
NOTIFY_OUTBOX_STREAM = "quantum:stream:notify.outbox"
NOTIFY_SOURCE_CURSOR_KEY = "quantum:notify:source:{name}"
NOTIFY_TARGET_CURSOR_KEY = "quantum:notify:target:{target}"
NOTIFY_SEEN_KEY = "quantum:notify:seen:{key}"
NOTIFY_COUNTED_KEY = "quantum:notify:counted:{key}"
NOTIFY_SAFETY_KEY = "quantum:notify:safety"


def latest_price_key(symbol: str) -> str:
    return LATEST_PRICE_KEY.format(symbol=symbol)

# Reconciliation (activities/reconcile.py): one entry per run and per finding, the last report
# (JSON: the API, `qt reconcile`, Prometheus) and the marker that makes a retried publish a no-op.
RECONCILE_EVENTS_STREAM = "quantum:stream:reconcile.events"
RECONCILE_LAST_REPORT_KEY = "quantum:reconcile:last_report"
RECONCILE_PUBLISHED_KEY = "quantum:reconcile:published:{run_id}"
