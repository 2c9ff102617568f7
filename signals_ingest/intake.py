"""The intent intake: `quantum:stream:trade.intent` → one TradeWorkflow start per entry.

The rule that makes it exactly-once in effect: **an entry is acknowledged only after Temporal took
its start, reported its workflow id as already used, or it went to the DLQ.** Everything else
leaves it pending in the consumer group, where it is retried or reclaimed:

- the workflow id comes from the intent (`trade-{intent_id}`, else a hash of its identity), and
  the id reuse policy refuses a second run, so a start repeated after a crash (started, then
  killed before XACK) is reported as "already started", counted as a duplicate and acknowledged;
  the same `intent_id` with different content (another side, size, ...) is a conflict: it is
  dead-lettered with both versions' differences and counted apart (`conflicts`);
- invalid entries go to the DLQ and are acknowledged in one MULTI (never lost, never blocking);
- Temporal unreachable: every start backs off together (exponential, jittered), nothing is
  acknowledged, the reader stops reading while all slots are busy: a backlog waits in Redis;
- a consumer that dies leaves its entries pending; live consumers refresh the idle time of the
  entries they hold (XCLAIM JUSTID, which does not count as a delivery), so only a dead
  consumer's entries grow idle, and XAUTOCLAIM hands them to a live one after `claim_idle_ms`;
- an entry delivered `max_deliveries` times without an outcome is poison: dead-lettered.

Stale intents are started too: the workflow's first gate refuses them (REJECTED / stale, visible
in the Web UI), so what happened to every entry can be looked up by its workflow id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from signals_ingest import intake_metrics as m
from signals_ingest.dead_letters import dead_letter
from signals_ingest.intake_settings import IntakeSettings
from signals_ingest.intake_status import read_intake_status
from signals_ingest.known_symbols import KnownSymbols
from signals_ingest.start_priority import BACKLOG_PRIORITY, MarketClock, start_priority
from common.redis_values import decoded
from common.redis_keys import GATE_REJECTIONS_KEY, INTAKE_STATS_KEY
from activities.risk_settings import RiskSettings
from trading.intent import IntentError, intent_age_s, is_stale, parse_stream_fields, to_stream_fields
from workflows.starter import IntentConflict, start_trade
from workflows.trade_state import StaleAtIntake

log = logging.getLogger(__name__)

# RPC failures that say something about the entry itself (retrying cannot help): dead-letter.
_ENTRY_PROBLEMS = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.OUT_OF_RANGE}


class Outcome(StrEnum):
    STARTED = "started"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # dead-lettered: the intent_id already names a different intent
    DEAD_LETTERED = "dead_lettered"


@dataclass
class IntakeCounters:
    started: int = 0
    duplicates: int = 0
    conflicts: int = 0  # also dead-lettered
    dead_lettered: int = 0
    reclaimed: int = 0
    start_failures: int = 0
    trimmed_before_start: int = 0
    deprioritized: int = 0  # started at the lowest priority: already stale when read
    stale_at_intake: int = 0  # started with the proof they are stale: REJECTED with no activity
    last_error: str = ""



def _describe(err: BaseException) -> str:
    if isinstance(err, RPCError):
        return f"{err.status.name}: {err.message}"
    return f"{type(err).__name__}: {err}"


class Backoff:
    """One shared pause for every start while Temporal refuses them.

    The first failure makes every start wait `initial_s`, each further one doubles the pause up
    to `max_s`, with jitter so several intakes do not retry in lockstep; one success resets it.
    """

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.failures = 0
        self._until = 0.0

    @property
    def active(self) -> bool:
        return self.failures > 0

    async def wait_turn(self) -> None:
        delay = self._until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def failed(self) -> float:
        self.failures += 1
        base = min(self.max_s, self.initial_s * 2 ** min(self.failures - 1, 30))
        delay = base * random.uniform(0.5, 1.0)
        self._until = max(self._until, time.monotonic() + delay)
        return delay

    def succeeded(self) -> bool:
        """Reset; True if this ends a period of failures."""
        was = self.failures > 0
        self.failures, self._until = 0, 0.0
        return was


class IntentIntake:
    """One consumer of the intake group. Run several processes side by side to scale out."""

    def __init__(self, redis: aioredis.Redis, client: Client, settings: IntakeSettings | None = None,
                 symbols: KnownSymbols | None = None, risk: RiskSettings | None = None) -> None:
        self.redis = redis  # decode_responses=False: entries are kept byte-exact for the DLQ
        self.client = client
        self.settings = settings or IntakeSettings()
        self.symbols = symbols or KnownSymbols(redis, self.settings.symbols_refresh_s)
        self.market_clock = MarketClock(redis)
        self._max_intent_age_s = (risk or RiskSettings()).max_intent_age_s  # the gates' own limit
        self.counters = IntakeCounters()
        self.backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        self._in_flight: dict[str, asyncio.Task] = {}
        self._capacity = asyncio.Event()
        self._stop = asyncio.Event()
        self._rate = m.RateWindow()

    # --- the loops -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; then let in-flight starts finish (briefly) and return.
        Whatever is left unacknowledged stays pending and is reclaimed by another consumer."""
        s = self.settings
        log.info("intake %s reading %s as group %s (up to %d starts at once)",
                 s.consumer, s.stream, s.group, s.max_in_flight)
        self._stop = stop
        await self._until_ok(self.ensure_group, stop)
        helpers = [asyncio.create_task(self._every(s.claim_interval_s, self.reclaim, stop)),
                   asyncio.create_task(self._every(s.stats_interval_s, self.publish_stats, stop)),
                   asyncio.create_task(self._wake_on(stop))]
        try:
            await self._until_ok(self._read_own_pending, stop)
            while not stop.is_set():
                try:
                    await self.read_once()
                except aioredis.RedisError as err:
                    self._note_error(err)
                    log.warning("redis unavailable (%s); retrying", _describe(err))
                    await _sleep_or_stop(stop, 1.0)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.drain(timeout_s=5.0)
            await self._clear_stats()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.settings.stream, self.settings.group,
                                           id=self.settings.group_start_id, mkstream=True)
            log.info("created consumer group %s on %s from %s", self.settings.group,
                     self.settings.stream, self.settings.group_start_id)
        except aioredis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._capacity.set()  # a reader waiting for a free slot sees the stop

    async def read_once(self) -> int:
        """Wait for a free slot, read up to that many new entries, dispatch them. Returns how many."""
        free = await self._free_slots()
        if free <= 0:
            return 0
        s = self.settings
        reply = await self.redis.xreadgroup(s.group, s.consumer, {s.stream: ">"},
                                            count=min(s.batch_size, free), block=s.block_ms)
        return self._dispatch_reply(reply)

    async def _read_own_pending(self) -> None:
        """Entries this consumer name read before a restart (stable names, e.g. `ingest-1`)."""
        s, after = self.settings, "0"
        while True:
            reply = await self.redis.xreadgroup(s.group, s.consumer, {s.stream: after}, count=s.batch_size)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            for entry_id, fields in entries:
                if not fields:  # trimmed from the stream while pending
                    await self._trimmed([decoded(entry_id)])
                    continue
                if not await self._free_slots():
                    return
                self._dispatch(decoded(entry_id), fields)
            after = decoded(entries[-1][0])

    async def reclaim(self) -> None:
        """Keep our own in-flight entries fresh, take over a dead consumer's, drop dead consumers."""
        s = self.settings
        held = list(self._in_flight)
        for i in range(0, len(held), 500):
            # XCLAIM with JUSTID resets the idle time without counting a delivery.
            await self.redis.xclaim(s.stream, s.group, s.consumer, 0, held[i:i + 500], justid=True)
        cursor = "0-0"
        while True:
            free = self.settings.max_in_flight - len(self._in_flight)
            if free <= 0:
                return
            next_cursor, entries, deleted = await self._autoclaim(cursor, free)
            if deleted:
                await self._trimmed(deleted)
            if entries:
                await self._dispatch_claimed(entries)
            if next_cursor in ("0-0", cursor) or not entries and not deleted:
                break
            cursor = next_cursor
        await self._forget_dead_consumers()

    async def _autoclaim(self, cursor: str, count: int):
        s = self.settings
        reply = await self.redis.xautoclaim(s.stream, s.group, s.consumer, s.claim_idle_ms,
                                            start_id=cursor, count=count)
        next_cursor, entries = decoded(reply[0]), reply[1]
        deleted = [decoded(i) for i in reply[2]] if len(reply) > 2 else []
        # Redis 7 already removed deleted ids from the PEL; entries of trimmed ids come back as
        # (id, None) on older servers.
        live = [(i, f) for i, f in entries if f]
        deleted += [decoded(i) for i, f in entries if not f]
        return next_cursor, live, deleted

    async def _dispatch_claimed(self, entries) -> None:
        s = self.settings
        ids = [decoded(i) for i, _ in entries]
        deliveries = {}
        info = await self.redis.xpending_range(s.stream, s.group, min=ids[0], max=ids[-1],
                                               count=len(ids) + 100, consumername=s.consumer)
        for row in info:
            deliveries[decoded(row["message_id"])] = int(row["times_delivered"])
        for entry_id, fields in entries:
            entry_id = decoded(entry_id)
            if entry_id in self._in_flight:
                continue
            self.counters.reclaimed += 1
            m.RECLAIMED.inc()
            times = deliveries.get(entry_id, 0)
            if times > s.max_deliveries:
                self._dispatch(entry_id, fields, poison=times)
            else:
                self._dispatch(entry_id, fields)
        log.info("reclaimed %d pending entries from stopped consumers", len(entries))

    async def _trimmed(self, ids: list[str]) -> None:
        """Pending entries whose data the stream no longer has (trimmed by a producer's MAXLEN):
        nothing can start them. Loud, counted, and acknowledged so they stop haunting the PEL."""
        s = self.settings
        await self.redis.xack(s.stream, s.group, *ids)
        self.counters.trimmed_before_start += len(ids)
        m.TRIMMED.inc(len(ids))
        log.error("%d pending intents were trimmed from %s before they could be started: %s",
                  len(ids), s.stream, ", ".join(ids[:10]))

    async def _forget_dead_consumers(self) -> None:
        s = self.settings
        for c in await self.redis.xinfo_consumers(s.stream, s.group):
            name = decoded(c["name"])
            if name != s.consumer and int(c.get("pending") or 0) == 0 \
                    and int(c.get("idle") or 0) > s.consumer_gc_s * 1000:
                await self.redis.xgroup_delconsumer(s.stream, s.group, name)
                log.info("removed consumer %s from %s (nothing pending, idle)", name, s.group)

    # --- one entry -------------------------------------------------------------------------

    def _dispatch_reply(self, reply) -> int:
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            self._dispatch(decoded(entry_id), fields)
        return len(entries)

    def _dispatch(self, entry_id: str, fields, poison: int = 0) -> None:
        task = asyncio.create_task(self._handle(entry_id, fields or {}, poison))
        self._in_flight[entry_id] = task
        m.IN_FLIGHT.set(len(self._in_flight))
        task.add_done_callback(lambda _t, i=entry_id: self._done(i))

    def _done(self, entry_id: str) -> None:
        self._in_flight.pop(entry_id, None)
        m.IN_FLIGHT.set(len(self._in_flight))
        self._capacity.set()

    async def _free_slots(self) -> int:
        """Slots free for new starts; waits for one (returns 0 only when stopping)."""
        while (free := self.settings.max_in_flight - len(self._in_flight)) <= 0:
            if self._stop.is_set():
                return 0
            self._capacity.clear()
            await self._capacity.wait()
        return free

    async def _handle(self, entry_id: str, fields: Mapping[bytes, bytes], poison: int) -> Outcome | None:
        """Start, or dead-letter, then acknowledge. Returns None when the entry stays pending."""
        try:
            if poison:
                return await self._dead_letter(entry_id, fields, [
                    f"delivered {poison} times without being started (limit "
                    f"{self.settings.max_deliveries}): the consumers handling it kept failing"])
            symbols = await self._symbols_or_wait()
            try:
                intent = parse_stream_fields(fields, known_symbols=symbols)
            except IntentError as err:
                return await self._dead_letter(entry_id, fields, err.problems)
            return await self._start(entry_id, fields, intent)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a bug or Redis trouble: keep the entry pending
            self._note_error(err)
            log.exception("entry %s left pending (it will be retried): %s", entry_id, _describe(err))
            return None

    async def _symbols_or_wait(self):
        while (symbols := await self.symbols.current()) is None:
            log.warning("no symbol list yet (exchange unreachable, nothing cached): waiting")
            await asyncio.sleep(2.0)
        return symbols

    async def _stale_for_sure(self, intent) -> StaleAtIntake | None:
        """The proof that the intent is stale (the gates' rule at a market time certainly reached),
        or None: then the gates decide, with the market's own clock."""
        if not self.settings.decide_stale:
            return None
        reached_ms = await self.market_clock.at_least_ms(intent.symbol)
        if reached_ms is None:
            return None
        reached = datetime.fromtimestamp(reached_ms / 1000, UTC)
        if not is_stale(intent, reached, self._max_intent_age_s):
            return None
        return StaleAtIntake(market_ms=reached_ms, age_s=intent_age_s(intent, reached),
                             max_age_s=self._max_intent_age_s)

    async def _start(self, entry_id: str, fields, intent) -> Outcome:
        s = self.settings
        priority = start_priority(intent, await self.market_clock.now_ms(intent.symbol), s.deprioritize_after_s)
        stale = await self._stale_for_sure(intent)
        while True:
            await self.backoff.wait_turn()
            began = time.monotonic()
            try:
                _, started = await start_trade(self.client, intent, task_queue=s.task_queue,
                                               rpc_timeout=timedelta(seconds=s.start_timeout_s),
                                               priority=priority, stale=stale)
            except IntentConflict as err:
                return await self._conflict(entry_id, fields, err)
            except RPCError as err:
                if err.status in _ENTRY_PROBLEMS:
                    return await self._dead_letter(entry_id, fields, [f"Temporal refused the start: {err.message}"])
                self._start_failed(err)
                continue
            except (TimeoutError, ConnectionError) as err:
                self._start_failed(err)
                continue
            m.START_SECONDS.observe(time.monotonic() - began)
            if self.backoff.succeeded():
                log.info("Temporal takes starts again")
            if started:
                outcome = Outcome.STARTED
                self.counters.started += 1
                self._rate.add()
                if priority == BACKLOG_PRIORITY:
                    self.counters.deprioritized += 1
                    m.DEPRIORITIZED.inc()
                if stale is not None:  # refused by the stale gate's rule here: counted like the gate does
                    self.counters.stale_at_intake += 1
                    await self.redis.hincrby(GATE_REJECTIONS_KEY, "stale_intent", 1)
            else:
                outcome = Outcome.DUPLICATE
                self.counters.duplicates += 1
                log.info("entry %s: intent already has a workflow (duplicate, acknowledged)", entry_id)
            m.ENTRIES.labels(outcome.value).inc()
            await self.redis.xack(s.stream, s.group, entry_id)
            return outcome

    def _start_failed(self, err: BaseException) -> None:
        self.counters.start_failures += 1
        self._note_error(err)
        reason = err.status.name if isinstance(err, RPCError) else type(err).__name__
        m.START_FAILURES.labels(reason).inc()
        first = not self.backoff.active
        delay = self.backoff.failed()
        m.BACKING_OFF.set(1)
        if first:
            log.warning("Temporal did not take a start (%s): backing off, entries stay pending",
                        _describe(err))
        else:
            log.debug("start failed again (%s); next try in %.1f s", _describe(err), delay)

    async def _conflict(self, entry_id: str, fields, err: IntentConflict) -> Outcome:
        """Same intent_id, other content: neither version is lost, neither silently wins."""
        self.counters.conflicts += 1
        existing = to_stream_fields(err.existing) if err.existing is not None else None
        await self._dead_letter(entry_id, fields, [str(err)], outcome=Outcome.CONFLICT, extra={
            "reason": "intent_id_conflict" if err.unreadable is None else "intent_id_unverified",
            "existing_workflow_id": err.workflow_id,
            "existing_run_id": err.run_id or "",
            "existing_intent": json.dumps(existing, ensure_ascii=False) if existing else "",
            "differences": json.dumps(err.differences, ensure_ascii=False)})
        return Outcome.CONFLICT

    async def _dead_letter(self, entry_id: str, fields, problems: list[str],
                           outcome: Outcome = Outcome.DEAD_LETTERED,
                           extra: dict[str, str] | None = None) -> Outcome:
        s = self.settings
        letter = dead_letter(fields, stream=s.stream, stream_id=entry_id, problems=problems,
                             consumer=s.consumer, max_value_bytes=s.dlq_max_value_bytes)
        letter.update(extra or {})
        self.counters.dead_lettered += 1
        m.ENTRIES.labels(outcome.value).inc()
        async with self.redis.pipeline(transaction=True) as pipe:  # both or neither
            pipe.xadd(s.dlq_stream, letter, maxlen=s.dlq_maxlen, approximate=True)
            pipe.xack(s.stream, s.group, entry_id)
            await pipe.execute()
        log.warning("entry %s dead-lettered: %s", entry_id, letter["error"])
        return Outcome.DEAD_LETTERED

    # --- housekeeping ----------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for in-flight starts; cancel the rest (they stay pending)."""
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        done, not_done = await asyncio.wait(tasks, timeout=timeout_s)
        for task in not_done:
            task.cancel()
        await asyncio.gather(*not_done, return_exceptions=True)

    async def publish_stats(self) -> None:
        c, s = self.counters, self.settings
        rate = self._rate.rate()
        m.STARTS_PER_SECOND.set(rate)
        m.BACKING_OFF.set(1 if self.backoff.active else 0)
        key = INTAKE_STATS_KEY.format(consumer=s.consumer)
        stats = {
            "started": c.started, "duplicates": c.duplicates, "conflicts": c.conflicts,
            "dead_lettered": c.dead_lettered,
            "reclaimed": c.reclaimed, "start_failures": c.start_failures,
            "trimmed_before_start": c.trimmed_before_start, "deprioritized": c.deprioritized,
            "stale_at_intake": c.stale_at_intake,
            "in_flight": len(self._in_flight),
            "starts_per_s": f"{rate:.1f}", "backing_off": int(self.backoff.active),
            "last_error": c.last_error[:300], "updated_ms": int(time.time() * 1000),
        }
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=stats)
            pipe.expire(key, max(30, int(s.stats_interval_s * 5)))
            await pipe.execute()
        status = await read_intake_status(self.redis, s)
        m.LAG.set(status.lag or 0)
        m.PENDING.set(status.pending)
        m.OLDEST_PENDING_AGE.set(status.oldest_pending_age_s or 0)
        m.DLQ_LENGTH.set(status.dlq_length)
        m.CONSUMERS.set(len(status.consumers))

    async def _clear_stats(self) -> None:
        try:
            await self.redis.delete(INTAKE_STATS_KEY.format(consumer=self.settings.consumer))
        except aioredis.RedisError:
            pass

    def _note_error(self, err: BaseException) -> None:
        self.counters.last_error = _describe(err)

    async def _every(self, interval_s: float, job, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - housekeeping must outlive Redis blips
                self._note_error(err)
                log.warning("%s failed: %s", job.__name__, _describe(err))
            await _sleep_or_stop(stop, interval_s)

    async def _until_ok(self, job, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                await job()
                return
            except aioredis.RedisError as err:
                self._note_error(err)
                log.warning("%s: redis unavailable (%s); retrying in %.1f s", job.__name__, _describe(err), delay)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 10.0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
