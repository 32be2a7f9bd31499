"""Cleanup of runs whose owner died without shutting them down.

Every open of a context looks over its contexts directory. A run is an orphan when its owner
process, recorded as (pid, start time), is gone and no live re-attached handle still uses it;
its segments (those the index names, plus, on Linux, any carrying the run's tag) and its
directory are deleted. A run whose lock is held is skipped: someone is using it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import StoreLockTimeout
from . import procs, shm
from .locks import forget, run_lock

UNFINISHED_GRACE_S = 60  # a run directory without run.json is still being created


def _attachers_alive(run_dir: Path) -> bool:
    for entry in (run_dir / "attach").glob("*"):
        try:
            pid, started, _ = entry.name.split("-")
            if procs.alive(int(pid), float(started) if started != "None" else None):
                return True
        except ValueError:
            continue
        entry.unlink(missing_ok=True)  # a dead attacher's leftover
    return False


def _is_orphan(run_dir: Path) -> bool:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError:
        return time.time() - run_dir.stat().st_mtime > UNFINISHED_GRACE_S
    except ValueError:
        return True
    if procs.alive(meta["owner_pid"], meta["owner_start"]):
        return False
    return not _attachers_alive(run_dir)


def delete_run(run_dir: Path, tag: str | None, timeout: float = 60.0) -> None:
    """Unlink every segment of the run and remove its directory, under its lock."""
    if not run_dir.is_dir():
        return
    lock = run_lock(run_dir / "lock")
    with lock.held(timeout):
        names: set[str] = set()
        try:
            index = json.loads((run_dir / "index.json").read_text())
            for entry in index["keys"].values():
                names.update(entry.get("buffers", ()))
            names.update(item for item, _ in index["pending"] if item.startswith("/"))
            names.update(item for item in index.get("freeing", []) if item.startswith("/"))
        except (OSError, ValueError, KeyError):
            pass
        if tag:
            names.update(shm.list_tagged(tag))
        for name in names:
            shm.unlink(name)
        shutil.rmtree(run_dir, ignore_errors=True)
    forget(run_dir / "lock")


def reap_orphans(contexts_dir: Path) -> list[str]:
    """Delete orphaned runs under ``contexts_dir``; returns their run_ids."""
    reaped = []
    for run_dir in contexts_dir.iterdir():
        if run_dir.is_symlink() or not run_dir.is_dir():
            continue
        try:
            if not _is_orphan(run_dir):
                continue
            tag = None
            try:
                tag = json.loads((run_dir / "run.json").read_text())["tag"]
            except (OSError, ValueError, KeyError):
                pass
            delete_run(run_dir, tag, timeout=0)
            reaped.append(run_dir.name)
        except (StoreLockTimeout, FileNotFoundError):
            continue  # in use, or already gone
    return reaped
