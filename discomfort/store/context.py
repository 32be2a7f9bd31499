"""WorkflowContext: the run-scoped store shared by the user's process and the ComfyUI server.

A run is a private directory ``<root>/<CONTEXTS_DIR_NAME>/<run_id>/`` holding:

- ``run.json``   who owns the run (pid, start time), its RAM budget, segment tag and where its
                 index is; written once;
- ``data/``      values kept on disk; ``attach/`` one file per live re-attached handle.

The index (the receipt: every key's storage, size, pass_by, version and location) and the
run's lock live on a memory filesystem where there is one (see ``index.py``), else in the run
directory. Values live in POSIX shared memory (preferred) or in ``data/``. Nothing is lost on
a failure path: a save writes into storage the index does not point at yet, then flips the
index with an atomic rename, so a save that fails or is killed leaves the old value in place.

A handle is opened in one of three roles, each by its own constructor:
``WorkflowContext(...)`` creates a run and owns it (its shutdown deletes the run);
``WorkflowContext.open(run_id)`` is a user's re-attach (it reaps orphaned runs and keeps the
run alive while it lives); ``WorkflowContext.attach(run_id, contexts_dir_name)`` is a port
node's, in the ComfyUI server, for one brief operation of a run its owner is driving.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import (
    AlreadyExistsError,
    ContextClosedError,
    InvalidArgumentError,
    InvalidIdError,
    KeyNotFoundError,
    RefExportError,
    RunNotFoundError,
    StoreError,
    StoreMemoryError,
    UnstorableValueError,
)
from . import codec, procs, shm
from .config import GIB, MIB, StoreSettings, load_config
from .entry import DISK, SHM, Entry, freeze
from .ids import check_dir_name, check_run_id, check_unique_id, key_slug, new_run_id, run_tag
from .index import IN_RUN, RunIndex
from .reaper import delete_run, reap_orphans
from .root import check_private_dir, ensure_private_dir, open_root

PASS_BY = ("val", "ref")
EAGER_DIGEST_BYTES = 64 * 1024  # values this small get their fingerprint as they are saved
META = "run.json"
OWNER, USER, PORT = "owner", "user", "port"  # the roles a handle is opened in


def _digest(data=None, encoded: codec.Encoded | None = None) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    if encoded is not None:
        encoded.hash_into(hasher)
    else:
        hasher.update(data)
    return "b2:" + hasher.hexdigest()


def _write_json(path: Path, value: dict) -> None:
    """Atomically replace ``path`` (callers hold the run lock, so one temp name is enough)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(json.dumps(value, separators=(",", ":")).encode())
    os.replace(tmp, path)


class WorkflowContext:
    """A run's key/value store. See ``docs/context.md`` for the full reference."""

    def __init__(self, config_path: str | os.PathLike | None = None,
                 max_ram_gb: float | None = None, run_id: str | None = None,
                 create: bool = True):
        """The spec's constructor: a new run of our own, or (``create=False``) what
        ``WorkflowContext.open(run_id)`` gives."""
        if create:
            self._open(OWNER, run_id, config_path=config_path, max_ram_gb=max_ram_gb)
        else:
            if run_id is None:
                raise InvalidIdError("create=False re-attaches to a run: give its run_id")
            self._open(USER, run_id, config_path=config_path)

    @classmethod
    def open(cls, run_id: str, config_path: str | os.PathLike | None = None) -> WorkflowContext:
        """A user's re-attach to a live run (``WorkflowContext(run_id=..., create=False)``).
        Its values belong to the run; while this handle lives the run is not reaped even if
        its owner dies; its shutdown never deletes the run."""
        self = cls.__new__(cls)
        self._open(USER, run_id, config_path=config_path)
        return self

    @classmethod
    def attach(cls, run_id: str, contexts_dir_name: str = "contexts") -> WorkflowContext:
        """A port node's handle on a run, by the location its binding names, for one brief
        operation. Unlike ``open`` it neither reaps orphans nor registers as a live attacher:
        the run's owner is driving the prompt, so the run outlives the operation."""
        self = cls.__new__(cls)
        self._open(PORT, run_id, contexts_dir_name=contexts_dir_name)
        return self

    def _open(self, role: str, run_id: str | None, *, config_path=None, max_ram_gb=None,
              contexts_dir_name: str | None = None) -> None:
        # Ids first: a bad one is refused before any file is touched.
        if run_id is not None:
            check_run_id(run_id)
        if contexts_dir_name is not None:
            check_dir_name(contexts_dir_name)
        self._closed = True  # until open: a failed open has nothing to shut down
        self._maps: dict[str, mmap.mmap] = {}
        settings = StoreSettings()
        if role == PORT:  # the binding names the directory; no config is read in the server
            if contexts_dir_name is None:
                raise InvalidIdError("a port's attach() names the run's contexts directory")
            self._dir_name: str = contexts_dir_name
        else:
            settings = load_config(config_path)
            self._dir_name = settings.contexts_dir_name
        self._run_id = run_id or new_run_id()
        self._close_lock = threading.Lock()
        contexts = ensure_private_dir(open_root() / self._dir_name)
        if role != PORT:
            reap_orphans(contexts)  # users' opens clean up; a port node's attach() stays cheap
        self._dir = contexts / self._run_id
        self._owner = role == OWNER
        self._attach_file: Path | None = None
        self._meta: dict[str, Any]
        if role == OWNER:
            capacity = settings.ram_capacity_bytes(max_ram_gb)
            try:
                os.mkdir(self._dir, 0o700)
            except FileExistsError:
                raise AlreadyExistsError(
                    f"run {self._run_id!r} already exists; re-attach to it with "
                    f"WorkflowContext.open({self._run_id!r}) (or create=False)") from None
            pid, started = procs.me()
            os.mkdir(self._dir / "data", 0o700)
            os.mkdir(self._dir / "attach", 0o700)
            self._index = RunIndex.create(self._dir)
            self._meta = {"owner_pid": pid, "owner_start": started, "ram_capacity_bytes": capacity,
                          "tag": run_tag(self._dir_name, self._run_id), "format": 1,
                          "index": self._index.location}
            _write_json(self._dir / META, self._meta)  # last: a run without it is unfinished
        else:
            if not self._dir.is_dir():
                raise RunNotFoundError(
                    f"no run {self._run_id!r} under {contexts}: it was never created, "
                    "or its owner shut it down")
            check_private_dir(self._dir)
            try:
                self._meta = json.loads((self._dir / META).read_text())
            except FileNotFoundError:
                raise RunNotFoundError(
                    f"run {self._run_id!r} is still being created, or its creation failed") from None
            self._index = RunIndex.open(self._dir, self._meta.get("index", IN_RUN))
            if role == USER:  # keeps the run from being reaped while this handle lives
                pid, started = procs.me()
                self._attach_file = self._dir / "attach" / f"{pid}-{started}-{os.urandom(4).hex()}"
                os.close(os.open(self._attach_file, os.O_CREAT | os.O_WRONLY, 0o600))
        self._tag = self._meta["tag"]
        self._closed = False
        self._finalizer = weakref.finalize(
            self, _release, self._maps, self._index, self._dir if self._owner else None,
            self._attach_file, self._tag)

    # --- identity -------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def contexts_dir_name(self) -> str:
        return self._dir_name

    @property
    def is_owner(self) -> bool:
        """True for the handle that created the run (its shutdown deletes the run)."""
        return self._owner

    @property
    def path(self) -> Path:
        return self._dir

    def __repr__(self) -> str:
        role = "owner" if self._owner else "attached"
        state = "closed" if self._closed else role
        return f"<WorkflowContext run_id={self._run_id!r} {state}>"

    # --- data operations ------------------------------------------------------------------

    def save(self, unique_id: str, data: Any, use_ram: bool = True, pass_by: str = "val",
             *, stamp: str | None = None, source: dict | None = None) -> None:
        """Store ``data`` under ``unique_id``: RAM if ``use_ram`` and it fits, else disk.

        ``stamp`` (for output ports) records, in the same write, the prompt that saved it;
        ``source`` (plain JSON) says where a value comes from, for ``get_storage_info``.
        """
        check_unique_id(unique_id)
        if pass_by not in PASS_BY:
            raise InvalidArgumentError(f"pass_by must be 'val' or 'ref', got {pass_by!r}")
        if pass_by == "ref":
            if not isinstance(data, dict):
                raise UnstorableValueError(
                    f"pass_by='ref' stores a workflow or recipe (a dict), not {type(data).__name__}")
            try:
                encoded = codec.encode(data, as_json=True)
            except (TypeError, ValueError) as exc:
                raise UnstorableValueError(f"pass_by='ref' data must be plain JSON: {exc}") from None
        else:
            encoded = codec.encode(data)  # pickling errors surface here, before any change
        if source is not None:
            try:
                source = json.loads(json.dumps(source))
            except (TypeError, ValueError) as exc:
                raise UnstorableValueError(f"source must be plain JSON: {exc}") from None
        with self._locked() as index:
            old = index["keys"].get(unique_id)
            version = index["seq"] + 1
            entry = self._place_in_ram(index, old, encoded) if use_ram else None
            if entry is None:
                entry = self._place_on_disk(index, unique_id, encoded, version)
            entry.update(pass_by=pass_by, kind=encoded.kind,
                         size=encoded.size, version=version)
            if encoded.size <= EAGER_DIGEST_BYTES:  # cheaper now than an index rewrite later
                entry["digest"] = [version, _digest(encoded=encoded)]
            if encoded.shape is not None:
                entry.update(shape=encoded.shape, dtype=encoded.dtype, nbytes=encoded.payload.nbytes)
            entry.pop("source", None)
            if source is not None:
                entry["source"] = source
            index["seq"] = version
            index["keys"][unique_id] = entry
            if stamp is not None:
                index["stamps"][unique_id] = str(stamp)
            self._commit(index, self._storage_of(old, keep=entry))

    def load(self, unique_id: str) -> Any:
        """The value stored under ``unique_id`` (a copy of its own); a recipe for ref keys."""
        with self._locked() as index:
            return self._read_value(self._entry(index, unique_id))

    def delete(self, unique_id: str) -> None:
        """Remove ``unique_id`` and free its storage."""
        with self._locked() as index:
            entry = self._entry(index, unique_id)
            del index["keys"][unique_id]
            self._commit(index, self._storage_of(entry))

    def fingerprint(self, unique_id: str) -> str:
        """A digest of the stored bytes: equal values give equal fingerprints, in any run."""
        with self._locked() as index:
            return self._fingerprint(index, self._entry(index, unique_id))

    @contextmanager
    def locked(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold the run's lock across several operations of this thread (say, a load and a
        save that must not interleave with another process's). Other threads and processes
        wait, up to their deadline: keep it short, and never hold it across an ``await``."""
        if self._closed:
            raise ContextClosedError(f"run {self._run_id!r}: this context was shut down")
        with self._index.lock.held(timeout):
            yield

    # --- stamps: how an output port proves it ran in a given prompt ------------------------

    def set_stamp(self, unique_id: str, stamp: str) -> None:
        check_unique_id(unique_id)
        with self._locked() as index:
            index["stamps"][unique_id] = str(stamp)
            self._commit(index, [])

    def get_stamp(self, unique_id: str) -> str | None:
        with self._locked() as index:
            return index["stamps"].get(unique_id)

    # --- context management ---------------------------------------------------------------

    def entry(self, unique_id: str, *, fingerprint: bool = False) -> Entry:
        """What is stored under ``unique_id``, without loading it (KeyError if nothing).
        With ``fingerprint`` its digest is computed if not known yet (it hashes the value)."""
        with self._locked() as index:
            raw = self._entry(index, unique_id)
            if fingerprint:
                self._fingerprint(index, raw)
            return self._typed(index, unique_id, raw)

    def get_storage_info(self, unique_id: str) -> dict[str, Any] | None:
        """The spec's metadata dict (built from ``entry``), or None if nothing is stored."""
        with self._locked() as index:
            raw = index["keys"].get(unique_id)
            return None if raw is None else self._typed(index, unique_id, raw).storage_info()

    def list_keys(self) -> list[str]:
        with self._locked() as index:
            return list(index["keys"])

    def get_usage(self) -> dict[str, Any]:
        with self._locked() as index:
            ram = self._ram_usage(index)
            disk = sum(e["size"] for e in index["keys"].values() if e["storage"] == "disk")
            capacity = self._meta["ram_capacity_bytes"]
            return {
                "ram_usage_bytes": ram,
                "ram_capacity_bytes": capacity,
                "ram_usage_gb": ram / GIB,
                "ram_capacity_gb": capacity / GIB,
                "temp_disk_usage_bytes": disk,
                "temp_disk_usage_mb": disk / MIB,
                "stored_keys_count": len(index["keys"]),
            }

    # --- persistence ----------------------------------------------------------------------

    def export_data(self, unique_id: str, destination_path: str | os.PathLike,
                    overwrite: bool = False) -> None:
        """Write the value to ``destination_path`` with cloudpickle, then remove it here.

        Every check happens before anything changes: a refused export keeps the value.
        """
        dest = Path(destination_path)
        with self._locked() as index:
            entry = self._entry(index, unique_id)
            if entry["pass_by"] == "ref":
                raise RefExportError(
                    f"{unique_id!r} is pass-by-reference (a recipe that rebuilds a model inside "
                    "ComfyUI), not data; export the outputs computed from it instead")
            if not overwrite and (dest.exists() or dest.is_symlink()):
                raise AlreadyExistsError(f"{dest} exists; pass overwrite=True to replace it")
            payload = cloudpickle.dumps(self._read_value(entry))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.tmp")
            try:
                tmp.write_bytes(payload)
                if overwrite:
                    os.replace(tmp, dest)
                else:
                    os.link(tmp, dest)  # fails if dest appeared meanwhile: never clobbers
            finally:
                tmp.unlink(missing_ok=True)
            del index["keys"][unique_id]
            self._commit(index, self._storage_of(entry))

    # --- lifecycle ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Release this handle. The owner's shutdown deletes the run; an attached one's never does."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    def __enter__(self) -> WorkflowContext:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    # --- internals ------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        if self._closed:
            raise ContextClosedError(f"run {self._run_id!r}: this context was shut down")
        index_file = self._index
        try:
            with index_file.lock.held():
                try:
                    index = index_file.read()
                    if index.get("freeing"):
                        self._free(index["freeing"])  # a writer died between commit and free
                        index["freeing"] = []  # written with the next change: freeing twice is harmless
                    if index["pending"]:
                        # Storage of a save that failed or was killed before its commit.
                        stale = [item for item, _ in index["pending"]]
                        index["pending"] = []
                        self._commit(index, stale)
                    if index_file.changed:  # by another handle: it may have freed segments
                        self._prune_maps(index)
                    yield index
                except BaseException:
                    index_file.drop_cache()  # it may hold changes that were never written
                    raise
        except FileNotFoundError as exc:
            if not self._dir.exists():
                raise ContextClosedError(
                    f"run {self._run_id!r} no longer exists: its owner shut it down") from None
            raise StoreError(f"run {self._run_id!r} is damaged: {exc}") from exc

    def _commit(self, index: dict, release: list[str]) -> None:
        """Make ``index`` the truth, then free what it no longer points at. The same write
        records what is being freed, so storage of a writer killed in between is freed by the
        next locked operation (freeing twice is harmless: names are never reused)."""
        index["freeing"] = list(release)
        self._index.write(index)
        self._free(release)

    def _free(self, release: list[str]) -> None:
        for item in release:
            if item.startswith("/"):
                self._unmap(item)
                shm.unlink(item)
            else:
                (self._dir / item).unlink(missing_ok=True)

    def _entry(self, index: dict, unique_id: str) -> dict:
        entry = index["keys"].get(unique_id)
        if entry is None:
            known = ", ".join(map(repr, list(index["keys"])[:20])) or "none"
            raise KeyNotFoundError(f"{unique_id!r} is not in run {self._run_id!r} (stored: {known})")
        return entry

    def _fingerprint(self, index: dict, entry: dict) -> str:
        cached = entry.get("digest")
        if cached and cached[0] == entry["version"]:
            return cached[1]
        with self._blob(entry) as blob:
            digest = _digest(blob)
        entry["digest"] = [entry["version"], digest]
        self._commit(index, [])
        return digest

    def _typed(self, index: dict, unique_id: str, raw: dict) -> Entry:
        digest = raw.get("digest")
        shape = raw.get("shape")
        ram = raw["storage"] == "ram"
        return Entry(
            key=unique_id, kind=raw["kind"], pass_by=raw["pass_by"], storage=SHM if ram else DISK,
            location=raw["active"] if ram else str(self._dir / raw["file"]), size=raw["size"],
            version=raw["version"], shape=None if shape is None else tuple(shape),
            dtype=raw.get("dtype"), nbytes=raw.get("nbytes"),
            fingerprint=digest[1] if digest and digest[0] == raw["version"] else None,
            source=freeze(raw["source"]) if "source" in raw else None,
            stamp=index["stamps"].get(unique_id))

    def _ram_usage(self, index: dict) -> int:
        total = sum(sum(e["buffers"].values()) for e in index["keys"].values() if e["storage"] == "ram")
        return total + sum(size for item, size in index["pending"] if item.startswith("/"))

    def _place_in_ram(self, index: dict, old: dict | None, encoded: codec.Encoded) -> dict | None:
        """Write into a RAM buffer the index does not point at yet; None if RAM cannot hold it.

        A key keeps up to two buffers: the active one and the one before it. Saving a value of
        about the same size again (the loop case) writes into the idle one: no new memory.
        """
        size = encoded.size
        buffers = dict(old["buffers"]) if old and old["storage"] == "ram" else {}
        active = old["active"] if old and buffers else None
        idle = [name for name in buffers if name != active]
        target = next((n for n in idle if size <= buffers[n] <= 2 * size), None)
        if target is None:
            free_now = sum(buffers[n] for n in idle)
            usage = self._ram_usage(index) - free_now + size
            capacity = self._meta["ram_capacity_bytes"]
            if usage > capacity and active is not None and usage - buffers[active] <= capacity:
                idle.append(active)  # no room to keep the previous buffer for reuse: free it after
            elif usage > capacity:
                return None
            target = self._new_segment(index, size)
            if target is None:
                return None
            for name in idle:
                buffers.pop(name)  # released by the caller once the index stops naming them
            buffers[target] = size
        encoded.write_into(self._map(target))
        return {"storage": "ram", "active": target, "buffers": buffers}

    def _record_pending(self, index: dict, item: str, size: int) -> None:
        """Note storage about to be created, so a writer killed from here on leaves nothing
        untracked: the next locked operation frees what a dead writer left pending."""
        index["pending"].append([item, size])
        self._index.write(index)
        self._index.drop_cache()  # the caller drops the item again before its commit

    def _new_segment(self, index: dict, size: int) -> str | None:
        name = shm.new_name(self._tag)
        self._record_pending(index, name, size)
        try:
            self._maps[name] = shm.create(name, size)
        except (shm.SegmentFull, OSError):
            return None
        finally:
            index["pending"].pop()
        return name

    def _place_on_disk(self, index: dict, unique_id: str, encoded: codec.Encoded, version: int) -> dict:
        rel = f"data/{key_slug(unique_id)}.{version}.bin"
        path = self._dir / rel
        self._record_pending(index, rel, encoded.size)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as f:
                f.write(encoded.header)
                f.write(encoded.payload)
        except OSError as exc:
            path.unlink(missing_ok=True)
            index["pending"].pop()
            raise StoreMemoryError(
                f"could not store {unique_id!r} ({encoded.size} bytes): RAM was not used or full, "
                f"and writing {path} failed: {exc}") from exc
        index["pending"].pop()
        return {"storage": "disk", "file": rel}

    @staticmethod
    def _storage_of(entry: dict | None, keep: dict | None = None) -> list[str]:
        """What ``entry`` holds that ``keep`` (its successor) does not."""
        if entry is None:
            return []
        held = list(entry["buffers"]) if entry["storage"] == "ram" else [entry["file"]]
        kept = set(keep.get("buffers", ())) | {keep.get("file")} if keep else set()
        return [item for item in held if item not in kept]

    def _read_value(self, entry: dict) -> Any:
        with self._blob(entry) as blob:
            return codec.decode(blob)

    @contextmanager
    def _blob(self, entry: dict):
        if entry["storage"] == "ram":
            mm, owned = self._map(entry["active"]), False
        else:
            with open(self._dir / entry["file"], "rb") as f:
                # copy-on-write, never written: a writable view lets torch copy out of it
                mm, owned = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY), True
        view = memoryview(mm)
        part = view[:entry["size"]]
        try:
            yield part
        finally:
            _quietly_close(part.release, view.release, *([mm.close] if owned else []))

    def _map(self, name: str) -> mmap.mmap:
        mm = self._maps.get(name)
        if mm is None:
            mm = self._maps[name] = shm.attach(name)
        return mm

    def _unmap(self, name: str) -> None:
        mm = self._maps.pop(name, None)
        if mm is not None:
            _quietly_close(mm.close)

    def _prune_maps(self, index: dict) -> None:
        """Close mappings of segments another process has freed (they would pin its memory)."""
        if not self._maps:
            return
        live = {name for e in index["keys"].values() if e["storage"] == "ram" for name in e["buffers"]}
        for name in [n for n in self._maps if n not in live]:
            self._unmap(name)


def _release(maps: dict, index: RunIndex, owned_dir: Path | None, attach_file: Path | None,
             tag: str) -> None:
    """Finalizer of a handle: unmap; the owner deletes the run, an attacher only unregisters."""
    _quietly_close(*(mm.close for mm in maps.values()))
    maps.clear()
    index.close()
    if attach_file is not None:
        attach_file.unlink(missing_ok=True)
    if owned_dir is not None:
        delete_run(owned_dir, tag)


def _quietly_close(*closers) -> None:
    """Close buffers; one still viewed (say, by a traceback's frame) goes when the view does."""
    for close in closers:
        try:
            close()
        except BufferError:
            pass
