"""What people see of a trade in the Temporal Web UI: a one-line summary and Markdown details.

Pure functions of the intent and the state (no I/O), used by the workflow for its current
details and by every starter (ingest, API, demo, tests) for the static summary.
"""

from __future__ import annotations

from decimal import Decimal

from trading.intent import TradeIntent
from trading.pnl import format_duration, to_cents
from workflows.trade_state import TradeState


def _num(value: Decimal | None) -> str:
    return "-" if value is None else format(value.normalize(), "f")


def static_summary(intent: TradeIntent) -> str:
    """`BUY NEARUSDT · margin 12.3 USDT ×10 · entry ≈ 1.465`: each figure with its unit (the
    quantity in contracts is decided by sizing later: the trade's details show it)."""
    return (f"{intent.side.value} {intent.symbol} · margin {_num(intent.position_size_usd)} USDT "
            f"×{intent.leverage} · entry ≈ {_num(intent.entry_price)}")


def static_details(intent: TradeIntent) -> str:
    """The Web UI's static details (set at start, readable with no worker up): the intent and the
    levels it asked for; the trade's own levels, sizing and outcome are its current details and
    its result."""
    lines = [f"**{intent.side.value} {intent.symbol}** ×{intent.leverage}, margin {_num(intent.position_size_usd)} USDT, "
             f"confidence {intent.confidence:g}", "",
             f"- intent `{intent.intent_id}` from {intent.source or 'the stream'} · model {intent.model} · at {intent.timestamp.isoformat()}",
             f"- entry ≈ {_num(intent.entry_price)}"]
    if intent.stop_loss is not None or intent.take_profit is not None:
        lines.append(f"- asked: stop {_num(intent.stop_loss)} · take-profit {_num(intent.take_profit)}"
                     " (the trade's adaptive levels are in its current details)")
    if intent.reason:
        lines += ["", *(f"> {line}" for line in intent.reason.splitlines())]
    return "\n".join(lines).strip()


def details_markdown(intent: TradeIntent, state: TradeState) -> str:
    # Blocks are separated by a blank line: a list right after a quote would render inside it.
    lines = [f"**{state.status.value}** · stage {state.stage.value}"
             + (" · paused" if state.paused else ""), ""]
    if state.reason:
        lines += [f"> {state.reason}", ""]
    if state.entry_price is not None:
        lines.append(f"- position: {_num(state.open_qty)} of {_num(state.entry_qty)} "
                     f"{intent.symbol} @ {_num(state.entry_price)} ×{state.leverage}")
    if state.exit is not None:
        tps = ", ".join(
            f"TP{tp.index} {_num(tp.price)}{' ✓' if tp.index <= state.exit.tps_done else ''}"
            for tp in state.exit.levels.take_profits)
        lines.append(f"- stop: {_num(state.exit.stop)} ({state.exit.stop_kind.value.lower()})"
                     f" · {tps}")
    if state.last_price is not None:
        lines.append(f"- last price: {_num(state.last_price)}")
    if state.kill is not None:
        k = state.kill
        lines.append(f"- kill score {k.score:.3f} / {k.threshold:g} (regime flip {k.regime_flip:.2f}, "
                     f"sigma spike {k.sigma_spike:.2f}, trend drop {k.trend_drop:.2f}, age {k.age_penalty:.2f})")
    if state.pnl is not None:
        p = state.pnl
        held = f" · held {format_duration(p.holding_s)}" if p.holding_s is not None else ""
        lines.append(f"- realized PnL **{to_cents(p.net_pnl)} USDT** (fees {to_cents(p.fees)}, "
                     f"funding {to_cents(p.funding)}){held}")
    if state.exit_reason is not None:
        lines.append(f"- exit: {state.exit_reason.value}")
    return "\n".join(lines).strip()
