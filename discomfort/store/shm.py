"""POSIX shared-memory segments, opened through CPython's own shm_open/shm_unlink binding.

What the store needs of a segment:
- created exclusively (``O_EXCL``) with mode 0600;
- checked to be ours and private, on the very descriptor we map, before it is used;
- its space reserved up front (``posix_fallocate``), so a full ``/dev/shm`` is an error we
  can fall back from, never a SIGBUS in the middle of a copy;
- unlinked by name, only by us (no resource tracker), even when it is empty: a writer killed
  between ``shm_open`` and the reservation leaves a 0-byte segment that must still be freed;
- no descriptor held per mapping: a handle maps one segment per key and keeps the mappings.

``multiprocessing.shared_memory.SharedMemory`` cannot give all of that on any Python, so every
version takes the one path below. Up to 3.12 it registers each segment it creates or attaches
with the resource tracker, which unlinks it when that process exits (even a mere reader).
3.13's ``SharedMemory(name=..., create=..., size=..., track=False)`` fixes that, and it does
create with ``O_CREAT | O_EXCL`` and mode 0600 as we do; but (CPython 3.13's
``Lib/multiprocessing/shared_memory.py``):
- it sizes a new segment with ``ftruncate`` only, and its descriptor is private (``_fd``): the
  space cannot be reserved, and the sparse segment SIGBUSes when ``/dev/shm`` fills up;
- it maps whatever the name opens, with no owner or mode check; without a public descriptor
  the check could only be made by path, after the open (racy), and not at all on macOS,
  which has no ``/dev/shm``;
- it unlinks only through an attached instance, and attaching an empty segment fails
  (``ValueError: cannot mmap an empty file``): a killed writer's leftover could not be freed;
- it keeps its descriptor open as long as the segment is mapped: one per key, against
  ``RLIMIT_NOFILE``.
``_posixshmem`` is what ``multiprocessing.shared_memory`` itself is built on; its
``shm_open(path, flags, mode)`` and ``shm_unlink(path)`` are unchanged since Python 3.8.
"""

from __future__ import annotations

import _posixshmem  # CPython's binding of shm_open/shm_unlink: see the docstring for why
import errno
import mmap
import os
import secrets
import stat
import sys

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
