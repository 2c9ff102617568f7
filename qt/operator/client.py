"""The operator commands' HTTP client: where the API is, its token, one line per refusal."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from qt.console import output_console

API = "/api/v1"
TIMEOUT_S = 30.0  # reads and quick actions
CLOSE_TIMEOUT_S = 120.0  # `close` answers once the trade is flat
ENTER_WAIT_TIMEOUT_S = 45.0  # ?wait=gates waits up to 15 s on the server

_PROBLEM = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 409: "conflict",
            422: "invalid", 500: "server error", 503: "unavailable"}


class ApiError(Exception):
    """One line for the operator: what the API said, or that it could not be reached."""


# ================================================================================ the API client


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None
    token_source: str  # "QT_API_TOKEN" or the token file's path


def api_target() -> Target:
    """The API's address (`QT_API_URL`, else QT_API_HOST/QT_API_PORT) and its token
    (`QT_API_TOKEN`, else the token file the API wrote; None when neither exists)."""
    from api.security import token_path
    from common.settings import StackSettings

    settings = StackSettings()
    url = os.environ.get("QT_API_URL", "").strip().rstrip("/")
    if not url:
        host = settings.api_host
        if host in ("", "0.0.0.0", "::"):  # a listen-everywhere address: talk to this machine
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        url = f"http://{host}:{settings.api_port}"
    if settings.api_token is not None and settings.api_token.get_secret_value():
        return Target(url, settings.api_token.get_secret_value(), "QT_API_TOKEN")
    path = token_path(settings)
    try:
        token = path.read_text().strip() or None
    except FileNotFoundError:
        token = None
    except OSError as err:
        raise ApiError(f"cannot read the API token file {path}: {err}") from None
    return Target(url, token, str(path))


class ApiClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        headers = {"User-Agent": "qt-cli"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self.http = httpx.Client(base_url=target.url, headers=headers, timeout=TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
             headers: dict | None = None, timeout: float = TIMEOUT_S) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            reply = self.http.request(method, path, json=json_body, params=params, headers=headers,
                                      timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise ApiError(f"API not reachable at {self.target.url} (is `qt up` running?)") from None
        except httpx.TimeoutException:
            raise ApiError(f"API at {self.target.url} did not answer {method} {path} within {timeout:g} s") from None
        except httpx.TransportError as err:
            raise ApiError(f"API at {self.target.url}: {type(err).__name__}: {err}") from None
        if reply.status_code >= 400:
            raise ApiError(problem_line(reply, self.target))
        try:
            return reply.json()
        except ValueError:
            raise ApiError(f"HTTP {reply.status_code} from {method} {path}: the answer is not JSON") from None


def problem_line(reply: httpx.Response, target: Target | None = None) -> str:
    """`HTTP 422 invalid: side: must be BUY or SELL; leverage: ...` -- one line, the API's detail."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        text = "; ".join(_field_problem(item) for item in detail)
    elif detail:
        text = str(detail)
    else:
        text = reply.text.strip()[:300] or reply.reason_phrase
    code = reply.status_code
    line = f"HTTP {code} {_PROBLEM.get(code, reply.reason_phrase.lower())}: {text}"
    if code in (401, 403) and target is not None:
        line += (f" (token from {target.token_source})" if target.token else
                 f" (no token: set QT_API_TOKEN, or start the API so it writes {target.token_source})")
    return " ".join(line.split())


def _field_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc") or []]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    message = str(item.get("msg", "invalid"))
    return f"{'.'.join(loc)}: {message}" if loc else message


def run_with_api(action: Callable[[ApiClient, Console], int | None]) -> None:
    """Call the API through one client; any ApiError is one red line on stderr and exit 1."""
    out = output_console()
    err = Console(stderr=True, soft_wrap=True)
    try:
        client = ApiClient(api_target())
    except ApiError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    try:
        code = action(client, out)
    except ApiError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    finally:
        client.close()
    if code:
        raise typer.Exit(code=code)
