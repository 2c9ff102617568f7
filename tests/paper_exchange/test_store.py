"""Persistence: a restart re-walks the replay from the last flush and reaches the same state."""

from __future__ import annotations

from decimal import Decimal

from paper_exchange.config import PaperSettings
from paper_exchange.order_params import NewAlgoOrder, NewOrder
from paper_exchange.service import PaperExchange

START = 1_735_689_600_000
HOUR = 3_600_000


def snapshot(svc: PaperExchange) -> dict:
    engine = svc.engine
    return {
        "wallet": engine.wallet,
        "positions": {s: p.to_dict() for s, p in engine.positions.items()},
        "orders": {i: o.to_dict() for i, o in engine.orders.items()},
        "algos": {i: a.to_dict() for i, a in engine.algos.items()},
        "trades": [t.to_dict() for t in engine.trades],
        "income": [r.to_dict() for r in engine.income],
        "processed": engine.processed_ms,
    }


def test_unflushed_replay_progress_is_recomputed_identically_after_a_crash(tmp_path):
    settings = PaperSettings(data_dir=tmp_path, speed=0, start_ms=START)
    first = PaperExchange(settings)
    engine = first.engine
    for symbol, side in (("ETHUSDT", "BUY"), ("NEARUSDT", "SELL"), ("XRPUSDT", "BUY")):
        market = engine.markets[symbol]
        qty = int(Decimal(200) / market.price(engine.price_ticks(symbol)) / market.step) + 1
        engine.place_order(NewOrder(symbol, side, "MARKET", qty, 0, "GTC", False, None, "RESULT"),
                           START)
        exit_side = "SELL" if side == "BUY" else "BUY"
        engine.place_algo_order(NewAlgoOrder(symbol, exit_side, "TRAILING_STOP_MARKET", qty, 0,
                                             None, Decimal("0.8"), True, False, None,
                                             "CONTRACT_PRICE", False), START)
    first.flush()

    # Speed > 0 without requests: the replay moves (trailing extremes, maybe fills) unflushed.
    engine.advance(START + 5 * HOUR, 0)
    # ... then the process dies. The restarted one reads the last flush and re-walks.
    second = PaperExchange(settings)
    assert second.engine.processed_ms == START

    for svc in (first, second):
        svc.engine.advance(START + 30 * HOUR, 0)
    assert snapshot(first) == snapshot(second)
    assert snapshot(first)["trades"][3:]  # the trailing stops did fire along the way
