"""A run's index (the receipt) and its lock, kept on a memory filesystem where there is one.

Every store operation reads the index under the run's lock, and every save rewrites it with an
atomic rename. On ext4 that rename costs ~0.5 ms, more than saving and loading a small value
takes in all; on tmpfs it costs microseconds. So on Linux the index and the lock live in a
private directory on /dev/shm, ``/dev/shm/discomfort-<uid>/<root tag>/<contexts>/<run_id>/``,
while values that fall back to disk stay on disk, in the run's directory under the root.

The owner records where the index is in run.json (``"index": "memory"`` or ``"run"``), so every
process that opens the run uses the same one, whatever it finds itself. A memory directory that
is not ours (someone else made ``/dev/shm/discomfort-<uid>``) is refused like the root: the
owner then keeps the index in the run, with a warning; an attacher raises.

Reads are cached: a handle keeps the index file it last read or wrote open, with its parsed
content. The file is never changed in place (a write renames a new file over it), so while the
path names the file we hold open, its content is what we parsed: one stat() instead of an
open, a read and a parse.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from ..errors import DiscomfortWarning, StoreError, StoreLockTimeout, UnsafeStoreError
from .locks import forget, run_lock
from .root import check_private_dir, ensure_private_dir

MEMORY, IN_RUN = "memory", "run"
LINUX_MEMORY_FS = "/dev/shm"
INDEX_NAME, LOCK_NAME, ROOT_MARK = "index.json", "lock", "root"
LEFTOVER_GRACE_S = 60  # a memory directory whose run directory is missing may be a run being made
SWEEP_EVERY_S = 60  # how often an open looks over every root's memory directory (~0.1 ms each)
SWEPT = ".swept"


def empty() -> dict:
    return {"seq": 0, "keys": {}, "stamps": {}, "pending": [], "freeing": []}


def storage_names(data: dict) -> set[str]:
    """Every segment (``/name``) and run-relative file the index ``data`` points at: its keys'
    buffers and files, storage a writer set up but did not commit, storage being freed."""
    names: set[str] = set()
    for entry in data.get("keys", {}).values():
        names.update(entry.get("buffers", ()))
        if entry.get("file"):
            names.add(entry["file"])
    names.update(item for item, _ in data.get("pending", ()))
    names.update(data.get("freeing", ()))
    return names


def memory_base() -> Path | None:
    """This user's directory on the memory filesystem; None where there is none (macOS)."""
    if not sys.platform.startswith("linux") or not os.path.isdir(LINUX_MEMORY_FS):
        return None
    return Path(LINUX_MEMORY_FS) / f"discomfort-{os.geteuid()}"


def _root_tag(root: Path) -> str:
    """Names a root's memory directory: its real path and identity (a root deleted and made
    again, as tests do, gets a new one, so nothing stale is found there)."""
    real = os.path.realpath(root)
    st = os.stat(real)
    return hashlib.blake2b(f"{real}\0{st.st_dev}\0{st.st_ino}".encode(), digest_size=8).hexdigest()


def memory_dir(run_dir: Path) -> Path | None:
    """Where ``<root>/<contexts>/<run_id>`` keeps its index in memory."""
    base = memory_base()
    if base is None:
        return None
    return base / _root_tag(run_dir.parent.parent) / run_dir.parent.name / run_dir.name


class RunIndex:
    """The index of one run and the lock that guards it. Read and write it only while
    ``lock`` is held; ``read`` returns the cached dict, which callers may change and then
    ``write``. An exception between a change and its write must call ``drop_cache``."""

    def __init__(self, run_dir: Path, location: str):
        if location not in (MEMORY, IN_RUN):
            raise StoreError(f"run {run_dir.name!r}: unknown index location {location!r} in run.json")
        self.run_dir = run_dir
        self.location = location
        where = memory_dir(run_dir) if location == MEMORY else run_dir
        if where is None:
            raise StoreError(f"run {run_dir.name!r} keeps its index in {LINUX_MEMORY_FS}, "
                             "which this process cannot see")
        self.dir = where
        self.path = str(where / INDEX_NAME)
        self._tmp = str(where / f".{INDEX_NAME}.tmp")
        self.lock = run_lock(where / LOCK_NAME)
        self._fd: int | None = None                   # the index file we last read or wrote
        self._ident: tuple[int, int] | None = None    # its (st_dev, st_ino)
        self._data: dict | None = None                # its parsed content
        self.changed = True  # did the last read find an index this handle had not seen?

    # --- making and finding ------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path) -> RunIndex:
        """The empty index of a new run (``run_dir`` just made): in memory when possible."""
        location = IN_RUN
        mem = memory_dir(run_dir)
        if mem is not None:
            try:
                _make_memory_dir(mem, run_dir.parent.parent)
                location = MEMORY
            except (UnsafeStoreError, OSError) as exc:
                warnings.warn(DiscomfortWarning(
                    f"run {run_dir.name!r} keeps its index on disk (slower): {exc}"), stacklevel=3)
        index = cls(run_dir, location)
        index.write(empty())
        return index

    @classmethod
    def open(cls, run_dir: Path, location: str) -> RunIndex:
        """The index of an existing run, where its run.json says; refused unless private."""
        index = cls(run_dir, location)
        if location == MEMORY:
            check_private_dir(index.dir.parents[2])  # this user's memory base
            try:
                check_private_dir(index.dir)
            except FileNotFoundError:
                raise StoreError(f"run {run_dir.name!r} has lost its index ({index.dir} is "
                                 "gone: was the machine restarted?)") from None
        return index

    @classmethod
    def find(cls, run_dir: Path, meta: dict | None) -> RunIndex:
        """For cleanup: the index of a run whose run.json (``meta``) may be missing."""
        if meta is not None:
            return cls(run_dir, meta.get("index", IN_RUN))
        mem = memory_dir(run_dir)
        return cls(run_dir, MEMORY if mem is not None and mem.is_dir() else IN_RUN)

    # --- reading and writing (under the lock) ------------------------------------------------

    def read(self) -> dict:
        """The index as it is now (FileNotFoundError when the run is gone)."""
        st = os.stat(self.path)
        if self._data is not None and self._ident == (st.st_dev, st.st_ino):
            self.changed = False
            return self._data
        self.changed = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            data = json.loads(b"".join(chunks))
            mine = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._keep(fd, mine, data)
        return data

    def write(self, data: dict) -> None:
        """Make ``data`` the index, atomically (one temp name: writers hold the lock)."""
        body = json.dumps(data, separators=(",", ":")).encode()
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.replace(self._tmp, self.path)
            mine = os.fstat(fd)
        except BaseException:
            os.close(fd)
            self.drop_cache()
            raise
        self._keep(fd, mine, data)

    def drop_cache(self) -> None:
        """Forget the parsed index: the next read parses the file again."""
        self._data = None

    def _keep(self, fd: int, st: os.stat_result, data: dict) -> None:
        # Holding the file open keeps its inode number from being reused by a later index.
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._ident, self._data = fd, (st.st_dev, st.st_ino), data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._ident = self._data = None

    # --- cleanup -----------------------------------------------------------------------------

    def stored_segments(self) -> set[str]:
        """For cleanup (the lock held): every segment this index points at; none if it is
        unreadable or gone."""
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
            return {name for name in storage_names(data) if name.startswith("/")}
        except (OSError, ValueError, AttributeError, TypeError):
            return set()

    def remove(self) -> None:
        """Delete the index's memory directory (the run's directory is the caller's)."""
        self.close()
        if self.location == MEMORY:
            shutil.rmtree(self.dir, ignore_errors=True)


def _make_memory_dir(mem: Path, root: Path) -> None:
    """``<base>/<root tag>/<contexts>/<run_id>``, each level ours alone; a leftover of a run
    of the same id (being deleted, or never cleaned) is waited for and removed first."""
    tag_dir = mem.parent.parent
    ensure_private_dir(tag_dir.parent)
    ensure_private_dir(tag_dir)
    mark = tag_dir / ROOT_MARK
    if not mark.exists():  # which root this is, so leftovers of a deleted root can be found
        tmp = tag_dir / f".{ROOT_MARK}.{os.getpid()}.tmp"
        tmp.write_text(os.path.realpath(root))
        os.replace(tmp, mark)
    ensure_private_dir(mem.parent)
    try:
        os.mkdir(mem, 0o700)
    except FileExistsError:
        _remove_locked(mem, timeout=60.0)
        os.mkdir(mem, 0o700)


def _remove_locked(mem: Path, timeout: float) -> None:
    lock = run_lock(mem / LOCK_NAME)
    try:
        with lock.held(timeout):
            shutil.rmtree(mem, ignore_errors=True)
    except FileNotFoundError:
        pass  # removed meanwhile by whoever held it
    forget(mem / LOCK_NAME)


def remove_leftovers(contexts_dir: Path) -> list[Path]:
    """Memory directories nothing uses any more: those of this root's runs whose run directory
    is gone, and those of roots that no longer exist. Returns what was removed."""
    base = memory_base()
    if base is None or not base.is_dir():
        return []
    removed = []
    try:
        check_private_dir(base)
    except (UnsafeStoreError, OSError):
        return []
    mine = base / _root_tag(contexts_dir.parent) / contexts_dir.name
    now = time.time()
    if mine.is_dir():
        for mem in mine.iterdir():
            if (contexts_dir / mem.name).exists():
                continue
            try:
                if now - mem.stat().st_mtime < LEFTOVER_GRACE_S:
                    continue
                _remove_locked(mem, timeout=0)
            except (StoreLockTimeout, OSError):
                continue
            removed.append(mem)
    swept = base / SWEPT
    try:
        if now - swept.stat().st_mtime < SWEEP_EVERY_S:
            return removed  # other roots were looked over a moment ago
    except FileNotFoundError:
        pass
    os.close(os.open(swept, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    os.utime(swept)
    for tag_dir in base.iterdir():
        if tag_dir.name == SWEPT:
            continue
        try:
            root = (tag_dir / ROOT_MARK).read_text()
            if os.path.isdir(root) and _root_tag(Path(root)) == tag_dir.name:
                continue
        except FileNotFoundError:
            if now - tag_dir.stat().st_mtime < LEFTOVER_GRACE_S:
                continue
        except OSError:
            continue
        shutil.rmtree(tag_dir, ignore_errors=True)
        removed.append(tag_dir)
    return removed
