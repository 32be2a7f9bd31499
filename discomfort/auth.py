"""The token that makes a ComfyUI server its owner's. Pure: no I/O.

A managed server is started with a fresh secret in ``DISCOMFORT_TOKEN`` (a server you run
yourself can be given one the same way, or through ``DISCOMFORT_TOKEN_FILE``). The node
package then lets a request through only when it carries the token: in the
``X-Discomfort-Token`` header (the connector, on HTTP and websocket alike), or in the
``discomfort_token`` cookie (a browser, once it opened ``/?discomfort_token=<token>``).
Every route is covered, ComfyUI's own (``/prompt``, ``/ws``, ``/view``, the editor) included.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

TOKEN_ENV = "DISCOMFORT_TOKEN"
TOKEN_FILE_ENV = "DISCOMFORT_TOKEN_FILE"
TOKEN_HEADER = "X-Discomfort-Token"
TOKEN_COOKIE = "discomfort_token"
TOKEN_QUERY = "discomfort_token"
MIN_TOKEN_LENGTH = 16


def new_token() -> str:
    return secrets.token_urlsafe(32)


def server_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The token this server process was started with, or None (no token: no check)."""
    token = environ.get(TOKEN_ENV)
    if not token and environ.get(TOKEN_FILE_ENV):
        token = Path(environ[TOKEN_FILE_ENV]).read_text().strip()
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{TOKEN_ENV} is {len(token)} characters long; use at least "
                          f"{MIN_TOKEN_LENGTH} (python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))')")
    return token or None


def matches(given: str | None, token: str) -> bool:
    """Constant-time: how much of a guess is right must not show in the time it takes."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def request_allowed(token: str, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
    return matches(headers.get(TOKEN_HEADER), token) or matches(cookies.get(TOKEN_COOKIE), token)


def editor_url(url: str, token: str | None) -> str:
    """The address that opens the editor of a server with a token (it sets the cookie)."""
    return f"{url}/?{TOKEN_QUERY}={token}" if token else f"{url}/"
