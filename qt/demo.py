"""`qt demo`: the main job, end to end on the local stack, through TradeWorkflows.

1. The stack comes up (`qt up`'s launcher: Temporal dev server, redis-server, paper exchange;
   what already runs is reused) and the paper replay is sped up (300x by default: one
   5-minute candle per wall second) through the `/_paper/clock` control.
2. Workers for every task queue run in this process (`build_workers`, as `qt worker --queue
   all` does) with a demo `TradePolicy` (`demo_policy`: tight take-profits, a trailing stop
   after TP1, a 45-minute time limit, the kill score on, no cooldown). The gates allow an
   intent 10 wall seconds of market time (at 300x, 120 market seconds pass in 0.4 s).
   They are the only workers on the queues: the stack's workers and intake (`qt up`) are
   stopped for the run, and the stack's workers, API and notifier started after it (the intake
   again only if it ran: `Stack.workers_paused`); a worker qt did not start makes the demo refuse.
3. Warm-up: the paper exchange has no candles before its replay start and the kill score needs
   20 closed candles, so the demo waits for 25 (seconds at 300x).
4. The signal pipeline runs in this process as `qt ingest` runs it (`qt/demo_pipeline.py`): the
   market feed polls the paper exchange through ccxt into `quantum:stream:market.klines`, the
   signal engine scores every closed candle with the shipped LightGBM model (or the
   `fallback-trend-following` rule) and publishes intents with the old producers' fields to
   `quantum:stream:trade.intent`, and the intake starts one TradeWorkflow per intent. The demo
   only reads that stream to follow each intent to its workflow's result. It runs until every
   exit reason has appeared or `--timeout` runs out, then stops the signals and lets the open
   trades finish. SL, TP, TRAILING, KILL_SCORE and TIME_LIMIT come from the replayed market and
   the policy (no price is pinned); MANUAL is the demo sending the `close` update to one trade,
   KILLED the demo cancelling one trade's workflow.
5. Summary: one row per trade from its `TradeResult`, the paper account's `walletBalance`
   change from just before the first trade to after the last one closed, and whether the two
   agree to the cent, the win rate, and the exit reasons seen. Exit code 0 when at least one
   trade closed, nothing failed and the PnL matches (a missing exit reason is reported, not an
   error: which ones appear is up to the market and the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import (
    Client,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from exchange.client import create_exchange
from activities.price_hub import PriceHub
from activities.risk_settings import RiskSettings
from activities.schemas.policy import MonitorPolicy, TradePolicy
from paper_exchange.config import PaperSettings
from qt.console import output_console
from qt.demo_api import ApiRefused, DemoApi, stack_page_url
from qt.demo_market import IntentPlan, PaperControls, closed_candle_count, market_time
from qt.demo_pipeline import DemoPipeline, IntentWatcher, PipelineOptions, SeenIntent, result_once_started
from qt.demo_view import (
    REQUIRED_REASONS,
    DemoSummary,
    DemoTrade,
    live_view,
    print_summary,
    reasons_seen,
)
from qt.launcher import Stack
from common.settings import StackSettings
from common.temporal import connect, ensure_search_attributes
from trading.exits import ExitPolicy
from trading.intent import TradeIntent, to_stream_fields
from trading.levels import LevelPolicy
from trading.models import ExitReason, TradeStatus
from workers.main import build_workers, running
from common.task_queues import QUEUES
from workers.registry import Dependencies, WorkerSettings
from workflows.trade_state import TradeResult, TradeState

D = Decimal
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "NEARUSDT", "XRPUSDT", "FHEUSDT", "XLMUSDT", "DASHUSDT")
TICK_S = 0.25  # how often the live view is redrawn
STATE_POLL_S = 0.3  # how often each trade's `state` query is read
OPERATOR_AFTER_S = 1.0  # wall seconds a trade is OPEN before the demo closes / kills it
CLEANUP_WAIT_S = 60.0
WARMUP_SPEED = 1200.0  # the replay's speed while the demo waits for candle history


@dataclass
class DemoOptions:
    speed: float = 300.0
    symbols: list[str] = field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    timeout_s: float = 240.0  # wall seconds during which new trades are opened
    max_hold_min: float = 45.0  # market minutes: the policy's time limit
    kill_threshold: float = 0.66  # production default 0.7 (see `demo_policy`)
    warmup_candles: int = 50  # the signal engine's 48-candle window, and the kill score's 20
    confidence_threshold: float = 0.6  # production default 0.65 (QT_SIGNAL_CONFIDENCE_THRESHOLD)
    cooldown_min: float = 15.0  # market minutes between two intents of one symbol
    position_size_usd: Decimal = D("100")  # margin per trade (intent field)
    leverage: int = 5


def demo_policy(opts: DemoOptions) -> TradePolicy:
    """The rules the demo's workers hand out: chosen so that every exit reason shows within a
    few minutes of a 300x replay, not to make money.

    - stop at 1.5 ATR (production: 1 ATR; the replayed 5-minute candles swing about one ATR,
      so a 1-ATR stop is mostly noise);
    - two take-profits, TP1 at 1R harvesting half and moving the stop to break-even, TP2 at
      1.3R closing the rest (TP); after TP1 a 0.5 % trailing stop (TRAILING);
    - time limit `max_hold_min` market minutes (TIME_LIMIT);
    - kill score on, threshold 0.66 (production 0.7): a regime flip alone (weight 0.66) closes
      the trade, where production also wants a weakening trend or a volatility spike (KILL_SCORE);
    - no cooldown, so a symbol trades again as soon as its trade ended.
    """
    return TradePolicy(
        levels=LevelPolicy(atr_sl_multiple=D("1.5"), tp_r_multiples=(D("1"), D("1.3")),
                           harvest_fractions=(D("0.5"), D("0.5")), trailing_callback_pct=D("0.005")),
        exits=ExitPolicy(max_hold_s=opts.max_hold_min * 60),
        kill_threshold=opts.kill_threshold,
        cooldown_s=0,
        monitor=MonitorPolicy(session_cap_s=600, heartbeat_interval_s=1, heartbeat_timeout_s=10,
                              kill_score=True),
    )


def demo_risk(speed: float) -> RiskSettings:
    """Gate rules: the defaults (and `QT_RISK_*`), but no cooldown, and an intent may be 10
    wall seconds old in market time (120 market seconds are 0.4 wall seconds at 300x)."""
    return RiskSettings(cooldown_s=0, max_intent_age_s=max(120.0, 10.0 * speed))


# --- in-process workers ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_workers(client: Client, exchange, redis, policy: TradePolicy, risk: RiskSettings,
                          log_path: Path) -> AsyncIterator[None]:
    """Every task queue's worker in this process (as `qt worker --queue all`), logging to a file
    so the terminal stays readable; all shut down when the block ends."""
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    for h in saved_handlers:  # a terminal handler would write through the live view
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    hub = PriceHub(exchange, poll_interval_s=0.1, position_interval_s=0.5, max_backoff_s=1.0)
    deps = Dependencies(exchange=exchange, redis=redis, policy=policy, risk=risk, hub=hub,
                        settings=WorkerSettings(execution_rate_per_s=0))
    try:
        async with running(build_workers(client, list(QUEUES), deps)):
            yield
    finally:
        await hub.close()
        root.removeHandler(handler)
        handler.close()
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)


# --- the run -------------------------------------------------------------------------------------


class DemoRun:
    """Opens trades on free symbols until every exit reason appeared (or time is up)."""

    def __init__(self, opts: DemoOptions, client: Client, exchange, controls: PaperControls,
                 console: Console, symbols: list[str], pipeline: DemoPipeline, watcher: IntentWatcher,
                 api: DemoApi) -> None:
        self.opts, self.client, self.exchange, self.controls = opts, client, exchange, controls
        self.api = api
        self.console, self.symbols = console, symbols
        self.pipeline, self.watcher = pipeline, watcher
        self._followers: list[asyncio.Task] = []
        self.run_id = uuid.uuid4().hex[:6]
        self.trades: list[DemoTrade] = []
        self.market_ms: int | None = None
        self.prices: dict[str, Decimal] = {}  # symbol -> last price on the exchange
        self.problems: list[str] = []
        self._operator: asyncio.Task | None = None  # the close update or cancel in flight
        self._started = 0.0
        self._count = 0
        self._stop_opening = False
        self.first_seen: dict[str, float] = {}  # exit reason -> wall seconds into the run
        self._actions_done: set[str] = set()  # operator actions that ended a trade as intended

    # -- helpers ------------------------------------------------------------------------------

    def missing(self) -> list[str]:
        seen = reasons_seen(self.trades)
        return [r.value for r in REQUIRED_REASONS if r.value not in seen]

    def _say(self, live: Live, text: str) -> None:
        live.console.print(text)

    # -- one lane per symbol: open a trade, follow it to its end, open the next --------------

    def opening(self) -> bool:
        """New intents are welcome (the signal engine runs) until every exit reason appeared
        or `timeout_s` passed."""
        return (not self._stop_opening and bool(self.missing())
                and time.monotonic() - self._started < self.opts.timeout_s)

    async def _watch(self, live: Live) -> None:
        """Follow every intent the pipeline publishes (until the signals stop and the stream
        is quiet) to its workflow's result."""
        quiet_since: float | None = None
        while True:
            batch = await self.watcher.next_batch()
            for seen in batch:
                self._track(seen, live)
            if self.opening() or batch:
                quiet_since = None
                continue
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2.0:  # signals stopped, nothing in flight
                return

    def _track(self, seen: SeenIntent, live: Live) -> None:
        self._count += 1
        intent = seen.intent
        plan = IntentPlan(fields=seen.fields, symbol=intent.symbol, side=intent.side.value,
                          price=intent.entry_price, why=intent.reason or intent.model)
        handle = self.client.get_workflow_handle(seen.workflow_id, result_type=TradeResult)
        trade = DemoTrade(n=self._count, plan=plan, handle=handle,
                          result_task=asyncio.create_task(result_once_started(handle)))
        self.trades.append(trade)
        self._followers.append(asyncio.create_task(self._follow(trade, live)))
        self._say(live, f"[dim]{market_time(self.market_ms or 0)}[/]  intent {handle.id}  "
                        f"{plan.side:4} {intent.symbol} @ {plan.price} conf {intent.confidence:.2f}  ({plan.why})")

    async def _manual_intent(self, live: Live) -> None:
        """One manual intent, as an operator sends it: POST /api/v1/intents (the last symbol,
        where the engine's trades are least likely to hold the symbol lock)."""
        symbol = self.symbols[-1]
        body = {"symbol": symbol, "side": "BUY", "position_size_usd": str(self.opts.position_size_usd),
                "leverage": self.opts.leverage, "reason": "demo: a manual intent through the API"}
        self._say(live, f"[bold]operator[/] POST /api/v1/intents {symbol} BUY")
        try:
            accepted = await self.api.submit(body, key=f"demo-{self.run_id}-manual")
        except (ApiRefused, httpx.HTTPError) as exc:
            self.problems.append(f"manual intent refused by the API: {exc}")
            return
        intent = TradeIntent.model_validate(accepted["intent"])
        self._track(SeenIntent(fields=to_stream_fields(intent), intent=intent,
                               workflow_id=accepted["workflow_id"]), live)

    async def _follow(self, trade: DemoTrade, live: Live) -> None:
        """Poll the trade's `state` query until its workflow returns its result."""
        while not trade.result_task.done():
            try:
                trade.state = await asyncio.wait_for(trade.handle.query("state", result_type=TradeState), 5)
            except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError, TimeoutError):
                pass  # not yet picked up by a worker, or busy: next time
            else:
                if trade.state.status is TradeStatus.OPEN and trade.open_since_wall is None:
                    trade.open_since_wall = time.monotonic()
            await asyncio.wait({trade.result_task}, timeout=STATE_POLL_S)
        self._collect(trade, live)

    def _collect(self, trade: DemoTrade, live: Live | None) -> None:
        if trade.done:
            return
        try:
            trade.result = trade.result_task.result()
        except Exception as exc:  # noqa: BLE001 (the workflow failed: shown, counted)
            trade.error = f"{type(exc).__name__}: {exc}"
            self.problems.append(f"{trade.workflow_id}: {trade.error}")
        trade.ended_wall = time.monotonic()
        reason = trade.result.exit_reason if trade.result else None
        if reason is not None and reason.value not in self.first_seen:
            self.first_seen[reason.value] = trade.ended_wall - self._started
        if live is not None:
            self._announce_end(trade, live)

    def _announce_end(self, trade: DemoTrade, live: Live) -> None:
        res = trade.result
        if res is None:
            self._say(live, f"[red]error[/]  {trade.workflow_id}: {trade.error}")
            return
        if res.status is TradeStatus.REJECTED:
            self._say(live, f"[yellow]reject[/] {trade.workflow_id}: {res.reason}")
            return
        color = "green" if (res.realized_pnl or 0) > 0 else "red"
        by = f" (demo: {trade.demo_action})" if trade.demo_action else ""
        self._say(live, f"[dim]{market_time(self.market_ms or 0)}[/]  end    {trade.workflow_id}  "
                        f"{res.status.value} {res.exit_reason.value if res.exit_reason else ''}{by}  "
                        f"net [{color}]{res.realized_pnl if res.realized_pnl is not None else '-'}[/] USDT")
        if res.status is TradeStatus.FAILED:
            self.problems.append(f"{trade.workflow_id} FAILED: {res.reason}")

    # -- the operator: MANUAL (close update) and KILLED (cancellation) --------------------------

    def _operator_step(self, live: Live) -> None:
        if self._operator is not None and not self._operator.done():
            return
        missing = self.missing()
        wanted = [a for a, reason in (("close", "MANUAL"), ("kill", "KILLED"))
                  if reason in missing and a not in self._actions_done]
        if not wanted:
            return
        now = time.monotonic()
        for trade in self.trades:
            if (not trade.done and trade.demo_action is None and trade.state is not None
                    and trade.state.status is TradeStatus.OPEN and trade.open_since_wall is not None
                    and now - trade.open_since_wall >= OPERATOR_AFTER_S):
                trade.demo_action = wanted[0]
                self._operator = asyncio.create_task(self._operate(trade, wanted[0], live))
                return

    async def _operate(self, trade: DemoTrade, action: str, live: Live) -> None:
        try:
            if action == "close":
                self._say(live, f"[bold]operator[/] POST /api/v1/trades/{trade.workflow_id}/close")
                result = await self.api.close(trade.workflow_id, "demo operator")
            else:
                self._say(live, f"[bold]operator[/] POST /api/v1/trades/{trade.workflow_id}/kill")
                await self.api.kill(trade.workflow_id)
                done, _ = await asyncio.wait({trade.result_task}, timeout=30)
                result = trade.result_task.result() if done and not trade.result_task.exception() else None
            expected = ExitReason.MANUAL if action == "close" else ExitReason.KILLED
            if result is not None and result.exit_reason is expected:
                self._actions_done.add(action)  # else the trade ended otherwise first: try another
        except (ApiRefused, httpx.HTTPError) as exc:
            # The trade ended (or started closing) on its own first: another one will do.
            trade.demo_action = f"{action} refused"
            self._say(live, f"[dim]operator {action} on {trade.workflow_id} refused: {exc}[/]")

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> DemoSummary:
        self._started = time.monotonic()
        state = await self.controls.state()
        stack_note = await self._foreign_activity(state)
        balance_before = D(str(state["balance"]["walletBalance"]))
        market_from = int(state["clock"]["market_ms"])
        self.market_ms = market_from
        drain_limit = self.opts.max_hold_min * 60 / self.opts.speed + 30
        drain_started: float | None = None
        lanes: list[asyncio.Task] = []
        try:
            with Live(console=self.console, refresh_per_second=4, transient=True) as live:
                lanes = [asyncio.create_task(self._watch(live), name="intent watcher"),
                         asyncio.create_task(self._manual_intent(live), name="manual intent")]
                while not all(lane.done() for lane in lanes) or not all(f.done() for f in self._followers):
                    now = time.monotonic()
                    opening = self.opening()
                    for failure in self.pipeline.failures():
                        if failure not in self.problems:
                            self.problems.append(failure)
                            self._stop_opening = True
                    if opening:
                        self._operator_step(live)
                    else:
                        self.pipeline.stop_signals()
                        drain_started = drain_started or now
                        if now - drain_started > drain_limit:
                            self._say(live, "[yellow]trades still open past the time limit: killing them[/]")
                            await self._kill_all([t for t in self.trades if not t.done], "kill (cleanup)")
                    with contextlib.suppress(httpx.HTTPError):
                        market = await self.controls.state()
                        self.market_ms = int(market["clock"]["market_ms"])
                        self.prices = {s: D(str(p)) for s, p in market["prices"].items()}
                    phase = ("signal engine → intents → TradeWorkflows, until every exit reason appeared"
                             if opening else "signals stopped: waiting for the open trades to close")
                    live.update(live_view(self.trades, self.market_ms, self.prices, self.opts.speed,
                                          now - self._started, self.opts.timeout_s, phase))
                    await asyncio.sleep(TICK_S)
                for lane in lanes:  # a lane that crashed is a problem worth showing
                    if lane.exception() is not None:
                        exc = lane.exception()
                        self.problems.append(f"{lane.get_name()}: {type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            # Ctrl-C: no new trades; the open ones are killed below (workers still run), and the
            # summary is printed for what happened so far.
            self.problems.append("interrupted: the trades still open were killed")
        finally:
            self._stop_opening = True
            self.pipeline.stop_signals()
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            await self._cleanup()
            for follower in self._followers:
                follower.cancel()
            await asyncio.gather(*self._followers, return_exceptions=True)
        if self._operator is not None:
            await asyncio.gather(self._operator, return_exceptions=True)
        end_state = await self.controls.state()
        balance_after = D(str(end_state["balance"]["walletBalance"]))
        ours = {t.plan.symbol for t in self.trades}
        left = [p for p in end_state["positions"] if p.get("symbol") in ours]
        if left:
            self.problems.append(f"positions still open on the exchange: {[p.get('symbol') for p in left]}")
        return DemoSummary(
            trades=self.trades, reasons=reasons_seen(self.trades), missing=self.missing(),
            balance_before=balance_before, balance_after=balance_after, problems=self.problems,
            wall_s=time.monotonic() - self._started, market_from_ms=market_from,
            market_to_ms=int(end_state["clock"]["market_ms"]), stack_note=stack_note,
            first_seen=dict(self.first_seen))

    async def _foreign_activity(self, state: dict) -> str:
        """Anything else moving this account would break the PnL comparison: say so up front."""
        notes = []
        if state.get("positions"):
            notes.append(f"{len(state['positions'])} position(s) already open on the paper account")
        try:
            running = await self.client.count_workflows(
                'WorkflowType="TradeWorkflow" AND ExecutionStatus="Running"')
            if running.count:
                notes.append(f"{running.count} TradeWorkflow(s) from before were still running "
                             f"(these workers manage them too)")
        except RPCError:
            pass
        if not notes:
            return ""
        note = ("note: " + "; ".join(notes) +
                ": the account change includes their PnL and funding, not only this demo's trades")
        self.console.print(f"[yellow]{note}[/]")
        return note

    async def _kill_all(self, trades: list[DemoTrade], label: str) -> None:
        for trade in trades:
            if trade.done or (trade.demo_action or "").startswith("kill"):
                continue
            trade.demo_action = label
            with contextlib.suppress(RPCError):
                await trade.handle.cancel()

    async def _cleanup(self) -> None:
        """Never leave a demo trade running without workers: kill what is still open (an
        interrupted demo, or trades past the drain limit) and collect the results."""
        running = [t for t in self.trades if not t.done]
        if not running:
            return
        await self._kill_all(running, "kill (cleanup)")
        await asyncio.wait([t.result_task for t in running], timeout=CLEANUP_WAIT_S)
        for trade in running:
            if trade.result_task.done():
                self._collect(trade, None)
            else:
                trade.error = "still running after the cleanup wait"
                self.problems.append(f"{trade.workflow_id} did not end in {CLEANUP_WAIT_S:.0f} s")


# --- warm-up -----------------------------------------------------------------------------------


async def warm_up(exchange, controls: PaperControls, symbol: str, candles: int, console: Console,
                  speed: float) -> None:
    """Wait until the exchange serves `candles` closed 5-minute candles (the replay has none
    before its start; the kill score needs 20). Only history is missing, so the replay runs at
    `WARMUP_SPEED` (if faster) meanwhile, then at the demo's `speed`."""
    unified = exchange.markets_by_id[symbol][0]["symbol"]
    now_ms = int((await controls.clock())["market_ms"])
    have = await closed_candle_count(exchange, unified, now_ms, candles)
    if have >= candles:
        console.print(f"Market history: {candles}+ closed 5-minute candles already (market {market_time(now_ms)})")
        return
    warm_speed = max(speed, WARMUP_SPEED)
    await controls.set_speed(warm_speed)
    try:
        with Progress(TextColumn("[bold]warm-up[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            task = progress.add_task("", total=candles)
            while True:
                progress.update(task, completed=min(have, candles),
                                description=f"closed 5-minute candles (replay at {warm_speed:g}x, "
                                            f"market {market_time(now_ms)})")
                if have >= candles:
                    return
                await asyncio.sleep(0.2)
                now_ms = int((await controls.clock())["market_ms"])
                have = await closed_candle_count(exchange, unified, now_ms, candles)
    finally:
        await controls.set_speed(speed)


# --- entry points ------------------------------------------------------------------------------


async def demo_main(opts: DemoOptions, *, console: Console | None = None,
                    stack_settings: StackSettings | None = None,
                    paper_settings: PaperSettings | None = None) -> DemoSummary:
    """The whole demo; returns its summary (already printed). Raises `LauncherError` when the
    stack cannot start."""
    console = console or output_console()
    settings = stack_settings or StackSettings()
    paper = paper_settings or PaperSettings()
    stack = Stack(settings, paper)
    console.print("[bold]Starting the local stack[/] (reusing what already runs)")
    for s in await stack.up():
        console.print(f"  {s.name:15} {s.state:8} {s.url}")
    # The demo's own workers (demo policy) must be the only ones on the task queues: the
    # stack's workers and intake that `qt up` started are stopped for the run (a worker qt did
    # not start makes it refuse), and the stack's workers run again afterwards.
    async with stack.workers_paused() as paused:
        if paused.stopped:
            console.print(f"  paused for the demo (its own workers, demo policy): {', '.join(paused.stopped)}")
        summary = await _demo_on_stack(opts, console, settings, paper, stack)
    for s in paused.restarted:
        console.print(f"The stack keeps running: {s.name} {s.state} (pid {s.pid}, {s.url}); `qt status`, `qt down`")
    if paused.error:
        console.print(f"[yellow]the stack's workers could not start again after the demo: {paused.error}[/]")
    return summary


async def _demo_on_stack(opts: DemoOptions, console: Console, settings: StackSettings,
                         paper: PaperSettings, stack: Stack) -> DemoSummary:
    controls = PaperControls(paper.base_url)
    previous_speed = float((await controls.clock())["speed"])
    await controls.set_speed(opts.speed)
    console.print(f"Market replay at {opts.speed:g}x (real candles: one 5-minute candle every "
                  f"{300 / opts.speed:.2f} s); time limit {opts.max_hold_min:g} market minutes; "
                  f"new trades for up to {opts.timeout_s:g} s")
    # The demo trades on the paper exchange only (it drives the replay through /_paper/).
    exchange = create_exchange(paper.client_settings(), enableRateLimit=False)
    redis = aioredis.from_url(settings.effective_redis_url, decode_responses=True)
    log_path = stack.logs_dir / "demo.log"
    try:
        client = await connect(settings)
        await ensure_search_attributes(client)
        await exchange.load_markets()
        symbols = [s.upper() for s in opts.symbols]
        unknown = [s for s in symbols if s not in (exchange.markets_by_id or {})]
        for s in unknown:
            console.print(f"[yellow]skip {s}: the exchange does not list it[/]")
        symbols = [s for s in symbols if s not in unknown]
        if not symbols:
            raise ValueError("no symbol the exchange lists was given")
        await warm_up(exchange, controls, symbols[0], opts.warmup_candles, console, opts.speed)
        console.print(f"Workers for every queue, the market feed, the signal engine and the intent intake "
                      f"run in this process (log: {log_path})")
        risk = demo_risk(opts.speed)
        pipeline = DemoPipeline(client, exchange, settings.effective_redis_url, PipelineOptions(
            symbols=symbols, max_intent_age_s=risk.max_intent_age_s, confidence_threshold=opts.confidence_threshold,
            cooldown_s=opts.cooldown_min * 60, position_size_usd=opts.position_size_usd, leverage=opts.leverage))
        model = pipeline.engine.registry.current()
        console.print(f"Signals: {model.label if model else 'fallback-trend-following (no model loaded)'}, "
                      f"confidence ≥ {opts.confidence_threshold:g}, cooldown {opts.cooldown_min:g} market min per symbol")
        watcher = IntentWatcher(redis)
        async with running_workers(client, exchange, redis, demo_policy(opts), risk, log_path):
            await watcher.begin()
            await pipeline.start()
            try:
                async with DemoApi(settings, client, redis, exchange) as api:
                    summary = await DemoRun(opts, client, exchange, controls, console, symbols,
                                            pipeline, watcher, api).run()
            finally:
                await pipeline.close()
    finally:
        with contextlib.suppress(Exception):
            await controls.set_speed(previous_speed)
        await controls.close()
        await exchange.close()
        await redis.aclose()
    print_summary(console, summary, settings.temporal_ui_url, settings.temporal_namespace,
                  settings.temporal_address)
    page = await stack_page_url(settings)
    console.print(f"Portfolio page:  {page} (token: .data/api_token)" if page else
                  "Portfolio page:  `qt up` starts `qt api`, which serves it at "
                  f"http://{settings.api_host}:{settings.api_port}/")
    return summary


async def run_demo(opts: DemoOptions, console: Console | None = None) -> int:
    """`qt demo`: the exit code (0: every exit reason appeared and the PnL matches)."""
    summary = await demo_main(opts, console=console)
    return summary.exit_code
