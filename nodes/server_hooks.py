"""What the node package adds to a running ComfyUI besides its nodes.

- ``GET /discomfort/info``: the handshake a connector checks before it trusts the server (the
  store root both sides must share, and the versions);
- a watchdog that stops a managed server when the process that started it is gone.

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

from ..discomfort import __version__
from ..discomfort.store import default_root
from ..discomfort.store.procs import alive

log = logging.getLogger("discomfort")
OWNER_PID_ENV = "DISCOMFORT_OWNER_PID"
OWNER_START_ENV = "DISCOMFORT_OWNER_START"


def server_info() -> dict:
    import cloudpickle

    torch = sys.modules.get("torch")
    return {
        "package": "discomfort",
        "version": __version__,
        "root": str(default_root()),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None),
        "cloudpickle": cloudpickle.__version__,
    }


def register_routes() -> bool:
    server_module = sys.modules.get("server")
    prompt_server = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    if prompt_server is None:
        return False
    from aiohttp import web

    @prompt_server.routes.get("/discomfort/info")
    async def _info(_request):
        return web.json_response(server_info())

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
