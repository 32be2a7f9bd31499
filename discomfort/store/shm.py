"""POSIX shared-memory segments, without Python's resource tracker.

``multiprocessing.shared_memory`` registers every segment a process creates or attaches with
the resource tracker, which unlinks it when that process exits (even a mere reader, on Python
<= 3.12). Segment lifetime here belongs to the run's owner, so we open segments ourselves:
created exclusively with mode 0600, checked to be ours on open, and with their space reserved
up front (``posix_fallocate``) so a full ``/dev/shm`` is an error we can fall back from, never
a SIGBUS in the middle of a copy.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import stat
import sys

import _posixshmem  # CPython's own binding of shm_open/shm_unlink (used by multiprocessing)

from ..errors import UnsafeStoreError

PREFIX = "dsc_"
LINUX_SHM_DIR = "/dev/shm"


class SegmentFull(OSError):
    """No room for a segment of that size (shared-memory filesystem or address space)."""


def new_name(tag: str) -> str:
    # "/dsc_" + 8 + "_" + 10 = 24 characters: within macOS's 31.
    return f"/{PREFIX}{tag}_{secrets.token_hex(5)}"


def _reserve(fd: int, size: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                raise SegmentFull(exc.errno, f"no room for {size} bytes in {LINUX_SHM_DIR}") from exc
            raise
    else:
        os.ftruncate(fd, size)


def create(name: str, size: int) -> mmap.mmap:
    """Create a new segment of ``size`` bytes (never an existing one) and map it."""
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        _reserve(fd, size)
        return mmap.mmap(fd, size)
    except BaseException:
        unlink(name)
        raise
    finally:
        os.close(fd)


def attach(name: str) -> mmap.mmap:
    """Map an existing segment after checking that it is ours and private."""
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o600:
            raise UnsafeStoreError(
                f"shared-memory segment {name} is not private to us "
                f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); refused")
        return mmap.mmap(fd, st.st_size)
    finally:
        os.close(fd)


def unlink(name: str) -> None:
    try:
        _posixshmem.shm_unlink(name)
    except FileNotFoundError:
        pass


def list_tagged(tag: str) -> list[str]:
    """Names of the segments carrying ``tag`` (Linux only: macOS cannot list segments)."""
    try:
        entries = os.listdir(LINUX_SHM_DIR)
    except OSError:
        return []
    start = f"{PREFIX}{tag}_"
    return ["/" + entry for entry in entries if entry.startswith(start)]
