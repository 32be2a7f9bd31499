"""Validation of the ids that name things in the store.

``run_id`` and the contexts directory name become path components, so they have a strict
character set. ``unique_id`` is whatever the user typed in the editor; it never becomes a path
(storage names are derived from its hash).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from ..errors import InvalidIdError

RUN_ID_MAX = 64
UNIQUE_ID_MAX = 128
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_component(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{what} is empty; give a name like 'run-1'")
    if len(value) > limit:
        raise InvalidIdError(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    if not _SAFE_COMPONENT.fullmatch(value) or value.endswith(".") or ".." in value:
        raise InvalidIdError(
            f"{what} {value!r} is not allowed: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit (it names a directory)")
    return value


def check_run_id(run_id: object) -> str:
    return _check_component(run_id, "run_id", RUN_ID_MAX)


def check_dir_name(name: object) -> str:
    return _check_component(name, "CONTEXTS_DIR_NAME", RUN_ID_MAX)


def new_run_id() -> str:
    return "run-" + secrets.token_hex(8)


def check_unique_id(unique_id: object) -> str:
    if not isinstance(unique_id, str):
        raise InvalidIdError(f"unique_id must be a str, not {type(unique_id).__name__}")
    if not unique_id or len(unique_id) > UNIQUE_ID_MAX:
        raise InvalidIdError(
            f"unique_id must be 1 to {UNIQUE_ID_MAX} characters, got {len(unique_id)}")
    if not unique_id.isprintable():
        raise InvalidIdError(f"unique_id {unique_id!r} has non-printable characters")
    return unique_id


def key_slug(unique_id: str) -> str:
    """A file-name-safe, fixed-length stand-in for a unique_id."""
    return hashlib.blake2b(unique_id.encode(), digest_size=10).hexdigest()


def run_tag(dir_name: str, run_id: str) -> str:
    """Short tag carried by a run's segment names, so orphans can be matched to their run."""
    return hashlib.blake2b(f"{dir_name}/{run_id}".encode(), digest_size=4).hexdigest()
