"""Cleanup of runs whose owner died without shutting them down.

Every open of a context looks over its contexts directory. A run is an orphan when its owner
process, recorded as (pid, start time), is gone and no live re-attached handle still uses it;
its segments (those its index names, plus, on Linux, any carrying the run's tag), its
directory and its index's memory directory are deleted. A run whose lock is held is skipped:
someone is using it. Memory directories left by runs or roots deleted some other way go too.
The index's layout is ``index.py``'s business: this module only asks it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import StoreError, StoreLockTimeout
from . import procs, shm
from .index import RunIndex, remove_leftovers
from .locks import forget

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


def _read_meta(run_dir: Path) -> dict | None:
    """run.json, or None while it is missing (a run being created); ValueError if corrupt."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError:
        return None
    if not isinstance(meta, dict):
        raise ValueError("run.json is not an object")
    return meta


def _is_orphan(run_dir: Path, meta: dict | None) -> bool:
    if meta is None:
        return time.time() - run_dir.stat().st_mtime > UNFINISHED_GRACE_S
    try:
        if procs.alive(meta["owner_pid"], meta["owner_start"]):
            return False
    except (KeyError, TypeError, ValueError):
        return True
    return not _attachers_alive(run_dir)


def delete_run(run_dir: Path, tag: str | None, timeout: float = 60.0,
               meta: dict | None = None) -> None:
    """Unlink every segment of the run and remove its directories, under its lock."""
    if not run_dir.is_dir():
        return
    if meta is None:
        try:
            meta = _read_meta(run_dir)
        except (OSError, ValueError):
            meta = None
    try:
        index = RunIndex.find(run_dir, meta)
    except StoreError:  # run.json names a place this process has not got: the run dir goes
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    if not index.dir.is_dir():  # its memory directory is gone (a reboot): nothing to lock
        for name in shm.list_tagged(tag) if tag else ():
            shm.unlink(name)
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    with index.lock.held(timeout):
        names = index.stored_segments()
        if tag:
            names.update(shm.list_tagged(tag))
        for name in names:
            shm.unlink(name)
        shutil.rmtree(run_dir, ignore_errors=True)
        index.remove()
    forget(index.lock.path)


def reap_orphans(contexts_dir: Path) -> list[str]:
    """Delete orphaned runs under ``contexts_dir``; returns their run_ids."""
    reaped = []
    for run_dir in contexts_dir.iterdir():
        if run_dir.is_symlink() or not run_dir.is_dir():
            continue
        try:
            try:
                meta = _read_meta(run_dir)
                orphan = _is_orphan(run_dir, meta)
            except ValueError:  # a corrupt run.json: nobody can use the run
                meta, orphan = None, True
            if not orphan:
                continue
            tag = meta.get("tag") if meta else None
            delete_run(run_dir, tag if isinstance(tag, str) else None, timeout=0, meta=meta)
            reaped.append(run_dir.name)
        except (StoreLockTimeout, FileNotFoundError):
            continue  # in use, or already gone
    remove_leftovers(contexts_dir)
    return reaped
