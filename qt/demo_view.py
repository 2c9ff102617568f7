"""What `qt demo` shows: the live view while trades run, and the summary at the end.

Everything here only formats; the numbers come from each trade's `TradeResult` (the workflow's
own PnL from the exchange's fills) and from the paper exchange's account (`walletBalance`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import quote

from rich.console import Group
from rich.table import Table
from rich.text import Text
from temporalio.client import WorkflowHandle

from qt.demo_market import IntentPlan, market_time
from trading.models import ExitReason, TradeStatus
from workflows.trade_state import TradeResult, TradeState

# Every exit reason the demo must show at least once (SPEC "Close"; EXTERNAL and
# PROTECTION_FAILED are failure paths, not something a healthy run produces).
REQUIRED_REASONS: tuple[ExitReason, ...] = (
    ExitReason.SL, ExitReason.TP, ExitReason.TRAILING, ExitReason.KILL_SCORE,
    ExitReason.TIME_LIMIT, ExitReason.MANUAL, ExitReason.KILLED,
)
HALF_CENT = Decimal("0.005")


@dataclass
class DemoTrade:
    """One intent the demo started, and what became of it."""

    n: int
    plan: IntentPlan
    handle: WorkflowHandle
    result_task: asyncio.Task
    started_wall: float = field(default_factory=time.monotonic)
    state: TradeState | None = None
    result: TradeResult | None = None
    error: str | None = None  # the workflow failed or its result could not be read
    open_since_wall: float | None = None
    demo_action: str | None = None  # "close" (MANUAL) / "kill" (KILLED) sent by the demo
    ended_wall: float | None = None

    @property
    def workflow_id(self) -> str:
        return self.handle.id

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def status(self) -> str:
        if self.result is not None:
            return self.result.status.value
        if self.error is not None:
            return "ERROR"
        return self.state.status.value if self.state else "STARTING"

    @property
    def opened(self) -> bool:
        """The trade had a position (closed, killed or failed after an entry)."""
        return self.result is not None and (self.result.quantity > 0 or self.result.realized_pnl is not None)


@dataclass
class DemoSummary:
    trades: list[DemoTrade]
    reasons: dict[str, int]
    missing: list[str]
    balance_before: Decimal | None
    balance_after: Decimal | None
    problems: list[str]
    wall_s: float
    market_from_ms: int | None = None
    market_to_ms: int | None = None
    stack_note: str = ""
    first_seen: dict[str, float] = field(default_factory=dict)  # reason -> wall s into the run

    @property
    def pnl_sum(self) -> Decimal:
        return sum((t.result.realized_pnl for t in self.trades
                    if t.result is not None and t.result.realized_pnl is not None), Decimal(0))

    @property
    def account_change(self) -> Decimal | None:
        if self.balance_before is None or self.balance_after is None:
            return None
        return self.balance_after - self.balance_before

    @property
    def pnl_matches(self) -> bool:
        change = self.account_change
        return change is not None and abs(self.pnl_sum - change) < HALF_CENT

    @property
    def closed(self) -> list[DemoTrade]:
        """Trades that had a position and ended with an exit reason."""
        return [t for t in self.trades if t.result is not None and t.result.exit_reason is not None]

    @property
    def win_rate(self) -> float | None:
        pnls = [t.result.realized_pnl for t in self.closed if t.result.realized_pnl is not None]
        return sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None

    @property
    def exit_code(self) -> int:
        return 0 if self.closed and self.pnl_matches and not self.problems else 1


def reasons_seen(trades: list[DemoTrade]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for t in trades:
        if t.result is not None and t.result.exit_reason is not None:
            seen[t.result.exit_reason.value] = seen.get(t.result.exit_reason.value, 0) + 1
    return seen


# --- formatting helpers ------------------------------------------------------------------------


def _num(value: Decimal | None, places: int | None = None) -> str:
    if value is None:
        return "-"
    if places is not None:
        return f"{value:,.{places}f}"
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _price(value: Decimal | None, places: int) -> str:
    """A price with the symbol's decimals; an average over several fills (a Decimal division)
    gets up to two more, trailing zeros beyond the symbol's decimals dropped."""
    if value is None:
        return "-"
    text = f"{value:.{places + 2}f}"
    while text.count(".") and len(text.split(".")[1]) > places and text.endswith("0"):
        text = text[:-1]
    return text.rstrip(".")


def _pnl(value: Decimal | None, places: int = 4) -> str:
    if value is None:
        return "-"
    color = "green" if value > 0 else "red" if value < 0 else "white"
    return f"[{color}]{value:+,.{places}f}[/]"


def holding(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def reasons_line(reasons: dict[str, int]) -> Text:
    line = Text("exit reasons: ")
    for reason in REQUIRED_REASONS:
        count = reasons.get(reason.value, 0)
        line.append(f"{reason.value}", style="bold green" if count else "dim")
        line.append(f"×{count}  " if count else "·  ", style="green" if count else "dim")
    others = {k: v for k, v in reasons.items() if k not in {r.value for r in REQUIRED_REASONS}}
    for name, count in others.items():
        line.append(f"{name}×{count}  ", style="yellow")
    return line


# --- the live view -----------------------------------------------------------------------------


def live_view(trades: list[DemoTrade], market_ms: int | None, prices: dict[str, Decimal], speed: float,
              elapsed_s: float, budget_s: float, phase: str) -> Group:
    reasons = reasons_seen(trades)
    open_n = sum(1 for t in trades if not t.done)
    closed_n = sum(1 for t in trades if t.done and t.opened)
    rejected_n = sum(1 for t in trades if t.result is not None and t.result.status is TradeStatus.REJECTED)
    header = Text()
    header.append(f"market {market_time(market_ms) if market_ms else '?'} ", style="bold")
    header.append(f"(replay {speed:g}x)   wall {elapsed_s:.0f}/{budget_s:.0f} s   ")
    header.append(f"trades: {open_n} running, {closed_n} closed, {rejected_n} rejected   ")
    header.append(phase, style="italic")

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for col in ("workflow", "symbol", "side", "status", "stage", "entry", "stop", "price", "TPs", "kill", "exit", "net PnL"):
        table.add_column(col, justify="right" if col in ("entry", "stop", "price", "net PnL", "kill") else "left")
    running = [t for t in trades if not t.done]
    finished = [t for t in trades if t.done][-max(4, 12 - len(running)):]
    for t in [*finished, *running]:
        st, res = t.state, t.result
        places = _decimals(t.plan.price)
        ex = st.exit if st else None
        kill = f"{st.kill.score:.2f}" if st and st.kill else "-"
        tps = f"{ex.tps_done}/{len(ex.levels.take_profits)}" if ex else "-"
        exit_reason = res.exit_reason.value if res and res.exit_reason else (t.error or "")
        if res and res.status is TradeStatus.REJECTED:
            exit_reason = (res.reason or "")[:40]
        table.add_row(
            t.workflow_id, t.plan.symbol, t.plan.side, t.status,
            st.stage.value if st and not t.done else "-", _price(st.entry_price if st else None, places),
            _price(ex.stop if ex else None, places),
            _price(prices.get(t.plan.symbol), places) if not t.done else "-", tps, kill,
            exit_reason + (f" ({t.demo_action})" if t.demo_action else ""),
            _pnl(res.realized_pnl) if res else "-",
        )
    return Group(header, reasons_line(reasons), table)


# --- the summary -------------------------------------------------------------------------------


def trades_table(summary: DemoSummary) -> Table:
    table = Table(title="Demo trades (PnL: each TradeWorkflow's result, from the exchange's own fills)")
    columns = ("workflow id", "symbol", "side", "qty", "entry", "exit", "exit reason", "held",
               "fees", "funding", "net PnL")
    for col in columns:
        table.add_column(col, justify="left" if col in ("workflow id", "symbol", "side", "exit reason") else "right")
    total_fees = total_funding = Decimal(0)
    for t in sorted(summary.trades, key=lambda t: t.n):
        res = t.result
        if res is None or not t.opened:
            continue
        places = _decimals(t.plan.price)
        total_fees += res.fees or 0
        total_funding += res.funding or 0
        reason = res.exit_reason.value if res.exit_reason else res.status.value
        if res.status not in (TradeStatus.CLOSED, TradeStatus.KILLED):
            reason = f"{reason} ({res.status.value})"
        table.add_row(
            t.workflow_id, res.symbol or t.plan.symbol, res.side or t.plan.side, _num(res.quantity),
            _price(res.entry_price, places), _price(res.exit_price, places), reason, holding(res.holding_s),
            _num(res.fees, 4), _num(res.funding, 4), _pnl(res.realized_pnl),
        )
    table.add_section()
    table.add_row("total", "", "", "", "", "", "", "", _num(total_fees, 4), _num(total_funding, 4),
                  _pnl(summary.pnl_sum))
    return table


def print_summary(console, summary: DemoSummary, ui_url: str, namespace: str, temporal_address: str) -> None:
    console.print()
    console.print(trades_table(summary))
    rejected = [t for t in summary.trades if t.result is not None and t.result.status is TradeStatus.REJECTED]
    if rejected:
        gates: dict[str, int] = {}
        for t in rejected:
            gate = (t.result.reason or "?").split(":", 1)[0]
            gates[gate] = gates.get(gate, 0) + 1
        tally = ", ".join(f"{gate}×{n}" for gate, n in gates.items())
        console.print(f"{len(rejected)} intent(s) rejected by the gates, nothing sent ({tally}); e.g. "
                      f"{rejected[-1].workflow_id}: {rejected[-1].result.reason}")
    if summary.market_from_ms and summary.market_to_ms:
        hours = (summary.market_to_ms - summary.market_from_ms) / 3_600_000
        console.print(f"Market time traded: {market_time(summary.market_from_ms)} → "
                      f"{market_time(summary.market_to_ms)} ({hours:.1f} h of replay in "
                      f"{summary.wall_s:.0f} s wall)")

    # Exit reasons: never claim one that did not appear.
    line = Text("Exit reasons seen:    ")
    for reason in REQUIRED_REASONS:
        count = summary.reasons.get(reason.value, 0)
        if count:
            first = summary.first_seen.get(reason.value)
            line.append(f"{reason.value}×{count}", style="bold green")
            line.append(f" (first after {first:.0f} s)  " if first is not None else "  ")
    console.print(line)
    if summary.missing:
        console.print(Text(f"Exit reasons not seen this run: {', '.join(summary.missing)}", style="yellow"))
    else:
        console.print(Text("Every exit reason appeared at least once.", style="bold green"))
    intents = len(summary.trades)
    win = summary.win_rate
    console.print(f"Intents from the signal engine: {intents}; rejected by the gates: {len(rejected)}; "
                  f"trades closed: {len(summary.closed)}; win rate: "
                  + (f"{win:.0%} ({sum(1 for t in summary.closed if (t.result.realized_pnl or 0) > 0)}"
                     f" of {len(summary.closed)})" if win is not None else "-"))

    # PnL against the exchange's own account.
    change = summary.account_change
    if change is None:
        console.print(Text("Account: walletBalance could not be read; PnL not checked", style="bold red"))
    else:
        console.print(
            f"Account walletBalance: {summary.balance_before:,.8f} → {summary.balance_after:,.8f} USDT "
            f"(change {change:+,.8f})")
        diff = summary.pnl_sum - change
        verdict = (Text(f"PnL check: sum of the trades' net PnL {summary.pnl_sum:+,.8f} = account change "
                        f"{change:+,.8f} (difference {diff:+.8f}): equal to the cent", style="bold green")
                   if summary.pnl_matches else
                   Text(f"PnL check FAILED: sum of the trades' net PnL {summary.pnl_sum:+,.8f} != account "
                        f"change {change:+,.8f} (difference {diff:+.8f})", style="bold red"))
        console.print(verdict)
    for problem in summary.problems:
        console.print(Text(f"problem: {problem}", style="bold red"))
    if summary.stack_note:
        console.print(Text(summary.stack_note, style="yellow"))

    query = 'IntentSource="signal-engine" AND ExitReason="SL"'
    console.print(f"Temporal Web UI: {ui_url}/namespaces/{namespace}/workflows")
    console.print(f"  search e.g. [bold]TradeStatus=\"CLOSED\"[/] or [bold]{query}[/]: "
                  f"{ui_url}/namespaces/{namespace}/workflows?query={quote(query)}")
    console.print(f"  or: temporal workflow list --address {temporal_address} --query 'TradeStatus=\"CLOSED\"'")
    console.print(f"Trading took {summary.wall_s:.0f} s wall; the stack keeps running (stop it with: qt down)")
    if summary.exit_code == 0:
        console.print(Text(f"qt demo: OK ({len(summary.closed)} trades closed, PnL matches the account)",
                           style="bold green"))
    else:
        why = []
        if not summary.closed:
            why.append("no trade closed")
        if not summary.pnl_matches:
            why.append("PnL does not match the account")
        if summary.problems:
            why.append(f"{len(summary.problems)} problem(s) above")
        console.print(Text(f"qt demo: FAILED ({'; '.join(why)})", style="bold red"))
