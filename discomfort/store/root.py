"""The private per-user directory that holds every run.

It must be ours alone (owner us, mode 0700, not a symlink): the ComfyUI server unpickles what
a run's files hold, so a directory anyone else can write to would be a code-execution hole.
It is never placed under a ComfyUI directory, which accepts uploads.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ..errors import UnsafeStoreError


def default_root() -> Path:
    explicit = os.environ.get("DISCOMFORT_ROOT")
    if explicit:
        return Path(explicit).expanduser().absolute()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "discomfort"
    return Path(tempfile.gettempdir()) / f"discomfort-{os.getuid()}"


def check_private_dir(path: Path) -> None:
    """Refuse a directory that is a symlink, not ours, or open to others."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeStoreError(f"{path} is not a plain directory; remove it or set DISCOMFORT_ROOT")
    if st.st_uid != os.geteuid():
        raise UnsafeStoreError(
            f"{path} belongs to uid {st.st_uid}, not to us ({os.geteuid()}); "
            "set DISCOMFORT_ROOT to a directory of your own")
    if st.st_mode & 0o077:
        raise UnsafeStoreError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):o}; it must be 700 "
            f"(run: chmod 700 {path})")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing, then check it is ours alone."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_private_dir(path)
    return path


def open_root(root: Path | None = None) -> Path:
    root = Path(root) if root is not None else default_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    return ensure_private_dir(root)
