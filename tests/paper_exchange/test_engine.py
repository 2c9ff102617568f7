"""Matching, PnL, funding and liquidation on the engine directly (pure, no server).

Prices in these candles are in whole USDT; the market's tick is 0.1, so 100 USDT = 1000 ticks.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from paper_exchange.engine import Engine, Fees
from paper_exchange.errors import BinanceError
from paper_exchange.ledger import liquidation_price
from paper_exchange.models import Market
from paper_exchange.order_params import NewAlgoOrder, NewOrder
from paper_exchange.replay import CANDLE_MS, FundingRates, RawCandles, SymbolPath

EPOCH = 1_735_689_600_000  # 00:00 UTC
D = Decimal

MARKET = Market(symbol="TESTUSDT", base="TEST", tick=D("0.1"), step=D("0.001"),
                min_notional=D("5"), max_qty_steps=10**9, max_leverage=100, mmr=D("0.01"),
                price_precision=1, quantity_precision=3)


def make_engine(rows, symbols=("TESTUSDT",), funding_rate=0.0001) -> Engine:
    cols = list(zip(*rows))
    markets, paths, funding = {}, {}, {}
    for symbol in symbols:
        raw = RawCandles(0, list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3]),
                         [1.0] * len(rows))
        markets[symbol] = Market(**{**MARKET.__dict__, "symbol": symbol})
        paths[symbol] = SymbolPath(raw, 10.0, EPOCH)
        funding[symbol] = FundingRates(paths[symbol], None, funding_rate)
    return Engine(markets, paths, funding, Fees(D("0.0004"), D("0.0002")), D("10000"), 7, EPOCH)


def market_order(side: str, qty_steps: int, client_id: str | None = None, reduce_only=False,
                 symbol="TESTUSDT") -> NewOrder:
    return NewOrder(symbol, side, "MARKET", qty_steps, 0, "GTC", reduce_only, client_id, "RESULT")


def stop(side: str, trigger_ticks: int, qty_steps: int = 0, kind="STOP_MARKET",
         client_id: str | None = None, reduce_only=True, close_position=False,
         activate=None, rate=None, symbol="TESTUSDT") -> NewAlgoOrder:
    return NewAlgoOrder(symbol, side, kind, qty_steps, trigger_ticks, activate,
                        D(rate) if rate else None, reduce_only, close_position, client_id,
                        "CONTRACT_PRICE", False)


def test_stop_fills_at_its_price_at_the_millisecond_the_path_crosses_it():
    # 100 → 96 (low, nearer) → 110 → 104; the low leg takes 4/24 of the 5 minutes.
    engine = make_engine([(100, 110, 96, 104), (104, 105, 103, 104)])
    engine.place_order(market_order("BUY", 1000), EPOCH)  # 1 TEST long at 100
    algo = engine.place_algo_order(stop("SELL", 970, 1000, client_id="sl"), EPOCH)
    engine.advance(EPOCH + 2 * CANDLE_MS, 0)
    assert algo.status == "FINISHED"
    assert algo.trigger_time == EPOCH + 37_500  # 3 of the 4 ticks down, 50 s leg
    fill = engine.orders[algo.actual_order_id]
    assert (fill.status, fill.avg_price, fill.client_id) == ("FILLED", D("97.0"), "sl")
    assert engine.positions["TESTUSDT"].qty == 0
    # wallet: -3 USDT loss, taker fees on 100 and 97
    assert engine.wallet == D("10000") - 3 - D("0.04") - D("0.0388")


def test_a_stop_crossed_by_a_gap_fills_at_the_new_open():
    engine = make_engine([(100, 101, 99, 100), (95, 96, 94, 95)])
    engine.place_order(market_order("BUY", 1000), EPOCH)
    algo = engine.place_algo_order(stop("SELL", 980, 1000), EPOCH)
    engine.advance(EPOCH + CANDLE_MS, 0)
    assert algo.status == "FINISHED"
    assert algo.actual_price == D("95.0") and algo.trigger_time == EPOCH + CANDLE_MS


def test_take_profit_and_buy_stop_directions():
    engine = make_engine([(100, 106, 99, 105)])
    engine.place_order(market_order("SELL", 1000), EPOCH)  # short
    tp = engine.place_algo_order(stop("BUY", 995, 1000, kind="TAKE_PROFIT_MARKET"), EPOCH)
    sl = engine.place_algo_order(stop("BUY", 1050, 1000), EPOCH)
    engine.advance(EPOCH + CANDLE_MS, 0)
    # The low (99) comes first: the take-profit closes the short, the stop then has nothing
    # left to reduce and expires when the high crosses it.
    assert (tp.status, tp.actual_price) == ("FINISHED", D("99.5"))
    assert sl.status == "EXPIRED"


def test_would_immediately_trigger_is_rejected():
    engine = make_engine([(100, 101, 99, 100)])
    engine.place_order(market_order("BUY", 1000), EPOCH)
    with pytest.raises(BinanceError) as info:
        engine.place_algo_order(stop("SELL", 1000, 1000), EPOCH)  # stop at the price
    assert info.value.code == -2021
    with pytest.raises(BinanceError) as info:
        engine.place_algo_order(stop("SELL", 990, 1000, kind="TAKE_PROFIT_MARKET"), EPOCH)
    assert info.value.code == -2021


def test_trailing_stop_follows_the_high_and_fires_at_the_callback():
    # up to 110, then down to 100: a 5% trailing sell fires at 110 * 0.95 = 104.5
    engine = make_engine([(100, 110, 99.5, 109), (109, 109.5, 100, 101)])
    engine.place_order(market_order("BUY", 1000), EPOCH)
    trail = engine.place_algo_order(
        stop("SELL", 0, 1000, kind="TRAILING_STOP_MARKET", activate=1050, rate="5"), EPOCH)
    engine.advance(EPOCH + CANDLE_MS, 0)
    assert trail.status == "NEW" and trail.active and trail.extreme == pytest.approx(1100)
    engine.advance(EPOCH + 2 * CANDLE_MS, 0)
    assert trail.status == "FINISHED" and trail.actual_price == D("104.5")


def test_reduce_only_stop_with_nothing_to_reduce_expires():
    engine = make_engine([(100, 101, 90, 91)])
    algo = engine.place_algo_order(stop("SELL", 950, 1000), EPOCH)  # flat: accepted
    engine.advance(EPOCH + CANDLE_MS, 0)
    assert algo.status == "EXPIRED" and algo.actual_order_id is None


def test_reduce_only_never_increases_or_flips():
    engine = make_engine([(100, 101, 99, 100)])
    engine.place_order(market_order("BUY", 1000), EPOCH)
    with pytest.raises(BinanceError) as info:
        engine.place_order(market_order("BUY", 1000, reduce_only=True), EPOCH)
    assert info.value.code == -2022
    order = engine.place_order(market_order("SELL", 3000, reduce_only=True), EPOCH)
    assert order.executed == 1000 and engine.positions["TESTUSDT"].qty == 0


def test_long_is_liquidated_when_the_path_crosses_its_liquidation_price():
    engine = make_engine([(100, 101, 99, 100), (100, 100, 80, 82)])
    engine.set_leverage("TESTUSDT", 10)
    engine.place_order(market_order("BUY", 10_000), EPOCH)  # 10 TEST at 100, margin 100
    position = engine.positions["TESTUSDT"]
    liq = liquidation_price(position, MARKET)
    assert liq == (D(1000) - D(100)) / (D(10) * D("0.99"))  # (q·E − M) / (q·(1 − mmr))
    wallet_before = engine.wallet
    engine.advance(EPOCH + 2 * CANDLE_MS, 0)
    assert position.qty == 0 and position.isolated_wallet == 0
    assert engine.wallet == wallet_before - 100  # the whole isolated margin, no more
    kinds = [i.income_type for i in engine.income]
    assert "INSURANCE_CLEAR" in kinds
    closing = engine.trades[-1]
    assert closing.price == round(float(liq / MARKET.tick))


def test_short_liquidation_price_formula():
    engine = make_engine([(100, 101, 99, 100)])
    engine.set_leverage("TESTUSDT", 20)
    engine.place_order(market_order("SELL", 2000), EPOCH)
    position = engine.positions["TESTUSDT"]
    assert position.isolated_wallet == D("10")
    assert liquidation_price(position, MARKET) == (D(10) + D(200)) / (D(2) * D("1.01"))


def test_funding_every_eight_hours_longs_pay_positive_rates():
    engine = make_engine([(100, 100, 100, 100)], symbols=("AUSDT", "BUSDT"), funding_rate=0.001)
    engine.place_order(market_order("BUY", 10_000, symbol="AUSDT"), EPOCH)  # long 1000 USDT
    engine.place_order(market_order("SELL", 10_000, symbol="BUSDT"), EPOCH)  # short 1000 USDT
    engine.advance(EPOCH + 8 * 3_600_000 - 1, 0)
    assert not [i for i in engine.income if i.income_type == "FUNDING_FEE"]
    engine.advance(EPOCH + 8 * 3_600_000, 0)
    funding = {i.symbol: i.income for i in engine.income if i.income_type == "FUNDING_FEE"}
    assert funding == {"AUSDT": D("-1"), "BUSDT": D("1")}


def test_matching_does_not_depend_on_how_the_clock_is_chopped():
    rows = [(100 + (i % 7) - 3, 104 + (i % 5), 95 - (i % 3), 100 + (i % 11) - 5)
            for i in range(300)]

    def run(steps):
        engine = make_engine(rows)
        engine.place_order(market_order("BUY", 1000), EPOCH)
        engine.place_algo_order(stop("SELL", 0, 1000, kind="TRAILING_STOP_MARKET", rate="4"),
                                EPOCH)
        engine.place_order(NewOrder("TESTUSDT", "BUY", "LIMIT", 1000, 930, "GTC", False, None,
                                    "RESULT"), EPOCH)
        t = EPOCH
        for step in steps:
            t += step
            engine.advance(t, 0)
        return [(x.time, x.price, x.qty, x.side) for x in engine.trades], engine.wallet

    one_jump = run([300 * CANDLE_MS])
    assert len(one_jump[0]) >= 3
    assert run([7_777] * (300 * CANDLE_MS // 7_777) + [300 * CANDLE_MS % 7_777]) == one_jump
