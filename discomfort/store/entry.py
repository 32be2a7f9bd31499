"""What the store knows about one stored value, as a typed, read-only record.

Callers (the orchestrator, the port nodes) ask questions of a stored value without loading
it: is it a recipe, a tensor of what shape, how big, where does it come from. They get an
``Entry``, never the index's raw dicts, so the index's layout stays the store's own business.
``get_storage_info`` (the spec's public dict) is built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SHM, DISK = "shm", "disk"
_SPEC_STORAGE = {SHM: "ram", DISK: "disk"}  # the spec's words for get_storage_info


@dataclass(frozen=True)
class Entry:
    """One key of a run, as of the moment it was read (a later save makes a new one)."""

    key: str
    kind: str                 # how it was encoded: "torch", "numpy", "json" (refs), "pickle"
    pass_by: str              # "val" or "ref"
    storage: str              # SHM (a POSIX shared-memory segment) or DISK (a file in the run)
    location: str             # the segment's name, or the file's absolute path
    size: int                 # bytes stored: header and payload
    version: int              # increases on every save in the run
    shape: tuple[int, ...] | None = None   # tensors and arrays only
    dtype: str | None = None               # tensors and arrays only ("float32", "bfloat16"...)
    nbytes: int | None = None              # tensors and arrays: the raw payload's size
    fingerprint: str | None = None         # known digest of the bytes (None: not computed yet)
    source: Mapping[str, Any] | None = field(default=None, hash=False)  # where it comes from
    stamp: str | None = None               # the last prompt that wrote this key (output ports)

    @property
    def is_ref(self) -> bool:
        return self.pass_by == "ref"

    @property
    def is_array(self) -> bool:
        """A tensor or numpy array: ``shape`` and ``dtype`` describe it without a load."""
        return self.shape is not None

    def storage_info(self) -> dict[str, Any]:
        """The spec's ``get_storage_info`` dict (plus version, kind, shape, dtype, source)."""
        info: dict[str, Any] = {"storage_type": _SPEC_STORAGE[self.storage], "size": self.size,
                                "pass_by": self.pass_by, "version": self.version,
                                "kind": self.kind}
        if self.shape is not None:
            info.update(shape=list(self.shape), dtype=self.dtype)
        if self.source is not None:
            info["source"] = thaw(self.source)
        info["shm_name" if self.storage == SHM else "path"] = self.location
        return info


def freeze(value: Any) -> Any:
    """A read-only copy of plain JSON (so an Entry's ``source`` cannot be edited in place)."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON again from what :func:`freeze` made (to send or store it)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
