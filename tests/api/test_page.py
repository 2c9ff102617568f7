"""The portfolio page `/` on the real stack: access through the token once, then a cookie that
opens the page only; a trade whose `state` query fails is still listed; and, in Debian's
chromium driven by Playwright (no browser download), the page shows the open trades with their
stops, the two plotly charts, the recent close with its exit reason and the safe-mode banner,
with no console error and no failed or off-site request; and it reloads itself to follow the account."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from decimal import Decimal

import httpx
import pytest
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.routers.page import COOKIE, PLOTLY_JS_PATH, format_price
from tests.api.conftest import TOKEN
from tests.api.test_api import open_trade
from common import search_attributes as sa
from workflows.starter import WORKFLOW_TYPE

pytestmark = [pytest.mark.timeout(240), pytest.mark.integration]

CHROMIUM = os.environ.get("QT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def chromium() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM} missing): `make system-deps` installs it "
                    "(apt-get install chromium); Playwright downloads no browser of its own here")
    return path


def _cookie_of(response: httpx.Response) -> str:
    header = response.headers.get("set-cookie", "")
    assert header.startswith(f"{COOKIE}="), header
    return header.split(";", 1)[0].split("=", 1)[1]


async def test_the_token_opens_the_page_once_and_the_cookie_opens_nothing_else(api):
    async with httpx.AsyncClient(base_url=api.base_url) as anonymous:
        login = await anonymous.get("/")
        assert login.status_code == 401 and login.headers["content-type"].startswith("text/html")
        assert 'action="/login"' in login.text and "Open trades" not in login.text
        wrong = await anonymous.get("/", params={"token": "nope"})
        assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
        assert (await anonymous.post("/login", data={"token": TOKEN + "x"})).status_code == 403

        signed = await anonymous.get("/", params={"token": TOKEN})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        attributes = signed.headers["set-cookie"].lower()
        assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
        assert signed.headers["referrer-policy"] == "no-referrer"
        value = _cookie_of(signed)
        assert TOKEN not in value and len(value) == 64  # an HMAC of the token, not the token
        by_form = await anonymous.post("/login", data={"token": TOKEN})
        assert by_form.status_code == 303 and _cookie_of(by_form) == value

    async with httpx.AsyncClient(base_url=api.base_url, headers={"Cookie": f"{COOKIE}={value}"}) as browser:
        page = await browser.get("/")
        assert page.status_code == 200, page.text
        assert "Open trades" in page.text and "Recent closes" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "default-src 'none'" in csp
        assert page.headers["cache-control"] == "no-store"
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        # The cookie opens the page, never the JSON API (that still wants the bearer header).
        assert (await browser.get("/api/v1/portfolio")).status_code == 401
    async with httpx.AsyncClient(base_url=api.base_url, headers={"Cookie": f"{COOKIE}={'0' * 64}"}) as forged:
        assert (await forged.get("/")).status_code == 401
    assert (await api.get("/")).status_code == 200  # a bearer header does too (curl)
    async with httpx.AsyncClient(base_url=api.base_url) as anonymous:
        js = await anonymous.get(PLOTLY_JS_PATH)  # plotly's own bundle, served from here
        assert js.status_code == 200 and len(js.content) > 1_000_000 and js.headers["content-type"].startswith("text/javascript")
        assert (await anonymous.get("/static/page/page.js")).status_code == 200
        assert (await anonymous.get("/static/page/..%2Fapp.py")).status_code == 404
        out = await anonymous.post("/logout")
        assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


async def test_a_trade_whose_state_query_fails_is_still_listed_with_a_note(api, temporal_client):
    # A TradeWorkflow on a queue no worker polls: visibility lists it as OPEN, its query fails.
    workflow_id = f"trade-page-stuck-{uuid.uuid4().hex[:8]}"
    handle = await temporal_client.start_workflow(
        WORKFLOW_TYPE, {"nothing": "here"}, id=workflow_id, task_queue=f"nobody-polls-{uuid.uuid4().hex[:6]}",
        search_attributes=TypedSearchAttributes([SearchAttributePair(sa.TRADE_STATUS, "OPEN"),
                                                 SearchAttributePair(sa.SYMBOL, "SOLUSDT"),
                                                 SearchAttributePair(sa.SIDE, "BUY")]))
    try:
        for _ in range(100):  # visibility is eventually consistent
            if workflow_id in (await api.get("/api/v1/portfolio")).text:
                break
            await asyncio.sleep(0.1)
        page = await api.get("/")
        assert page.status_code == 200
        row = page.text.split(f'data-workflow-id="{workflow_id}"', 1)[1]
        assert "SOLUSDT" in row.split("</tr>", 1)[0]
        assert "levels not available: the state query failed" in row.split("</tr>", 2)[1]
    finally:
        await handle.terminate(reason="test over")


async def test_the_page_in_chromium_shows_trades_levels_charts_closes_and_safe_mode(api, rig, paper, chromium,
                                                                                     tmp_path):
    from playwright.async_api import async_playwright

    closed = await open_trade(api, rig, paper, "XRPUSDT", "2.0000")
    close = await api.post(f"/api/v1/trades/{closed}/close", {})
    assert close.status_code == 200, close.text
    btc = await open_trade(api, rig, paper, "BTCUSDT", 63000)
    eth = await open_trade(api, rig, paper, "ETHUSDT", 3400, side="SELL")
    paper.set_price("BTCUSDT", 63400)
    details = {w: (await api.get(f"/api/v1/trades/{w}")).json() for w in (btc, eth, closed)}
    safe = await api.put("/api/v1/safe-mode", {"reason": "CPI release at 14:30", "ttl_s": 900, "set_by": "alice"})
    assert safe.status_code == 200, safe.text
    shot = tmp_path / "portfolio.png"
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            try:
                context = await browser.new_context(viewport={"width": 1440, "height": 900})
                page = await context.new_page()
                errors: list[str] = []
                failed: list[str] = []
                urls: list[str] = []
                page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
                page.on("response", lambda r: failed.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None)
                page.on("request", lambda r: urls.append(r.url))

                response = await page.goto(f"{api.base_url}/?token={TOKEN}", wait_until="networkidle")
                assert response is not None and response.status == 200
                assert page.url == f"{api.base_url}/"  # the token left the address bar
                cookies = {c["name"]: c for c in await context.cookies()}
                assert cookies[COOKIE]["httpOnly"] and cookies[COOKIE]["sameSite"] == "Strict"

                # Both charts drawn by plotly.js (served from here), with their data.
                await page.wait_for_selector("#equity-curve.js-plotly-plot .scatterlayer .trace", state="attached")
                await page.wait_for_selector("#daily-pnl.js-plotly-plot .barlayer .point", state="attached")
                assert await page.locator(".js-plotly-plot").count() == 2

                # The open trades, with their stop and a link to the Temporal Web UI.
                for workflow_id, symbol in ((btc, "BTCUSDT"), (eth, "ETHUSDT")):
                    row = page.locator(f'#open-trades tr[data-workflow-id="{workflow_id}"]')
                    text = await row.inner_text()
                    state = details[workflow_id]["state"]
                    stop = format_price(Decimal(state["exit"]["stop"]))
                    assert symbol in text and stop in await row.locator("td.stop").inner_text(), (text, stop)
                    assert format_price(Decimal(state["entry_price"])) in text
                    link = await row.locator("a.wf").get_attribute("href")
                    assert link == details[workflow_id]["web_ui_url"]
                btc_pnl = await page.locator(f'#open-trades tr[data-workflow-id="{btc}"] td.pnl').inner_text()
                assert btc_pnl.startswith("+"), btc_pnl  # long, and the price went up

                # The close, newest first, with its exit reason, PnL and Web UI link.
                first_close = page.locator("#recent-closes tbody tr").first
                assert await first_close.get_attribute("data-workflow-id") == closed
                assert (await first_close.locator("td.exit-reason").inner_text()) == "MANUAL"
                assert f"{Decimal(close.json()['realized_pnl']):+,.2f}" in await first_close.inner_text()
                assert await first_close.locator("a.wf").get_attribute("href") == details[closed]["web_ui_url"]

                banner = await page.locator("#safety-banner-safe-mode").inner_text()
                assert "SAFE MODE ON" in banner and "CPI release at 14:30" in banner and "alice" in banner

                await page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot of the portfolio page: {shot}")

                # It follows the account by itself: safe mode goes off, the page says so with no click.
                await page.goto(f"{api.base_url}/?refresh=5", wait_until="networkidle")
                assert "reloads every 5 s" in await page.locator("#auto-refresh").inner_text()
                assert (await api.delete("/api/v1/safe-mode")).status_code == 200
                await page.wait_for_selector("#safety-banner-ok", timeout=15_000)
                assert await page.locator("#safety-banner-safe-mode").count() == 0
                assert not errors, errors
                assert not failed, failed
                offsite = [u for u in urls if not u.startswith(api.base_url) and not u.startswith("data:")]
                assert not offsite, offsite
            finally:
                await browser.close()
    finally:
        await api.delete("/api/v1/safe-mode")
        for workflow_id in (btc, eth):
            assert (await api.post(f"/api/v1/trades/{workflow_id}/close", {})).status_code == 200
    assert shot.stat().st_size > 10_000


def test_the_page_still_renders_when_every_part_failed_and_the_kill_switch_is_on():
    # No stack here: the template alone, with what page_context gives when nothing answers.
    from datetime import UTC, datetime

    from api.routers.page import _TEMPLATES
    from api.schemas import SafeModeView

    down = "ConnectionError: refused"
    html = _TEMPLATES.get_template("page.html").render(
        now=datetime.now(UTC), portfolio=None, open_trades=[], open_unrealized=Decimal(0), report=None, closes=[],
        safe_mode=SafeModeView(active=True, reason="kill switch", set_by="bob", since_ms=0),
        kill_switch=SafeModeView(active=True, reason="exchange incident", set_by="bob", since_ms=0), charts=[],
        errors={"portfolio": down, "performance": down, "closes": down, "open_trades": down},
        temporal_ui_url="http://127.0.0.1:8233", static={"plotly": "/p.js", "page.js": "/j", "page.css": "/c"})
    assert "KILL SWITCH ON" in html and "exchange incident" in html and "SAFE MODE ON" in html
    assert html.count(down) == 4 and "No open trade." in html
