"""A real paper exchange in a subprocess (`python -m paper_exchange`) on a free port, driven over
HTTP: what the tests' `paper` fixture and the benchmarks start. `QT_PAPER_SPEED=0` (the market
clock moves only through `advance()`) and a fixed `QT_PAPER_START_MS`, so prices at the start are
the configured start prices. Helpers: `reset()`, `set_price()`, `release_price()`, `advance()`,
`clock()`, `state()`, `audit()`, `add_fault()`, `clear_faults()`, `kill()` (SIGKILL), `stop()`
(SIGTERM), `start()` (same data dir: state must survive)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from exchange.client import create_exchange
from local_stack.ports import free_port
from paper_exchange.config import PaperSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC: funding at 08:00, 16:00, 00:00


class PaperServer:
    """Handle on one paper exchange process (restartable on the same port and data dir)."""

    def __init__(self, data_dir: Path, port: int | None = None, **env: Any) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            "QT_PAPER_HOST": "127.0.0.1",
            "QT_PAPER_PORT": str(self.port),
            "QT_PAPER_DATA_DIR": str(data_dir),
            "QT_PAPER_SPEED": "0",
            "QT_PAPER_START_MS": str(START_MS),
            **{f"QT_PAPER_{k.upper()}": str(v) for k, v in env.items()},
        }
        self.settings = PaperSettings(
            host="127.0.0.1", port=self.port, data_dir=data_dir, speed=0, start_ms=START_MS,
            **{k: v for k, v in env.items()},
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    # -- process --------------------------------------------------------------------------------

    def start(self, timeout: float = 20) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_PAPER_")}
        env.update(self.env)
        log = open(self.data_dir / "paper_exchange.log", "ab")  # noqa: SIM115 (owned by Popen)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paper_exchange"], cwd=REPO_ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"paper exchange exited with {self.process.returncode}; "
                                   f"see {self.data_dir / 'paper_exchange.log'}")
            try:
                if httpx.get(f"{self.base_url}/fapi/v1/ping", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"paper exchange did not answer on {self.base_url}")

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything that was not already persisted."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)

    def close(self) -> None:
        self.stop()
        self.http.close()

    # -- controls -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def reset(self) -> dict:
        return self._call("POST", "/_paper/reset")

    def set_price(self, symbol: str, price: float | str) -> dict:
        return self._call("POST", "/_paper/price", json={"symbol": symbol, "price": str(price)})

    def release_price(self, symbol: str) -> dict:
        return self._call("DELETE", f"/_paper/price/{symbol}")

    def advance(self, ms: int) -> dict:
        return self._call("POST", "/_paper/clock", json={"advance_ms": int(ms)})

    def clock(self, **change: Any) -> dict:
        if change:
            return self._call("POST", "/_paper/clock", json=change)
        return self._call("GET", "/_paper/clock")

    def state(self) -> dict:
        return self._call("GET", "/_paper/state")

    def audit(self, client_id: str | None = None, symbol: str | None = None) -> list[dict]:
        params = {k: v for k, v in (("clientOrderId", client_id), ("symbol", symbol)) if v}
        return self._call("GET", "/_paper/orders", params=params)

    def add_fault(self, **rule: Any) -> dict:
        return self._call("POST", "/_paper/faults", json=rule)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_paper/faults")


def paper_exchange_client(settings: PaperSettings, **overrides: Any):
    overrides.setdefault("enableRateLimit", False)
    return create_exchange(settings.client_settings(), **overrides)
