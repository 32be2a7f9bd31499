"""One lock per run, exclusive across threads and processes, always with a deadline.

``flock`` locks belong to an open file description, so two lock objects on one path in one
process would block each other: a process keeps exactly one per path, with its descriptor
open (reopening the file on every acquire, as filelock does, costs ~60x more), paired with a
re-entrant thread lock. Never hold one across an ``await``.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreLockTimeout

DEFAULT_TIMEOUT = 60.0
_FIRST_WAIT, _LONGEST_WAIT = 0.0005, 0.05


class RunLock:
    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.RLock()
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file _fd locks
        self._depth = 0

    @contextmanager
    def held(self, timeout: float = DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=max(timeout, 0)):
            raise self._timeout(timeout, "another thread of this process")
        try:
            if self._depth == 0:
                self._acquire_file(deadline, timeout)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _acquire_file(self, deadline: float, timeout: float) -> None:
        wait = _FIRST_WAIT
        while True:
            if self._fd is None:  # FileNotFoundError here: the run is gone
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                mine = os.fstat(self._fd)
                self._ident = (mine.st_dev, mine.st_ino)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise self._timeout(timeout, "another process") from None
                time.sleep(min(wait, max(deadline - time.monotonic(), 0)))
                wait = min(wait * 2, _LONGEST_WAIT)
                continue
            if self._is_current():
                return
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # the run was deleted (and maybe recreated)
            self.close()
            if not self.path.parent.exists():
                raise FileNotFoundError(self.path)

    def _is_current(self) -> bool:
        """Is our descriptor still the file at ``path``? (Not if the run was deleted.)"""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        return self._ident == (on_disk.st_dev, on_disk.st_ino)  # our open file pins _ident

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._ident = None

    def _timeout(self, timeout: float, holder: str) -> StoreLockTimeout:
        return StoreLockTimeout(
            f"could not lock {self.path} within {timeout:g} s: {holder} holds it. "
            "If a process hangs while holding it, stop that process.")


_registry: dict[str, RunLock] = {}
_registry_lock = threading.Lock()


def run_lock(path: Path) -> RunLock:
    with _registry_lock:
        lock = _registry.get(str(path))
        if lock is None:
            lock = _registry[str(path)] = RunLock(path)
        return lock


def forget(path: Path) -> None:
    """Drop the lock of a deleted run (a thread still holding it keeps its own reference)."""
    with _registry_lock:
        lock = _registry.pop(str(path), None)
    if lock is not None:
        with lock._thread_lock:
            lock.close()


def _reset_after_fork() -> None:
    """A forked child shares its parent's open lock files, and with them the parent's locks:
    every lock object (context handles inherited by the child hold them too) starts afresh."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for lock in _registry.values():
        if lock._fd is not None:
            os.close(lock._fd)
        lock._fd, lock._ident, lock._depth, lock._thread_lock = None, None, 0, threading.RLock()


os.register_at_fork(after_in_child=_reset_after_fork)
