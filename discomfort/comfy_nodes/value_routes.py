"""The store over HTTP, for a client on another machine: ``/discomfort/v1``.

A thin adapter over WorkflowContext: a client that cannot share our store creates a run here,
puts the values a prompt reads, queues the prompt (its port nodes attach to the run as they
always do) and gets what the output ports wrote. The wire format is ``discomfort/remote.py``'s:
arrays as a JSON header and raw bytes, lists and dicts holding arrays (a LATENT) as a tree (a
JSON skeleton naming every array's header, then their bytes), plain values and recipes as
JSON, never a pickle.

Routes (every one behind the token middleware when the server has a token)::

    POST   /discomfort/v1/runs                        {"lease_s"} -> {"run_id", "contexts_dir_name",
                                                                          "lease_s"}
    DELETE /discomfort/v1/runs/{run_id}
    POST   /discomfort/v1/runs/{run_id}/lease          renew: the run lives lease_s more
    GET    /discomfort/v1/runs/{run_id}/keys           {"keys": {key: {kind, size, fingerprint...}}}
    GET    /discomfort/v1/runs/{run_id}/stamps?key=... {"stamps": {key: stamp or null}}
    PUT    /discomfort/v1/runs/{run_id}/value?key=...  an array, tree or JSON body -> {"fingerprint", "size"}
    GET    /discomfort/v1/runs/{run_id}/value?key=...
    DELETE /discomfort/v1/runs/{run_id}/value?key=...

Limits: ``DISCOMFORT_MAX_VALUE_MB`` per value (default 2048), ``DISCOMFORT_RUN_BUDGET_MB``
per run (default 8192), ``DISCOMFORT_MAX_LEASE_S`` (default 3600), at most
``DISCOMFORT_MAX_RUNS`` runs (default 64); a tree's limits are its whole size, checked from
its skeleton before any payload is read. A run whose lease is not renewed is deleted.
When the server listens beyond loopback without a token, the routes answer 403 saying why
(and ``/discomfort/info`` says so too).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .. import auth
from ..errors import ContextClosedError, InvalidIdError, KeyNotFoundError, RemoteValueError
from ..remote import (
    ALLOWED,
    API,
    ARRAY_TYPE,
    JSON_TYPE,
    TREE_TYPE,
    array_frame,
    array_parts,
    check_json,
    has_array,
    read_array,
    read_tree,
    tree_parts,
)
from ..store import WorkflowContext
from ..store.entry import thaw
from ..store.ids import check_run_id, check_unique_id

log = logging.getLogger("discomfort")
MIB = 1024 * 1024
MIN_LEASE_S = 0.5
SWEEP_S = 0.25


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        log.warning("discomfort: %s=%r is not a number; using %g", name, raw, default)
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class Limits:
    max_value_bytes: int
    run_budget_bytes: int
    max_lease_s: float
    max_runs: int

    @classmethod
    def from_env(cls) -> Limits:
        return cls(int(_number("DISCOMFORT_MAX_VALUE_MB", 2048) * MIB),
                   int(_number("DISCOMFORT_RUN_BUDGET_MB", 8192) * MIB),
                   _number("DISCOMFORT_MAX_LEASE_S", 3600), int(_number("DISCOMFORT_MAX_RUNS", 64)))


def listen_addresses() -> list[str]:
    """What this ComfyUI listens on (``--listen``: one address or several, comma-separated)."""
    args = getattr(sys.modules.get("comfy.cli_args"), "args", None)
    listen = getattr(args, "listen", None) or "127.0.0.1"
    return [a.strip() for a in str(listen).split(",") if a.strip()]


def routes_state(addresses: list[str], token: str | None) -> tuple[bool, str | None]:
    """Whether the value routes are on, and why not: off when the server listens beyond
    loopback without a token (anyone who reaches it could read and write values)."""
    if token:
        return True, None
    beyond = [a for a in addresses if not _is_loopback(a)]
    if not beyond:
        return True, None
    return False, (f"this server listens on {', '.join(beyond)}, beyond loopback, without a token: "
                   f"start it with {auth.TOKEN_ENV} (or {auth.TOKEN_FILE_ENV}) set to a secret of at "
                   f"least {auth.MIN_TOKEN_LENGTH} characters to turn its value routes on")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class _Run:
    context: WorkflowContext
    lease_s: float
    expires: float
    owner: str              # a digest of the token that created it ("" without a token)
    busy: int = 0           # requests under way: a run is not swept from under them (only
                            # a renewal extends its lease: the client's, while it lives)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ValueRoutes:
    """The runs this server keeps for remote clients, and the handlers that serve them."""

    def __init__(self, token: str | None, addresses: list[str], limits: Limits | None = None):
        self.limits = limits or Limits.from_env()
        self.enabled, self.reason = routes_state(addresses, token)
        self.runs: dict[str, _Run] = {}
        self._sweeper: asyncio.Task | None = None

    def info(self) -> dict:
        return {"enabled": self.enabled, "reason": self.reason, "api": API,
                "max_value_bytes": self.limits.max_value_bytes,
                "run_budget_bytes": self.limits.run_budget_bytes,
                "max_lease_s": self.limits.max_lease_s, "max_runs": self.limits.max_runs}

    def register(self, routes) -> None:
        routes.post(API + "/runs")(self._guard(self.create_run))
        routes.delete(API + "/runs/{run_id}")(self._guard(self.delete_run))
        routes.post(API + "/runs/{run_id}/lease")(self._guard(self.renew))
        routes.get(API + "/runs/{run_id}/keys")(self._guard(self.list_keys))
        routes.get(API + "/runs/{run_id}/stamps")(self._guard(self.stamps))
        routes.put(API + "/runs/{run_id}/value")(self._guard(self.put_value))
        routes.get(API + "/runs/{run_id}/value")(self._guard(self.get_value))
        routes.delete(API + "/runs/{run_id}/value")(self._guard(self.delete_value))

    # --- plumbing -------------------------------------------------------------------------

    def _guard(self, handler):
        from aiohttp import web

        async def guarded(request):
            if not self.enabled:
                return _error(403, self.reason or "the value routes are off")
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except _Refused as refused:
                return _error(refused.status, refused.message, refused.key)
            except InvalidIdError as exc:
                return _error(400, str(exc), request.query.get("key"))
            except RemoteValueError as exc:
                return _error(415 if "allowed" in str(exc) else 400, str(exc), request.query.get("key"))
            except KeyNotFoundError as exc:
                return _error(404, str(exc), request.query.get("key"))
            except ContextClosedError:
                return _error(404, f"run {request.match_info.get('run_id')!r} is gone (its lease ran out "
                              "or it was deleted)")

        return guarded

    @staticmethod
    def _owner(request) -> str:
        given = request.headers.get(auth.TOKEN_HEADER) or request.cookies.get(auth.TOKEN_COOKIE) or ""
        return hashlib.sha256(given.encode()).hexdigest() if given else ""

    def _run(self, request) -> tuple[str, _Run]:
        run_id = check_run_id(request.match_info["run_id"])  # before anything is touched
        run = self.runs.get(run_id)
        # A run is invisible to a request without the token that created it.
        if run is None or run.owner != self._owner(request):
            raise _Refused(404, f"no run {run_id!r} on this server: it was never created here, or "
                                "its lease ran out (the client stopped renewing it), or it was deleted")
        return run_id, run

    @staticmethod
    def _key(request) -> str:
        keys = request.query.getall("key", [])
        if len(keys) != 1:
            raise _Refused(400, "name exactly one key: ?key=<unique_id>")
        return check_unique_id(keys[0])

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="discomfort-runs")

    async def _sweep(self) -> None:
        """Delete the runs whose lease ran out (their client is gone or cut off)."""
        while self.runs:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for run_id, run in list(self.runs.items()):
                if run.expires < now and not run.busy:
                    log.info("discomfort: run %s expired (its lease was not renewed)", run_id)
                    await self._drop(run_id)

    async def _drop(self, run_id: str) -> None:
        """Delete a run's values, then forget it: once it answers 404, nothing of it is left
        (a request meanwhile finds its context closed: 404 too)."""
        run = self.runs.get(run_id)
        if run is not None:
            await asyncio.to_thread(run.context.shutdown)
            self.runs.pop(run_id, None)

    # --- runs -----------------------------------------------------------------------------

    async def create_run(self, request):
        from aiohttp import web

        body = await _json_body(request, 64 * 1024)
        lease = body.get("lease_s", 60.0) if isinstance(body, dict) else None
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise _Refused(400, f"lease_s must be a number of seconds > 0, got {lease!r:.40}")
        lease = min(max(float(lease), MIN_LEASE_S), self.limits.max_lease_s)
        if len(self.runs) >= self.limits.max_runs:
            raise _Refused(429, f"this server keeps at most {self.limits.max_runs} runs "
                                "(DISCOMFORT_MAX_RUNS); close some, or let them expire")
        context = await asyncio.to_thread(WorkflowContext)
        self.runs[context.run_id] = _Run(context, lease, time.monotonic() + lease, self._owner(request))
        self._start_sweeper()
        return web.json_response({"run_id": context.run_id, "lease_s": lease,
                                  "contexts_dir_name": context.contexts_dir_name}, status=201)

    async def delete_run(self, request):
        from aiohttp import web

        run_id, _ = self._run(request)
        await self._drop(run_id)
        return web.json_response({"deleted": run_id})

    async def renew(self, request):
        from aiohttp import web

        _, run = self._run(request)
        run.expires = time.monotonic() + run.lease_s
        return web.json_response({"lease_s": run.lease_s})

    async def list_keys(self, request):
        from aiohttp import web

        _, run = self._run(request)
        return web.json_response({"keys": await self._use(run, _describe, run.context)})

    async def stamps(self, request):
        from aiohttp import web

        _, run = self._run(request)
        keys = [check_unique_id(k) for k in request.query.getall("key", [])]
        stamps = await self._use(run, lambda: {k: run.context.get_stamp(k) for k in keys})
        return web.json_response({"stamps": stamps})

    async def _use(self, run: _Run, function, *args):
        """Run a store call in a thread, the run kept from the sweeper meanwhile."""
        run.busy += 1
        try:
            return await asyncio.to_thread(function, *args)
        finally:
            run.busy -= 1

    # --- values ---------------------------------------------------------------------------

    async def put_value(self, request):
        from aiohttp import web

        _, run = self._run(request)
        key = self._key(request)
        ctype = request.content_type
        run.busy += 1
        try:
            async with run.lock:  # one writer at a time: the budget check holds
                def within_limits(header: dict) -> None:  # before the payload is read
                    if header["n"] > self.limits.max_value_bytes:
                        raise _Refused(413, f"{key!r} is {header['n']} bytes, over this server's "
                                            f"limit of {self.limits.max_value_bytes} bytes per "
                                            "value (DISCOMFORT_MAX_VALUE_MB)", key)
                    self._check_budget(run, key, header["n"])

                if ctype == ARRAY_TYPE:
                    value = await read_array(key, request.content.read, request.content.readexactly,
                                             check=within_limits)
                    pass_by, source = "val", None
                elif ctype == TREE_TYPE:  # the whole tree's size is checked from its skeleton
                    value = await read_tree(key, request.content.read, request.content.readexactly,
                                            check=within_limits)
                    pass_by, source = "val", None
                elif ctype == JSON_TYPE:
                    body = await _json_body(request, self.limits.max_value_bytes, key)
                    if not isinstance(body, dict) or body.get("kind") not in ("json", "ref"):
                        raise _Refused(400, f"{key!r}: a JSON body is {{\"kind\": \"json\" or \"ref\", "
                                            f"\"value\": ...}}; allowed values: {ALLOWED}", key)
                    value = check_json(key, body.get("value"))
                    pass_by, source = ("ref", body.get("source")) if body["kind"] == "ref" else ("val", None)
                    if pass_by == "ref" and not isinstance(value, dict):
                        raise _Refused(400, f"{key!r}: a ref value is a recipe (a JSON object)", key)
                    self._check_budget(run, key, request.content_length or 0)
                else:
                    raise _Refused(415, f"{key!r}: a body of type {ctype or 'none'!r} is refused (it "
                                        f"was not read). Send {ARRAY_TYPE} (a tensor or array), "
                                        f"{TREE_TYPE} (a list or dict holding some) or "
                                        f"{JSON_TYPE}; allowed values: {ALLOWED}. Never a pickle.", key)

                def save(value: Any) -> Any:
                    if pass_by == "ref":
                        run.context.save(key, value, pass_by="ref",
                                         source=source if isinstance(source, dict) else None)
                    else:
                        run.context.save(key, value)
                    # An array is not hashed now: the client knows its digest (the same bytes).
                    return run.context.entry(key, fingerprint=pass_by == "ref" or ctype != ARRAY_TYPE)

                entry = await asyncio.to_thread(save, value)
                del value
        finally:
            run.busy -= 1
        return web.json_response({"key": key, "fingerprint": entry.fingerprint, "size": entry.size})

    def _check_budget(self, run: _Run, key: str, incoming: int) -> None:
        used = 0
        for other in run.context.list_keys():
            if other != key:
                try:
                    used += run.context.entry(other).size
                except KeyError:
                    pass
        if used + incoming > self.limits.run_budget_bytes:
            raise _Refused(413, f"{key!r}: {incoming} more bytes would take run {run.context.run_id!r} "
                                f"to {used + incoming} bytes, over its budget of "
                                f"{self.limits.run_budget_bytes} (DISCOMFORT_RUN_BUDGET_MB); delete "
                                "keys it no longer needs", key)

    async def get_value(self, request):
        from aiohttp import web

        _, run = self._run(request)
        key = self._key(request)
        run.busy += 1
        try:
            entry = await asyncio.to_thread(run.context.entry, key)
            value = await asyncio.to_thread(run.context.load, key)
            if entry.pass_by == "ref":
                return web.json_response({"kind": "ref", "value": value,
                                          "source": thaw(entry.source)})
            if entry.shape is None and has_array(value):  # a LATENT, a list of images
                frame, payloads = tree_parts(key, value)
                del value
                return await _stream(request, TREE_TYPE, frame, payloads)
            if entry.shape is None:  # the server's own store unpickles its own values, as ports do
                return web.json_response({"kind": "json", "value": check_json(key, value)})
            header, payload, keep = array_parts(value)
            del value
            return await _stream(request, ARRAY_TYPE, array_frame(header), [(payload, keep)])
        finally:
            run.busy -= 1

    async def delete_value(self, request):
        from aiohttp import web

        _, run = self._run(request)
        key = self._key(request)
        await self._use(run, run.context.delete, key)
        return web.json_response({"deleted": key})


async def _stream(request, content_type: str, frame: bytes, payloads: list[tuple[memoryview, Any]]):
    """A body of ``frame`` then each payload's bytes, written in chunks from the values' memory."""
    from aiohttp import web

    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = len(frame) + sum(payload.nbytes for payload, _ in payloads)
    await response.prepare(request)
    await response.write(frame)
    step = 4 * 1024 * 1024
    for payload, _ in payloads:
        for start in range(0, payload.nbytes, step):
            await response.write(payload[start:start + step])
    await response.write_eof()
    return response


class _Refused(Exception):
    def __init__(self, status: int, message: str, key: str | None = None):
        super().__init__(message)
        self.status, self.message, self.key = status, message, key


def _error(status: int, message: str, key: str | None = None):
    from aiohttp import web

    body: dict[str, Any] = {"error": message}
    if key is not None:
        body["key"] = key
    return web.json_response(body, status=status)


async def _json_body(request, limit: int, key: str | None = None) -> Any:
    """A JSON body of at most ``limit`` bytes (read as bytes and parsed: never unpickled)."""
    length = request.content_length
    if length is not None and length > limit:
        raise _Refused(413, f"{key or 'the body'!r}: {length} bytes, over this server's limit of "
                            f"{limit} (DISCOMFORT_MAX_VALUE_MB)", key)
    raw = bytearray()
    while True:
        chunk = await request.content.read(1024 * 1024)
        if not chunk:
            break
        raw += chunk
        if len(raw) > limit:
            raise _Refused(413, f"{key or 'the body'!r}: over this server's limit of {limit} bytes "
                                "(DISCOMFORT_MAX_VALUE_MB)", key)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        what = f"{key!r}: " if key else ""
        raise _Refused(400, f"{what}the body is not JSON (it was not unpickled, nor run); allowed "
                            f"values: {ALLOWED}", key) from None


def _describe(context: WorkflowContext) -> dict[str, dict]:
    keys = {}
    for key in context.list_keys():
        try:
            entry = context.entry(key, fingerprint=True)
        except KeyError:  # deleted meanwhile
            continue
        keys[key] = {"kind": entry.kind, "pass_by": entry.pass_by, "size": entry.size,
                     "version": entry.version, "fingerprint": entry.fingerprint,
                     "shape": None if entry.shape is None else list(entry.shape),
                     "dtype": entry.dtype, "stamp": entry.stamp}
    return keys
