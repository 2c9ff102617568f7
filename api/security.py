"""Access to the API: one bearer token, compared in constant time.

The token is `QT_API_TOKEN`, or, when that is unset, the one in `{QT_DATA_DIR}/api_token`
(created on first use with mode 0600, so `qt up` and the `qt` commands find the same one).
`/health`, `/metrics` and the OpenAPI document and its page carry no account data and need none.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.schemas import Problem
from common.settings import StackSettings

TOKEN_FILE = "api_token"
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` (QT_API_TOKEN or .data/api_token)")
# What `require_token` answers, for the schema of every router that depends on it.
TOKEN_ERRORS = {401: {"model": Problem, "description": "no bearer token"},
                403: {"model": Problem, "description": "a wrong token"}}


def token_path(settings: StackSettings) -> Path:
    return settings.data_dir / TOKEN_FILE


def load_or_create_token(settings: StackSettings) -> str:
    """The configured token, else the data dir's token file (created 0600 when missing)."""
    if settings.api_token is not None and settings.api_token.get_secret_value():
        return settings.api_token.get_secret_value()
    path = token_path(settings)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """401 without a bearer token, 403 with a wrong one."""
    expected: str = request.app.state.token
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the token is not valid")
