"""A worker stopped with SIGTERM (`qt down`, a rolling deploy) while it manages an open trade:
it exits 0, quietly (the exchange clients and their sessions closed, no ccxt "requires to release
all resources", no aiohttp "Unclosed client session", no fatal interpreter error), and the trade
does not notice beyond a new monitor session on the next worker: its stop kept resting."""

from __future__ import annotations

import time

import pytest

from trading.models import ExitReason, TradeStatus

pytestmark = [pytest.mark.timeout(240), pytest.mark.integration]

NOISE = ("requires to release all resources", "Unclosed client session", "Unclosed connector",
         "Fatal Python error", "Traceback", "Task was destroyed but it is pending", "never retrieved")


async def test_sigterm_while_managing_a_trade_exits_0_quietly_and_the_trade_goes_on(crash_rig, paper):
    rig = crash_rig
    paper.set_price("ETHUSDT", 3400)
    handle = await rig.start(rig.intent("ETHUSDT", "BUY", 3400))
    state = await rig.wait_status(handle, "OPEN")
    await rig.wait_for(handle, lambda s: s.stage.value == "MONITORING")

    worker = rig.worker
    log = worker.logs[-1]
    began = time.monotonic()
    worker.process.terminate()
    code = worker.process.wait(timeout=60)
    took = time.monotonic() - began
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert "shutting down" in text
    noisy = [n for n in NOISE if n in text.split("shutting down", 1)[1]]
    assert not noisy, f"{noisy} after SIGTERM ({took:.1f} s):\n{text[-4000:]}"
    assert [o["symbol"] for o in paper.state()["open_algo_orders"]] == ["ETHUSDT"]  # the stop rests

    await worker.start()  # the next worker takes the trade over and closes it on request
    result = await handle.execute_update("close", {"reason": "after the deploy"})
    assert result["status"] == TradeStatus.CLOSED.value and result["exit_reason"] == ExitReason.MANUAL.value
    assert paper.state()["positions"] == [] and paper.state()["open_algo_orders"] == []
    assert state.stop_client_id  # (the trade had its stop before the SIGTERM)
