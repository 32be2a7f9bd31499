"""One lock per run, exclusive across threads and processes, always with a deadline.

``flock`` locks belong to an open file description, so two lock objects on one path in one
process would block each other: a process keeps exactly one per path, paired with a
re-entrant thread lock. Never hold one across an ``await``.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import filelock

from ..errors import StoreLockTimeout

DEFAULT_TIMEOUT = 60.0


class RunLock:
    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.RLock()
        self._file_lock = filelock.FileLock(str(path), mode=0o600, thread_local=False)
        self._depth = 0

    @contextmanager
    def held(self, timeout: float = DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=max(timeout, 0)):
            raise self._timeout(timeout, "another thread of this process")
        try:
            if self._depth == 0:
                try:
                    self._file_lock.acquire(timeout=max(deadline - time.monotonic(), 0))
                except filelock.Timeout:
                    raise self._timeout(timeout, "another process") from None
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._file_lock.release()
        finally:
            self._thread_lock.release()

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
    """Drop the lock object of a deleted run."""
    with _registry_lock:
        _registry.pop(str(path), None)
