"""The one ccxt client: Binance USD-M futures, pointed at paper, testnet or live by config.

Paper, testnet and live share this code path; only URLs and keys differ. Markets are loaded once
per process and shared by every activity in it (`shared_exchange()`), because `load_markets` is
the heaviest call ccxt makes and market metadata (tick size, step size, min notional) does not
change during a trade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt.async_support as ccxt

from paper_exchange.config import PaperSettings
from qt.settings import ExchangeSettings

# ccxt's URL keys for the USD-M futures API, and the path each maps to on the server.
_FAPI_URL_PATHS = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
}


class LocalBinanceUsdm(ccxt.binanceusdm):
    """`binanceusdm` for a server on a local address (the paper exchange).

    ccxt picks the Binance error-code map by URL prefix (`https://fapi.binance.com/...`); on
    127.0.0.1 it would find none, and -2019/-2021/-4116/-4164 would all arrive as a bare
    ExchangeError. Every call of this client is a USD-M futures call, so the map is `linear`.
    """

    def get_exceptions_by_url(self, url: str, exactOrBroad: str) -> dict:  # noqa: N803 (ccxt's name)
        if url is None:
            return {}
        return self.safe_dict(self.safe_dict(self.exceptions, "linear", {}), exactOrBroad, {})


def paper_base_url(paper: PaperSettings) -> str:
    return f"http://{paper.host}:{paper.port}"


def create_exchange(
    settings: ExchangeSettings | None = None,
    paper: PaperSettings | None = None,
    **overrides: Any,
) -> ccxt.binanceusdm:
    """A new, not yet loaded ccxt client for the configured exchange.

    `overrides` go into ccxt's constructor config (tests use it for timeouts).
    """
    settings = settings or ExchangeSettings()
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": settings.timeout_ms,
        "options": {
            "fetchCurrencies": False,  # spot/sapi endpoints: not part of USD-M futures
            "recvWindow": settings.recv_window_ms,
            "defaultType": "swap",
        },
    }
    if settings.mode == "paper":
        paper = paper or PaperSettings()
        config["apiKey"] = paper.api_key
        config["secret"] = paper.api_secret
        config.update(overrides)
        exchange = LocalBinanceUsdm(config)
        base = paper_base_url(paper)
        urls = dict(exchange.urls["api"])
        for key, path in _FAPI_URL_PATHS.items():
            urls[key] = base + path
        exchange.urls["api"] = urls
        return exchange

    if settings.api_key is None or settings.api_secret is None:
        raise ValueError(
            f"QT_EXCHANGE_MODE={settings.mode} needs QT_EXCHANGE_API_KEY and QT_EXCHANGE_API_SECRET"
        )
    config["apiKey"] = settings.api_key.get_secret_value()
    config["secret"] = settings.api_secret.get_secret_value()
    config.update(overrides)
    exchange = ccxt.binanceusdm(config)
    if settings.mode == "testnet":
        # Binance retired the futures testnet URLs in favour of "demo trading"; ccxt refuses
        # set_sandbox_mode for futures and points demo trading at the successor endpoints.
        exchange.enable_demo_trading(True)
    return exchange


_shared: ccxt.binanceusdm | None = None
_shared_lock = asyncio.Lock()


async def shared_exchange() -> ccxt.binanceusdm:
    """The process-wide client, with markets loaded on first use and never again."""
    global _shared
    if _shared is not None:
        return _shared
    async with _shared_lock:
        if _shared is None:
            exchange = create_exchange()
            try:
                await exchange.load_markets()
            except BaseException:
                await exchange.close()
                raise
            _shared = exchange
    return _shared


async def close_shared_exchange() -> None:
    global _shared
    if _shared is not None:
        exchange, _shared = _shared, None
        await exchange.close()


# What activity classes accept: a ready ccxt client (tests), or a zero-arg async factory such as
# `shared_exchange` (workers), resolved on first use.
ExchangeSource = Any | Callable[[], Awaitable[Any]]


class ExchangeHolder:
    """An injected ccxt client or factory, resolved once, with markets loaded."""

    def __init__(self, source: ExchangeSource = shared_exchange) -> None:
        self._source = source
        self._client: Any | None = None
        self._lock = asyncio.Lock()

    async def exchange(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    source = self._source
                    # A ccxt client is itself callable-looking; tell it from a factory by its API.
                    client = source if hasattr(source, "create_order") else await source()
                    if not getattr(client, "markets", None):
                        await client.load_markets()
                    self._client = client
        return self._client
