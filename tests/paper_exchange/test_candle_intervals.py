"""Candle files of any supported interval: detected (or given), checked, replayed at their pace.

A 1-minute file replays one row per minute of market time, the exchange's 5-minute klines are
aggregated from its rows, a gap in a file keeps its time (held flat at the previous close), an
inconsistent file is refused with a message naming it, and `QT_PAPER_EXTRA_SYMBOLS` adds
symbols to the defaults (`QT_PAPER_SYMBOLS` replaces them).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from paper_exchange.config import PaperSettings, SymbolSpec, default_symbols
from paper_exchange.replay import klines, load_path
from paper_exchange.service import PaperExchange
from local_stack.paper_server import START_MS, PaperServer, paper_exchange_client

EPOCH = 1_735_689_600_000  # 2025-01-01 00:00 UTC (the replay's start in the tests)
FILE_T0 = 1_577_836_800_000  # 2020-01-01 00:00 UTC (the recording's first open time)
MIN = 60_000
FIVE = 5 * MIN
TICK = Decimal("0.01")

Row = tuple[int, int, int, int, int, float]  # open time, o, h, l, c in cents, volume


def synthetic_rows(n: int, step: int = MIN, t0: int = FILE_T0) -> list[Row]:
    """`n` consistent candles, prices in cents around 10.00, every one different."""
    rows, price = [], 1000
    for i in range(n):
        o = price
        c = o + (i * 7) % 11 - 5
        h = max(o, c) + 3 + i % 4
        low = min(o, c) - 2 - i % 3
        rows.append((t0 + i * step, o, h, low, c, float(10 + i)))
        price = c + (i % 3) - 1  # a small jump to the next open
    return rows


def write_csv(directory: Path, name: str, rows: list[Row]) -> Path:
    lines = ["timestamp_ms,open,high,low,close,volume"]
    lines += [f"{t},{o / 100:.2f},{h / 100:.2f},{lo / 100:.2f},{c / 100:.2f},{v}"
              for t, o, h, lo, c, v in rows]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def load(directory: Path, name: str, epoch: int = EPOCH):
    # price_scale 1, tick 0.01: one tick per cent, so replayed ticks equal the file's cents.
    return load_path(directory, name, None, Decimal(1), TICK, epoch)


def aggregate(rows: list[Row]) -> tuple:
    return (rows[0][1], max(r[2] for r in rows), min(r[3] for r in rows), rows[-1][4],
            sum(r[5] for r in rows))


def spec_for(file: Path, **extra) -> SymbolSpec:
    return SymbolSpec(candles=str(file), price_scale=Decimal(1), tick_size=TICK,
                      step_size=Decimal("0.1"), min_notional=Decimal("5"), max_leverage=20,
                      **extra)


# -- pace --------------------------------------------------------------------------------------


def test_a_1m_file_replays_one_minute_per_row(tmp_path):
    rows = synthetic_rows(30)
    write_csv(tmp_path, "SYN-1m.csv", rows)
    path = load(tmp_path, "SYN-1m.csv")
    for i, (_, o, _h, _l, c, _v) in enumerate(rows):
        assert path.open_time(i) == EPOCH + i * MIN
        assert path.price_at(EPOCH + i * MIN) == o  # row i opens at minute i
        assert path.price_at(EPOCH + (i + 1) * MIN - 1) == pytest.approx(c, abs=1)
    # The 1m klines are the file's rows, one per minute, with their volumes.
    served = klines(path, "1m", EPOCH + 30 * MIN, EPOCH, None, 30)
    assert [r[0] for r in served] == [EPOCH + i * MIN for i in range(30)]
    assert [r[1:6] for r in served] == [r[1:] for r in rows]
    # The file lasts 30 minutes of market time: the second pass opens at minute 30.
    assert path.index_at(EPOCH + 30 * MIN) == 30 and path.candle(30)[0] == rows[-1][4]


def test_5m_klines_of_a_1m_file_are_its_rows_aggregated(tmp_path):
    rows = synthetic_rows(30)
    write_csv(tmp_path, "SYN-1m.csv", rows)
    path = load(tmp_path, "SYN-1m.csv")
    served = klines(path, "5m", EPOCH + 30 * MIN, EPOCH, EPOCH + 25 * MIN, 500)
    assert [r[0] for r in served] == [EPOCH + k * FIVE for k in range(6)]
    assert [r[6] for r in served] == [EPOCH + (k + 1) * FIVE - 1 for k in range(6)]
    assert [r[1:6] for r in served] == [aggregate(rows[5 * k:5 * k + 5]) for k in range(6)]
    fifteen = klines(path, "15m", EPOCH + 30 * MIN, EPOCH, None, 2)
    assert [r[1:6] for r in fifteen] == [aggregate(rows[:15]), aggregate(rows[15:])]
    # The current 5m kline, two minutes in: the first two rows of its interval so far.
    now = EPOCH + 7 * MIN
    current = klines(path, "5m", now, None, None, 1)[0]
    o7 = rows[7][1]
    assert current[0] == EPOCH + FIVE
    assert current[1:6] == (rows[5][1], max(rows[5][2], rows[6][2], o7),
                            min(rows[5][3], rows[6][3], o7), o7, rows[5][5] + rows[6][5])


def test_5m_files_still_replay_one_row_per_5_minutes(tmp_path):
    rows = synthetic_rows(12, step=FIVE)
    write_csv(tmp_path, "SYN-5m.csv", rows)
    path = load(tmp_path, "SYN-5m.csv")
    assert [path.open_time(i) for i in range(12)] == [EPOCH + i * FIVE for i in range(12)]
    served = klines(path, "5m", EPOCH + 12 * FIVE, EPOCH, None, 12)
    assert [r[1:6] for r in served] == [r[1:] for r in rows]


# -- gaps --------------------------------------------------------------------------------------


def test_a_gap_in_a_1m_file_keeps_its_time_and_is_held_flat(tmp_path):
    rows = synthetic_rows(20)
    kept = rows[:10] + rows[15:]  # minutes 10..14 missing from the recording
    write_csv(tmp_path, "GAP-1m.csv", kept)
    path = load(tmp_path, "GAP-1m.csv")
    close9 = rows[9][4]
    # Every row replays at its offset in the file: row 15 still opens at minute 15.
    assert path.price_at(EPOCH + 15 * MIN) == rows[15][1]
    assert path.candle(path.index_at(EPOCH + 15 * MIN))[:4] == rows[15][1:5]
    for t in range(EPOCH + 10 * MIN, EPOCH + 15 * MIN, 20_000):
        assert path.price_at(t) == close9  # the gap is flat at the previous close
    served = klines(path, "1m", EPOCH + 20 * MIN, EPOCH, None, 20)
    assert [r[0] for r in served] == [EPOCH + i * MIN for i in range(20)]
    assert [r[1:6] for r in served[10:15]] == [(close9, close9, close9, close9, 0.0)] * 5
    assert [r[1:6] for r in served[15:]] == [r[1:] for r in rows[15:]]
    five = klines(path, "5m", EPOCH + 20 * MIN, EPOCH, None, 4)
    assert five[2][1:6] == (close9, close9, close9, close9, 0.0)
    assert five[3][1:6] == aggregate(rows[15:20])
    # The file's own time of a replayed instant (what funding rates are aligned by).
    assert path.file_time(EPOCH + 15 * MIN) == rows[15][0]
    # The recording spans 20 minutes, so the loop's second pass opens at minute 20.
    assert path.index_at(EPOCH + 20 * MIN) == path.n == 20


def test_a_gap_in_a_5m_file_keeps_its_time(tmp_path):
    rows = synthetic_rows(8, step=FIVE)
    write_csv(tmp_path, "GAP-5m.csv", rows[:3] + rows[5:])
    path = load(tmp_path, "GAP-5m.csv")
    assert path.price_at(EPOCH + 5 * FIVE) == rows[5][1]  # not at 3 * 5 min
    assert path.price_at(EPOCH + 4 * FIVE) == rows[2][4]


# -- refusals ----------------------------------------------------------------------------------


def _shifted(rows: list[Row], index: int, dt: int) -> list[Row]:
    out = list(rows)
    t, *rest = out[index]
    out[index] = (t + dt, *rest)
    return out


BASE = synthetic_rows(12)
INCONSISTENT = {
    "duplicate": (BASE[:4] + [BASE[3]] + BASE[4:], r"line 6: open time \d+ is not after"),
    "decreasing": (BASE[:4] + [BASE[2]] + BASE[4:], r"line 6: open time \d+ is not after"),
    "unaligned": ([(t + 30_000, *rest) for t, *rest in BASE], r"not aligned to the 1m grid"),
    "one row off the grid": (_shifted(BASE, 6, 20_000), r"line 8: open time \d+ is not aligned"),
    "3m": (synthetic_rows(12, step=3 * MIN), r"3m apart.*1m or 5m"),
    "1h": (synthetic_rows(12, step=60 * MIN), r"1h apart.*1m or 5m"),
    "7m": (synthetic_rows(12, step=7 * MIN), r"420000 ms apart.*1m or 5m"),
    "high below the close": ([BASE[0], (BASE[1][0], 1000, 990, 980, 995, 1.0)] + BASE[2:],
                             r"line 3: high .* below"),
    "single row": (BASE[:1], r"one candle.*interval"),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_an_inconsistent_file_is_refused_with_a_message(tmp_path, case):
    rows, message = INCONSISTENT[case]
    write_csv(tmp_path, "BAD-1m.csv", rows)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "BAD-1m.csv"))) as err:
        load(tmp_path, "BAD-1m.csv")
    assert re.search(message, str(err.value)), str(err.value)


def test_a_given_interval_that_the_file_contradicts_is_refused(tmp_path):
    five = write_csv(tmp_path, "SYN-5m.csv", synthetic_rows(12, step=FIVE))
    settings = PaperSettings(data_dir=tmp_path, speed=0, start_ms=EPOCH,
                             symbols={"SYNUSDT": spec_for(five, interval="1m")})
    with pytest.raises(ValueError) as err:
        PaperExchange(settings)
    text = str(err.value)
    assert str(five) in text and "given as 1m" in text and "5m apart" in text, text


def test_a_given_interval_that_matches_is_used(tmp_path):
    one = write_csv(tmp_path, "SYN-1m.csv", synthetic_rows(12))
    single = write_csv(tmp_path, "ONE-1m.csv", synthetic_rows(1))
    settings = PaperSettings(data_dir=tmp_path, speed=0, start_ms=EPOCH, symbols={
        "SYNUSDT": spec_for(one, interval="1m"), "ONEUSDT": spec_for(single, interval="1m")})
    exchange = PaperExchange(settings)
    try:
        assert exchange.paths["SYNUSDT"].open_time(3) == EPOCH + 3 * MIN
        assert exchange.paths["ONEUSDT"].open_time(3) == EPOCH + 3 * MIN  # one row, looped
    finally:
        exchange.close()
    with pytest.raises(ValueError, match="interval"):
        spec_for(one, interval="2m")


# -- symbols -----------------------------------------------------------------------------------


def _spec_json(candles: str) -> dict:
    return {"candles": candles, "price_scale": "1", "tick_size": "0.01", "step_size": "0.1",
            "min_notional": "5", "max_leverage": 20}


def test_extra_symbols_are_added_to_the_defaults(monkeypatch):
    defaults = set(default_symbols())
    monkeypatch.setenv("QT_PAPER_EXTRA_SYMBOLS", json.dumps({
        "SOLUSDT": _spec_json("ETHBTC-5m.csv"), "XRPUSDT": _spec_json("LTCBTC-5m.csv")}))
    symbols = PaperSettings().symbols
    assert set(symbols) == defaults | {"SOLUSDT"}
    assert symbols["XRPUSDT"].candles == "LTCBTC-5m.csv"  # merged over the default
    assert symbols["BTCUSDT"] == default_symbols()["BTCUSDT"]
    # QT_PAPER_SYMBOLS replaces the defaults; the extra symbols are added to it.
    monkeypatch.setenv("QT_PAPER_SYMBOLS", json.dumps({"ADAUSDT": _spec_json("ADABTC-5m.csv")}))
    assert set(PaperSettings().symbols) == {"ADAUSDT", "SOLUSDT", "XRPUSDT"}
    monkeypatch.delenv("QT_PAPER_EXTRA_SYMBOLS")
    assert set(PaperSettings().symbols) == {"ADAUSDT"}


# -- over HTTP, through ccxt -------------------------------------------------------------------


def _server(tmp_path: Path, extra: dict) -> PaperServer:
    server = PaperServer(tmp_path / "paper")
    server.env["QT_PAPER_EXTRA_SYMBOLS"] = json.dumps(extra)
    return server


def _cents(ohlcv: list) -> list[tuple]:
    return [(t, round(o * 100), round(h * 100), round(lo * 100), round(c * 100), v)
            for t, o, h, lo, c, v in ohlcv]


@pytest.mark.integration
async def test_a_1m_symbol_over_http_next_to_the_defaults(tmp_path):
    rows = synthetic_rows(30)
    file = write_csv(tmp_path, "SYN-1m.csv", rows[:20] + rows[22:])  # minutes 20, 21 missing
    server = _server(tmp_path, {"SYNUSDT": _spec_json(str(file))})
    server.start()
    client = paper_exchange_client(server.settings)
    try:
        await client.load_markets()
        assert {m["id"] for m in client.markets.values()} == set(default_symbols()) | {"SYNUSDT"}
        server.advance(30 * MIN)
        sym = "SYN/USDT:USDT"
        one = _cents(await client.fetch_ohlcv(sym, "1m", since=START_MS, limit=30))
        held = rows[19][4]
        expected = [(START_MS + i * MIN, *r[1:]) for i, r in enumerate(rows)]
        expected[20:22] = [(START_MS + i * MIN, held, held, held, held, 0.0) for i in (20, 21)]
        assert one == expected
        five = _cents(await client.fetch_ohlcv(sym, "5m", since=START_MS, limit=6))
        assert five == [(START_MS + k * FIVE, *aggregate(expected[5 * k:5 * k + 5]))
                        for k in range(6)]
        assert (await client.fetch_ticker(sym))["last"] == rows[-1][4] / 100
        # A default symbol on its 5m file is unchanged: 5m klines one row per 5 minutes.
        btc = await client.fetch_ohlcv("BTC/USDT:USDT", "5m", since=START_MS, limit=6)
        assert [k[0] for k in btc] == [START_MS + k * FIVE for k in range(6)]
        assert btc[0][1] == 63000.0
    finally:
        await client.close()
        server.close()


@pytest.mark.integration
def test_the_exchange_refuses_to_start_on_an_inconsistent_file(tmp_path):
    file = write_csv(tmp_path, "BAD-1m.csv", BASE[:4] + [BASE[3]] + BASE[4:])
    server = _server(tmp_path, {"BADUSDT": _spec_json(str(file))})
    try:
        with pytest.raises(RuntimeError, match="exited"):
            server.start()
        log = (tmp_path / "paper" / "paper_exchange.log").read_text()
        assert f"{file}: line 6: open time" in log, log[-2000:]
    finally:
        server.close()
