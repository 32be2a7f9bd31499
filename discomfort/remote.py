"""A run's values on a ComfyUI server that does not share our store (another machine).

The node package serves a small versioned HTTP API under ``/discomfort/v1`` (see
``comfy_nodes/value_routes.py``); this module is its wire format, shared by both sides, and
the client the orchestrator drives. The user's ``context`` stays local: before a prompt is
queued, the inputs it reads through port nodes are uploaded into a run on the server (only
those whose fingerprint the server's run does not already hold), and after it the values its
output ports wrote are fetched back into the context.

On the wire, never a pickle, in either direction:

- tensors and numpy arrays: ``Content-Type: application/x-discomfort-array``, a body of
  ``u32 little-endian header length | JSON header | raw bytes``; the header is
  ``{"kind": "torch"|"numpy", "dtype", "shape", "n"}`` (``n``: the payload's byte count),
  streamed in chunks both ways and rebuilt straight into the value's own memory;
- a list or dict with tensors or arrays inside (a LATENT ``{"samples": tensor, ...}``, a list
  of images): ``Content-Type: application/x-discomfort-tree``, a body of ``u32 little-endian
  skeleton length | JSON skeleton | the arrays' raw bytes, one after the other``; the skeleton
  is ``{"kind": "tree", "value": ..., "arrays": [header, ...]}`` where ``value`` is the value
  as JSON with each array replaced by a placeholder ``{"$array": i}`` (each ``i`` exactly
  once) and ``arrays[i]`` is array ``i``'s header as above. Every size is in the skeleton, so
  a receiver checks its limits on the whole tree before any payload is read. The skeleton is
  at most 16 MiB and names at most 4096 arrays; a dict key ``"$array"`` is reserved. Tuples
  come back as lists;
- plain values (str, int, float, bool, None, and lists / dicts of those):
  ``application/json``, ``{"kind": "json", "value": ...}``;
- recipes (pass-by-reference values): ``{"kind": "ref", "value": {...}, "source": {...}}``.

Any other body or type is refused, naming the key, the path inside the value of what cannot
travel (``lat["extra"][2]``) and what is allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import struct
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np

from .errors import ComfyServerError, RemoteStoreError, RemoteValueError, RunExpiredError
from .store import codec
from .store.entry import thaw
from .store.root import open_root

log = logging.getLogger("discomfort")

API = "/discomfort/v1"
ARRAY_TYPE = "application/x-discomfort-array"
JSON_TYPE = "application/json"
MAX_HEADER = 64 * 1024        # an array's JSON header (its shape) is far smaller
MAX_DIMS = 64
CHUNK = 4 * 1024 * 1024       # bytes per write when streaming an array
DEFAULT_LEASE_S = 60.0        # a run whose client does not renew it for this long is deleted
STORE_ID_FILE = "store-id"
TREE_TYPE = "application/x-discomfort-tree"
MAX_SKELETON = 16 * 1024 * 1024  # a tree's JSON skeleton (its arrays' bytes come after it)
MAX_ARRAYS = 4096                # arrays in one tree
ALLOWED = ("torch tensors, numpy arrays (numbers or booleans), plain JSON (str, int, float, "
           "bool, None), and lists / dicts (str keys) of those, tensors included (a LATENT, a "
           "list of images)")
PLACEHOLDER = "$array"
TREE_FORMAT = ('a tree (a list or dict holding arrays) is sent as a u32 skeleton length, a JSON '
               'skeleton {"kind": "tree", "value": ..., "arrays": [array headers]} where each array '
               'is {"$array": i}, then the arrays\' raw bytes in order')
TORCH_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16", "complex64", "complex128",
                          "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64",
                          "bool"})
_LEN = struct.Struct("<I")


# --- the store's identity: shared or not ------------------------------------------------------

def store_id(root: Path | None = None) -> str:
    """A random id kept in the store root, made on first use: two processes share a store
    exactly when they see the same id (the same path on two machines is two stores)."""
    root = open_root(root)
    path = root / STORE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    tmp = root / f".{STORE_ID_FILE}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w") as f:
        f.write(secrets.token_hex(16))
    try:
        os.link(tmp, path)  # never replaces an id another process made meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


# --- the wire format (both sides) -------------------------------------------------------------

def _torch():
    import torch

    return torch


def is_array(value: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and type(value) is torch.Tensor:
        return True
    return type(value) is np.ndarray and not value.dtype.hasobject and value.dtype.fields is None


def _where(key: str, path: tuple) -> str:
    """``key`` and a path inside its value, as Python spells it: ``lat["extra"][2]``."""
    return key + "".join(f"[{json.dumps(p) if isinstance(p, str) else p}]" for p in path)


def _refuse(key: str, path: tuple, why: str) -> RemoteValueError:
    at = f" at {_where(key, path)}" if path else ""
    return RemoteValueError(f"{key!r} holds {why}{at}, which cannot travel to a server on another "
                            f"machine (no pickles on the wire); allowed: {ALLOWED}")


def _walk(key: str, value: Any, path: tuple, arrays: list | None) -> Any:
    """``value`` as JSON, each array replaced by ``{"$array": i}`` and appended to ``arrays``
    (None: arrays are refused), or RemoteValueError naming ``key`` and the path of what
    cannot travel."""
    if len(path) > 64:
        raise _refuse(key, path, "a value nested deeper than 64 levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(key, path, f"{value!r} (not finite: JSON cannot carry it)")
        return value
    if arrays is not None and is_array(value):
        if len(arrays) >= MAX_ARRAYS:
            raise _refuse(key, path, f"more than {MAX_ARRAYS} arrays")
        arrays.append(value)
        return {PLACEHOLDER: len(arrays) - 1}
    if isinstance(value, (list, tuple)):
        return [_walk(key, v, (*path, i), arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise _refuse(key, path, f"a dict with a {type(k).__name__} key {k!r:.40}")
            if k == PLACEHOLDER:
                raise _refuse(key, path, f"a dict with the key {PLACEHOLDER!r} (reserved by the wire format)")
        return {k: _walk(key, v, (*path, k), arrays) for k, v in value.items()}
    what = "an array inside a plain JSON value" if is_array(value) else \
        f"a {type(value).__module__}.{type(value).__name__}"
    raise _refuse(key, path, what)


def check_json(key: str, value: Any) -> Any:
    """``value`` as plain JSON (tuples become lists), or RemoteValueError naming ``key`` and
    the path inside it of what cannot travel."""
    return _walk(key, value, (), None)


def has_array(value: Any, _depth: int = 0) -> bool:
    """A list or dict with a tensor or array somewhere inside: it travels as a tree."""
    if _depth > 64:
        return False
    if isinstance(value, (list, tuple)):
        return any(is_array(v) or has_array(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return any(is_array(v) or has_array(v, _depth + 1) for v in value.values())
    return False


def tree_parts(key: str, value: Any) -> tuple[bytes, list[tuple[memoryview, Any]]]:
    """A tree's frame (``u32 length | skeleton JSON``, the skeleton naming every array's
    header) and its arrays' payloads in order (views, and what keeps each alive)."""
    arrays: list = []
    skeleton = _walk(key, value, (), arrays)
    headers, payloads = [], []
    for array in arrays:
        header, payload, keep = array_parts(array)
        headers.append(header)
        payloads.append((payload, keep))
    body = json.dumps({"kind": "tree", "value": skeleton, "arrays": headers},
                      separators=(",", ":"), allow_nan=False).encode()
    return _LEN.pack(len(body)) + body, payloads


async def tree_chunks(frame: bytes,
                      payloads: list[tuple[memoryview, Any]]) -> AsyncIterator[memoryview | bytes]:
    yield frame
    for payload, _ in payloads:
        for start in range(0, payload.nbytes, CHUNK):
            yield payload[start:start + CHUNK]


def parse_tree_skeleton(key: str, raw: bytes) -> tuple[Any, list[dict]]:
    """Check a tree's skeleton: JSON, every array header valid, every placeholder naming one
    array and each array named exactly once. Returns (skeleton value, array headers)."""
    def bad(why: str) -> RemoteValueError:
        return RemoteValueError(f"{key!r}: {why}; {TREE_FORMAT}")

    try:
        skeleton = json.loads(raw)
    except ValueError:
        raise bad("the tree's skeleton is not JSON") from None
    if not isinstance(skeleton, dict) or skeleton.get("kind") != "tree" or "value" not in skeleton:
        raise bad("the skeleton is not a JSON object of kind 'tree' with a value")
    headers = skeleton.get("arrays")
    if not isinstance(headers, list) or len(headers) > MAX_ARRAYS:
        raise bad(f"'arrays' is not a list of at most {MAX_ARRAYS} array headers")
    checked = [parse_array_header(f"{key} array {i}", json.dumps(h).encode()) for i, h in enumerate(headers)]
    seen: set[int] = set()

    def visit(node: Any, depth: int) -> None:
        if depth > 65:
            raise bad("the skeleton is nested deeper than 64 levels")
        if isinstance(node, list):
            for item in node:
                visit(item, depth + 1)
        elif isinstance(node, dict):
            if PLACEHOLDER in node:
                index = node[PLACEHOLDER]
                if (len(node) != 1 or isinstance(index, bool) or not isinstance(index, int)
                        or not 0 <= index < len(checked) or index in seen):
                    raise bad(f"the placeholder {node!r:.60} names no array, or one named before")
                seen.add(index)
            for item in node.values():
                visit(item, depth + 1)

    visit(skeleton["value"], 0)
    if len(seen) != len(checked):
        raise bad(f"{len(checked) - len(seen)} of its {len(checked)} arrays are named by no placeholder")
    return skeleton["value"], checked


def _fill(node: Any, arrays: list) -> Any:
    if isinstance(node, list):
        return [_fill(item, arrays) for item in node]
    if isinstance(node, dict):
        if PLACEHOLDER in node:
            return arrays[node[PLACEHOLDER]]
        return {k: _fill(v, arrays) for k, v in node.items()}
    return node


async def _read_payload(key: str, view: memoryview, n: int, read: Callable[[int], Any]) -> None:
    done = 0
    while done < n:
        chunk = await read(min(CHUNK, n - done))
        if not chunk:
            raise RemoteValueError(f"{key!r}: the body ended after {done} of {n} payload bytes")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)


async def read_tree(key: str, read: Callable[[int], Any], readexactly: Callable[[int], Any],
                    check: Callable[[dict], None] | None = None) -> Any:
    """Rebuild a tree from a stream. ``check({"n": total})`` (the skeleton's length and every
    array's bytes, from the headers alone) may refuse it before any payload is read."""
    try:
        (length,) = _LEN.unpack(await readexactly(_LEN.size))
        if length > MAX_SKELETON:
            raise RemoteValueError(f"{key!r}: a tree skeleton of {length} bytes (at most "
                                   f"{MAX_SKELETON}); {TREE_FORMAT}")
        if check is not None:
            check({"n": _LEN.size + length})  # a skeleton alone over the limit is not read
        skeleton, headers = parse_tree_skeleton(key, await readexactly(length))
    except asyncio.IncompleteReadError:
        raise RemoteValueError(f"{key!r}: the body ended inside the tree's skeleton") from None
    if check is not None:
        check({"n": _LEN.size + length + sum(h["n"] for h in headers)})
    arrays = []
    for index, header in enumerate(headers):
        value, view = empty_array(header)
        await _read_payload(f"{key} array {index}", view, header["n"], read)
        arrays.append(value.requires_grad_() if header.get("grad") else value)
    if await read(1):
        raise RemoteValueError(f"{key!r}: the body goes on past the arrays its skeleton names")
    return _fill(skeleton, arrays)


def array_parts(value: Any) -> tuple[dict, memoryview, Any]:
    """The wire header of a tensor or array, its payload (a view, not a copy) and the object
    that keeps the view alive."""
    encoded = codec.encode(value)
    meta, _ = codec.read_header(encoded.header)
    header = {"kind": meta["kind"], "dtype": meta["dtype"], "shape": meta["shape"], "n": meta["n"]}
    if meta.get("grad"):
        header["grad"] = True  # the flag travels (the graph that made the value does not)
    return header, encoded.payload, encoded


def array_frame(header: dict) -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


def parse_array_header(key: str, raw: bytes, max_bytes: int | None = None) -> dict:
    """Check an array's wire header: kind, dtype, shape, and a payload size that matches them
    (and ``max_bytes``). Raises RemoteValueError naming ``key``."""
    def bad(why: str) -> RemoteValueError:
        return RemoteValueError(f"{key!r}: {why}; an array is sent as a u32 header length, a JSON "
                                "header {kind, dtype, shape, n} and n raw bytes")

    try:
        header = json.loads(raw)
    except ValueError:
        raise bad("the array header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the array header is not a JSON object")
    kind, dtype, shape, n = (header.get(k) for k in ("kind", "dtype", "shape", "n"))
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise bad(f"shape {shape!r:.80} is not a list of at most {MAX_DIMS} sizes >= 0")
    if kind == "torch":
        if dtype not in TORCH_DTYPES:
            raise bad(f"torch dtype {dtype!r:.40} is not one of {', '.join(sorted(TORCH_DTYPES))}")
        itemsize = _torch().empty((), dtype=getattr(_torch(), dtype)).element_size()
    elif kind == "numpy":
        try:
            np_dtype = np.dtype(dtype) if isinstance(dtype, str) else None
        except TypeError:
            np_dtype = None
        if np_dtype is None or np_dtype.kind not in "biufc" or np_dtype.fields is not None:
            raise bad(f"numpy dtype {dtype!r:.40} is not a number or boolean type")
        itemsize = np_dtype.itemsize
    else:
        raise bad(f"kind {kind!r:.40} is neither 'torch' nor 'numpy'")
    if header.get("grad", False) not in (True, False) or (header.get("grad") and kind != "torch"):
        raise bad("grad is a flag of torch tensors")
    expected = math.prod(shape) * itemsize
    if n != expected:
        raise bad(f"n={n!r:.40} does not match shape {shape} of {dtype} ({expected} bytes)")
    if max_bytes is not None and expected > max_bytes:
        raise RemoteValueError(f"{key!r} is {expected} bytes, over this server's limit of "
                               f"{max_bytes} bytes per value (DISCOMFORT_MAX_VALUE_MB)")
    return header


def empty_array(header: dict) -> tuple[Any, memoryview]:
    """A new tensor or array for a checked header, and a writable byte view of its memory."""
    if header["kind"] == "torch":
        torch = _torch()
        out = torch.empty(header["shape"], dtype=getattr(torch, header["dtype"]))
        raw = out.reshape(-1).view(torch.uint8).numpy() if out.numel() else np.empty(0, np.uint8)
    else:
        out = np.empty(header["shape"], dtype=np.dtype(header["dtype"]))
        raw = out.reshape(-1).view(np.uint8)
    view: memoryview = raw.data
    return out, view.cast("B")


async def read_array(key: str, read: Callable[[int], Any], readexactly: Callable[[int], Any],
                     max_bytes: int | None = None,
                     check: Callable[[dict], None] | None = None) -> Any:
    """Rebuild an array from a stream (``read(n)``: up to n bytes, b"" at its end), straight
    into the new value's memory. ``check(header)`` may refuse it before its payload is read."""
    try:
        (length,) = _LEN.unpack(await readexactly(_LEN.size))
        if length > MAX_HEADER:
            raise RemoteValueError(f"{key!r}: an array header of {length} bytes (at most {MAX_HEADER})")
        header = parse_array_header(key, await readexactly(length), max_bytes)
    except asyncio.IncompleteReadError:
        raise RemoteValueError(f"{key!r}: the body ended inside the array header") from None
    if check is not None:
        check(header)
    value, view = empty_array(header)
    n = header["n"]
    await _read_payload(key, view, n, read)
    if await read(1):
        raise RemoteValueError(f"{key!r}: the body goes on past the {n} payload bytes its header names")
    return value.requires_grad_() if header.get("grad") else value


async def array_chunks(header: dict, payload: memoryview) -> AsyncIterator[memoryview | bytes]:
    yield array_frame(header)
    for start in range(0, payload.nbytes, CHUNK):
        yield payload[start:start + CHUNK]


# --- the client ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerValues:
    """What a server's handshake says about its value routes."""

    enabled: bool
    reason: str | None
    max_value_bytes: int | None
    run_budget_bytes: int | None
    max_lease_s: float | None

    @classmethod
    def from_info(cls, info: Mapping) -> ServerValues:
        values = info.get("values")
        if not isinstance(values, Mapping):
            return cls(False, "its Discomfort is too old to keep values for another machine "
                       "(no value routes): update it", None, None, None)
        return cls(bool(values.get("enabled")), values.get("reason"), values.get("max_value_bytes"),
                   values.get("run_budget_bytes"), values.get("max_lease_s"))


class RemoteStore:
    """The value routes of one server, through its connector's HTTP session and headers."""

    def __init__(self, connector: Any, limits: ServerValues, lease_s: float = DEFAULT_LEASE_S):
        self.connector = connector
        self.limits = limits
        self.lease_s = lease_s

    async def request(self, method: str, path: str, *, key: str | None = None, json_body: Any = None,
                      data: Any = None, content_type: str | None = None,
                      params: list[tuple[str, str]] | None = None, stream: bool = False) -> Any:
        """One request to the value routes; their refusals become typed errors. With
        ``stream`` the caller gets the open response (an async context manager)."""
        session = self.connector.http_session
        headers = dict(self.connector.request_headers())
        if content_type:
            headers["Content-Type"] = content_type
        url = self.connector.url + API + path
        try:
            response = await session.request(method, url, json=json_body, data=data, headers=headers,
                                             params=params)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RemoteStoreError(f"{method} {self.connector.url}{API}{path} failed: "
                                   f"{exc or type(exc).__name__} (is the server up, and reachable?)") from exc
        try:
            if response.status >= 400:
                raise await self._refusal(response, method, path, key)
            if stream:
                return response
            return await response.json(content_type=None)
        finally:
            if not stream or response.status >= 400:
                response.release()

    async def _refusal(self, response: Any, method: str, path: str, key: str | None) -> Exception:
        raw = await response.read()
        try:
            body = json.loads(raw)
            message = body.get("error") if isinstance(body, dict) else None
        except ValueError:
            message = None
        message = message or f"HTTP {response.status}: {raw[:200]!r}"
        if response.status == 401:
            return self.connector.token_error(method, API + path, raw)
        if response.status == 415 or (response.status == 400 and key is not None and "allowed" in message):
            return RemoteValueError(message)
        if response.status == 404 and "lease" in message:
            return RunExpiredError(message, status=404)
        return RemoteStoreError(f"{self.connector.url} refused {method} {API}{path}: {message}",
                                status=response.status)

    async def create_run(self, lease_s: float | None = None) -> RemoteRun:
        reply = await self.request("POST", "/runs", json_body={"lease_s": lease_s or self.lease_s})
        run = RemoteRun(self, reply["run_id"], reply["contexts_dir_name"], float(reply["lease_s"]))
        run.start_renewing()
        return run


class RemoteRun:
    """One run on the server: put / get / delete a key, list keys, renew its lease, close."""

    def __init__(self, store: RemoteStore, run_id: str, contexts_dir_name: str, lease_s: float):
        self.store = store
        self.run_id = run_id
        self.contexts_dir_name = contexts_dir_name
        self.lease_s = lease_s
        self.closed = False
        self._renewer: asyncio.Task | None = None
        # key -> (local fingerprint, the server's fingerprint of the same value): what both
        # sides hold in common, learned by an upload or a fetch
        self._synced: dict[str, tuple[str, str]] = {}

    @property
    def _path(self) -> str:
        return f"/runs/{quote(self.run_id, safe='')}"

    # --- values ---------------------------------------------------------------------------

    async def put(self, key: str, value: Any, *, pass_by: str = "val",
                  source: Mapping | None = None) -> str | None:
        """Store ``value`` under ``key`` in the server's run; returns its fingerprint there, or
        None for a large array (the server does not hash it now: its bytes, header and payload,
        are the very bytes our own store holds, so our fingerprint is its)."""
        params = [("key", key)]
        if pass_by == "ref":
            body = {"kind": "ref", "value": check_json(key, value),
                    "source": None if source is None else check_json(key, dict(source))}
            reply = await self.store.request("PUT", self._path + "/value", key=key, params=params,
                                             json_body=body)
        elif is_array(value):
            header, payload, keep = array_parts(value)
            reply = await self.store.request("PUT", self._path + "/value", key=key, params=params,
                                             data=array_chunks(header, payload),
                                             content_type=ARRAY_TYPE)
            del keep
        elif has_array(value):  # a LATENT, a list of images: a tree
            frame, payloads = tree_parts(key, value)
            reply = await self.store.request("PUT", self._path + "/value", key=key, params=params,
                                             data=tree_chunks(frame, payloads), content_type=TREE_TYPE)
            del payloads
        else:
            plain = check_json(key, value)
            reply = await self.store.request("PUT", self._path + "/value", key=key, params=params,
                                             json_body={"kind": "json", "value": plain})
        return reply["fingerprint"]

    async def get(self, key: str) -> Any:
        """The value stored under ``key`` in the server's run (a recipe for a ref key)."""
        response = await self.store.request("GET", self._path + "/value", key=key,
                                            params=[("key", key)], stream=True)
        try:
            async with response:
                if response.content_type == ARRAY_TYPE:
                    return await read_array(key, response.content.read, response.content.readexactly)
                if response.content_type == TREE_TYPE:
                    return await read_tree(key, response.content.read, response.content.readexactly)
                if response.content_type != JSON_TYPE:
                    raise RemoteValueError(f"{key!r}: the server sent {response.content_type!r}, "
                                           f"none of {ARRAY_TYPE}, {TREE_TYPE}, {JSON_TYPE}")
                body = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RemoteStoreError(f"{key!r}: reading it from {self.store.connector.url} failed: "
                                   f"{exc or type(exc).__name__}") from exc
        return body["value"]

    async def delete(self, key: str) -> None:
        await self.store.request("DELETE", self._path + "/value", key=key, params=[("key", key)])
        self._synced.pop(key, None)

    async def keys(self) -> dict[str, dict]:
        """Every key of the server's run: ``kind``, ``pass_by``, ``size``, ``fingerprint``..."""
        return (await self.store.request("GET", self._path + "/keys"))["keys"]

    async def stamps(self, keys: list[str]) -> dict[str, str | None]:
        """The stamp each key's last writer left (output ports prove they ran with it)."""
        reply = await self.store.request("GET", self._path + "/stamps", params=[("key", k) for k in keys])
        return reply["stamps"]

    # --- the lease ------------------------------------------------------------------------

    async def renew(self) -> None:
        await self.store.request("POST", self._path + "/lease", json_body={"lease_s": self.lease_s})

    def start_renewing(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_while_alive(),
                                                               name=f"discomfort-lease-{self.run_id}")

    async def _renew_while_alive(self) -> None:
        """Renew the lease every third of it; a run the server dropped is not renewed again."""
        while not self.closed:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await asyncio.wait_for(self.renew(), self.lease_s / 3)
            except RunExpiredError:
                log.warning("discomfort: the server dropped run %s (its lease ran out)", self.run_id)
                return
            except (RemoteStoreError, OSError, TimeoutError) as exc:  # the next one may get through
                log.warning("discomfort: could not renew run %s: %s", self.run_id, exc)
            except ComfyServerError as exc:  # the connector was shut down: nobody renews now
                log.debug("discomfort: run %s no longer renewed: %s", self.run_id, exc)
                return
            except Exception as exc:  # aiohttp's errors: the session closed, a reset
                log.warning("discomfort: could not renew run %s: %s", self.run_id, exc)

    async def close(self) -> None:
        """Delete the run on the server (best effort: an unreachable server lets it expire)."""
        if self.closed:
            return
        self.closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        try:
            await asyncio.wait_for(self.store.request("DELETE", self._path), 10)
        except Exception as exc:  # it expires on its own
            log.debug("discomfort: run %s not deleted: %s", self.run_id, exc)

    # --- around a prompt ------------------------------------------------------------------

    def mirror(self, context: Any, server_keys: Mapping[str, Mapping], loop: asyncio.AbstractEventLoop,
               timeout: float = 600.0) -> RunMirror:
        """The store the prepare pass reads for one prompt (see :class:`RunMirror`)."""
        return RunMirror(self, context, server_keys, loop, timeout)

    async def fetch_into(self, context: Any, keys: list[str], stamp: str, use_ram: bool = True) -> None:
        """Copy what the prompt's output ports wrote on the server into the user's context."""
        plain = []  # arrays are stored as the same bytes on both sides: the same fingerprint
        for key in keys:
            value = await self.get(key)
            await asyncio.to_thread(context.save, key, value, use_ram=use_ram, stamp=stamp)
            if not is_array(value):
                plain.append(key)
            del value
        server = await self.keys() if plain else {}
        for key in plain:  # a plain value's bytes differ (a pickle here, JSON there): remember both
            remote_fp = server.get(key, {}).get("fingerprint")
            if remote_fp:
                local_fp = await asyncio.to_thread(context.fingerprint, key)
                self._synced[key] = (local_fp, remote_fp)


class RunMirror:
    """A StoreView over the user's local context, bound to a run on the server.

    The prepare pass reads keys, entries and values from the local context as usual; what it
    binds into the prompt names the server's run and the server's fingerprints. Asking the
    fingerprint of a key is what tells us the prompt reads it through a port node: that key is
    uploaded then, unless the server's run already holds the same value. Called from the
    thread the pass runs in, it waits for the upload on the event loop (``loop``).
    """

    def __init__(self, run: RemoteRun, context: Any, server_keys: Mapping[str, Mapping],
                 loop: asyncio.AbstractEventLoop, timeout: float):
        self.run = run
        self.context = context
        self.server_keys = server_keys
        self.loop = loop
        self.timeout = timeout
        self.uploaded: dict[str, str] = {}  # key -> its fingerprint there, sent for this prompt

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def contexts_dir_name(self) -> str:
        return self.run.contexts_dir_name

    def list_keys(self) -> list[str]:
        return self.context.list_keys()

    def entry(self, unique_id: str) -> Any:
        return self.context.entry(unique_id)

    def load(self, unique_id: str) -> Any:
        return self.context.load(unique_id)

    def fingerprint(self, unique_id: str) -> str:
        local = self.context.fingerprint(unique_id)
        if unique_id in self.uploaded and self.run._synced.get(unique_id, ("",))[0] == local:
            return self.uploaded[unique_id]  # asked again (two ports read it): sent once
        there = (self.server_keys.get(unique_id) or {}).get("fingerprint")
        synced = self.run._synced.get(unique_id)
        if there is not None and (there == local or synced == (local, there)):
            return there  # the server's run holds this very value already
        entry = self.context.entry(unique_id)
        value = self.context.load(unique_id)
        future = asyncio.run_coroutine_threadsafe(
            self.run.put(unique_id, value, pass_by=entry.pass_by,
                         source=None if entry.source is None else thaw(entry.source)), self.loop)
        del value
        remote = future.result(self.timeout) or local  # an array: the same bytes, the same digest
        self.run._synced[unique_id] = (local, remote)
        self.uploaded[unique_id] = remote
        return remote


class RemoteRuns:
    """One server run per local context, for as long as the context lives (the facade's)."""

    def __init__(self, store: RemoteStore):
        self.store = store
        self._runs: dict[int, tuple[weakref.ref, RemoteRun]] = {}
        self._lock = asyncio.Lock()  # two run()s on one context share one server run

    async def for_context(self, context: Any) -> RemoteRun:
        async with self._lock:
            await self.prune()
            held = self._runs.get(id(context))
            if held is not None and held[0]() is context and not held[1].closed:
                return held[1]
            run = await self.store.create_run()
            self._runs[id(context)] = (weakref.ref(context), run)
            return run

    async def for_prompt(self, context: Any) -> tuple[RemoteRun, dict[str, dict]]:
        """The context's run and what it holds now. A run the server dropped (it restarted,
        or our lease ran out while we were away) is replaced by a new one: the values are
        all here, and the next prompt uploads what it reads."""
        run = await self.for_context(context)
        try:
            return run, await run.keys()
        except RunExpiredError:
            log.warning("discomfort: the server no longer has run %s; starting a new one", run.run_id)
            await self.release(context)
            run = await self.for_context(context)
            return run, await run.keys()

    async def release(self, context: Any) -> None:
        held = self._runs.pop(id(context), None)
        if held is not None:
            await held[1].close()

    async def prune(self) -> None:
        """Close the runs of contexts that were shut down or collected."""
        for ident, (ref, run) in list(self._runs.items()):
            context = ref()
            if context is None or not Path(context.path).exists():
                del self._runs[ident]
                await run.close()

    async def close(self) -> None:
        runs, self._runs = list(self._runs.values()), {}
        for _, run in runs:
            await run.close()
