"""The warm server's state file: how ``python -m discomfort serve`` tells other commands where
its ComfyUI listens.

The file is ``<store root>/serve.json`` (the root is private, 0700; the file is written 0600,
atomically). It names the server's URL and token (the secret every request to a managed server carries:
hence 0600), its process (pid and start time, so a recycled pid is
not mistaken for it), the serve process that owns it, when it started, and the server settings
it was started with. A command trusts it only while that process runs, ``GET /system_stats``
answers, and ``GET /discomfort/info`` reports the same pid; anything else is stale.
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ServeStateError
from .store.procs import alive
from .store.root import check_private_dir, default_root, open_root

STATE_NAME = "serve.json"
CHECK_TIMEOUT_S = 2.0  # an idle server answers in milliseconds


def state_path(root: Path | None = None) -> Path:
    return Path(root if root is not None else default_root()) / STATE_NAME


def write_state(info: dict[str, Any], root: Path | None = None) -> Path:
    """Write the state file (0600) atomically: a reader sees the old file or the new one."""
    root = open_root(root)
    path = state_path(root)
    tmp = path.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_state(root: Path | None = None) -> dict[str, Any] | None:
    """The state file's content; None when there is none. Raises ``ServeStateError`` (a
    ``ValueError``, saying why) for a file that cannot be trusted or read."""
    path = state_path(root)
    try:
        check_private_dir(path.parent)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # UnsafeStoreError is a PermissionError; a symlink is ELOOP
        raise ServeStateError(f"cannot use {path}: {exc}") from None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.geteuid() or st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            raise ServeStateError(f"{path} is not a private file of ours (mode "
                                  f"{stat.S_IMODE(st.st_mode):o}, uid {st.st_uid})")
        try:
            info = json.load(f)
        except ValueError as exc:
            raise ServeStateError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str) \
            or not isinstance(info.get("pid"), int):
        raise ServeStateError(f"{path} does not name a server (url and pid)")
    return info


def remove_state(owner_pid: int | None = None, root: Path | None = None) -> bool:
    """Remove the state file; with ``owner_pid``, only if that serve process wrote it."""
    path = state_path(root)
    if owner_pid is not None:
        try:
            info = read_state(root)
        except ServeStateError:
            return False
        if info is None or info.get("serve_pid") != owner_pid:
            return False
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def why_not_live(info: dict[str, Any], timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """None when the server the state names runs and answers as itself; else why not."""
    from .server import http_json

    url, pid = info["url"].rstrip("/"), info["pid"]
    if not alive(pid, info.get("pid_started")):
        return f"its server (pid {pid}) is not running"
    auth = {"token": info["token"]} if info.get("token") else {}
    try:
        http_json(url + "/system_stats", timeout=timeout, **auth)
        answered = http_json(url + "/discomfort/info", timeout=timeout, **auth)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return f"{url} does not answer ({exc})"
    if not isinstance(answered, dict) or answered.get("pid") != pid:
        theirs = answered.get("pid") if isinstance(answered, dict) else None
        return f"{url} is another server (pid {theirs}, not {pid})"
    return None


@dataclass
class WarmServer:
    """The outcome of looking for a warm server: its state when live, else why it is not."""

    info: dict[str, Any] | None = None
    stale: str | None = None       # set when a state file exists but cannot be used

    @property
    def url(self) -> str | None:
        return self.info["url"] if self.info else None

    @property
    def token(self) -> str | None:
        """The server's Discomfort token (every request must carry it), if it has one."""
        return self.info.get("token") if self.info else None


def find_warm_server(root: Path | None = None, timeout: float = CHECK_TIMEOUT_S) -> WarmServer:
    """The live warm server of this store root, if any. A state file whose processes are all
    gone is removed (its serve was killed); other stale files are left for their serve."""
    try:
        info = read_state(root)
    except ServeStateError as exc:
        return WarmServer(stale=str(exc))
    if info is None:
        return WarmServer()
    reason = why_not_live(info, timeout)
    if reason is None:
        return WarmServer(info=info)
    serve_pid = info.get("serve_pid")
    serve_gone = not isinstance(serve_pid, int) or not alive(serve_pid, info.get("serve_started"))
    if serve_gone and not alive(info["pid"], info.get("pid_started")):
        remove_state(root=root)
    return WarmServer(stale=f"{state_path(root)} names {info['url']}, but {reason}")


def new_state(url: str, pid: int, pid_started: float | None, settings: dict[str, Any],
              config_path: str | None, token: str | None = None) -> dict[str, Any]:
    from .store.procs import me

    serve_pid, serve_started = me()
    return {"url": url, "token": token, "pid": pid, "pid_started": pid_started,
            "serve_pid": serve_pid,
            "serve_started": serve_started, "started_at": time.time(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": config_path,
            "settings": settings}
