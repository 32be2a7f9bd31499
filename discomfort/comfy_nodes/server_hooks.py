"""What the node package adds to a running ComfyUI besides its nodes.

- ``GET /discomfort/info``: the handshake a connector checks before it trusts the server (the
  store root and its id, which tell whether both sides share a store, and the versions), which
  copy of the library the server loaded (``library``: a checkout's ``discomfort/`` or an
  installed wheel's), and whether the value routes are on;
- ``/discomfort/v1/...``: a run's values over HTTP, for a client on another machine
  (``value_routes.py``);
- a watchdog that stops a managed server when the process that started it is gone;
- when the server was given a token (a managed server always is), a middleware that refuses
  every request without it, ComfyUI's own routes included (``discomfort/auth.py``).

Both reach ComfyUI only through objects already loaded in the server process: importing this
module elsewhere has no side effects.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
import time

from .. import __version__, auth
from ..store import default_root
from ..store.procs import alive

log = logging.getLogger("discomfort")
OWNER_PID_ENV = "DISCOMFORT_OWNER_PID"
OWNER_START_ENV = "DISCOMFORT_OWNER_START"


def server_info() -> dict:
    import cloudpickle

    torch = sys.modules.get("torch")
    return {
        "package": "discomfort",
        "version": __version__,
        "library": os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
        "root": str(default_root()),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None),
        "cloudpickle": cloudpickle.__version__,
    }


def _prompt_server():
    server_module = sys.modules.get("server")
    return getattr(getattr(server_module, "PromptServer", None), "instance", None)


def install_token_check() -> bool:
    """Refuse (401) every request that lacks the server's token. ComfyUI builds its app before
    it loads custom nodes and freezes it only when it starts serving, so the middleware can
    still be added here; it goes first, before any of ComfyUI's own."""
    prompt_server = _prompt_server()
    token = auth.server_token()
    if prompt_server is None or token is None:
        return False
    from aiohttp import web

    @web.middleware
    async def require_token(request, handler):
        given = request.query.get(auth.TOKEN_QUERY)
        if given is not None and auth.matches(given, token) and request.method == "GET":
            # The editor's way in: trade the query for a cookie, and drop it from the address.
            query = {k: v for k, v in request.query.items() if k != auth.TOKEN_QUERY}
            response = web.HTTPFound(request.rel_url.with_query(query))
            response.set_cookie(auth.TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
            return response
        if not auth.request_allowed(token, request.headers, request.cookies):
            return web.json_response({"error": "this ComfyUI server is private to the process "
                                      "that started it: send its Discomfort token "
                                      f"({auth.TOKEN_HEADER} header), or open the editor "
                                      f"at /?{auth.TOKEN_QUERY}=<token>"}, status=401)
        return await handler(request)

    prompt_server.app.middlewares.insert(0, require_token)
    return True


def register_routes() -> bool:
    prompt_server = _prompt_server()
    if prompt_server is None:
        return False
    from aiohttp import web

    from ..remote import store_id
    from .value_routes import ValueRoutes, listen_addresses

    values = ValueRoutes(auth.server_token(), listen_addresses())
    values.register(prompt_server.routes)

    @prompt_server.routes.get("/discomfort/info")
    async def _info(_request):
        # store_id: a client with the same root path on another machine is not sharing ours;
        # values: whether a client that does not share it can keep its values here (and why not)
        return web.json_response(dict(server_info(), store_id=store_id(), values=values.info()))

    return True


def start_owner_watchdog(interval: float = 1.0) -> bool:
    """Stop this server once its owner (pid + start time from the environment) is gone."""
    pid = os.environ.get(OWNER_PID_ENV)
    if not pid or "comfy" not in sys.modules:
        return False
    started = os.environ.get(OWNER_START_ENV)
    owner = (int(pid), float(started) if started else None)

    def watch():
        while alive(*owner):
            time.sleep(interval)
        log.warning("discomfort: the process that started this server (pid %s) is gone; "
                    "stopping", owner[0])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watch, name="discomfort-owner-watchdog", daemon=True).start()
    return True
