"""ComfyConnector: one ComfyUI server, managed (started headless by us) or attached (by URL).

HTTP goes through aiohttp; one websocket per connector is read by one task that hands each
message to the prompt it names. Following a prompt is the protocol core's
(:class:`~discomfort.protocol.PromptTracker`): this module only moves its messages and the
requests it asks for (``/api/jobs/{id}`` where the server has the jobs API, else ``/history``
and ``/queue``), and keeps the clocks. Prompt ids are chosen here and registered before the
POST, so a prompt that finishes before the POST returns is not missed, and several prompts can
be in flight. Every wait has a liveness deadline (the server alive and answering), separate
from an optional overall timeout; nothing is retried forever.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, overload

import aiohttp
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from .auth import TOKEN_ENV, TOKEN_HEADER, editor_url
from .errors import (
    ComfyServerDied,
    ComfyServerError,
    ComfyServerUnresponsive,
    ConfigError,
    InvalidArgumentError,
    NoSuchFileError,
    RunTimeout,
    TokenError,
    UnknownPromptError,
    UploadExistsError,
    WrongTypeError,
)
from .graph import check_node_types, is_api_format, load_workflow, ui_to_api
from .jsonfile import read_json_object
from .protocol import (
    HISTORY,
    JOB,
    JOBS_PROBE_PATH,
    Event,
    PromptTracker,
    decode_message,
    jobs_api_available,
    message_prompt_id,
    prompt_reply,
    queue_state,
)
from .remote import RemoteStore, ServerValues, store_id
from .server import MODEL_FOLDERS, ComfyServer
from .store import default_root

log = logging.getLogger("discomfort")

@dataclass(frozen=True)
class ServerSettings:
    """How to reach or start a server: a JSON file's keys and ``create()``'s keywords, checked
    once by :func:`load_connector_config`."""

    url: str | None = None           # attach to this running server instead of starting one
    comfyui_path: str | None = None  # else $COMFYUI_PATH, the enclosing ComfyUI, our install
    python: str | None = None        # the interpreter that runs a managed server
    extra_args: Sequence[str] = ()
    listen: str = "127.0.0.1"
    port_range: Sequence[int] | None = None  # [low, high]: where a managed server may listen
    start_timeout: float = 180.0
    # Keep up to this many node results across prompts, so alternating workflows keep their
    # models loaded. It counts results, not bytes: each cached model stays in memory.
    cache_lru: int = 32
    cpu: bool | None = None          # None: --cpu unless torch sees CUDA or MPS
    env: Mapping[str, str] = field(default_factory=dict)
    custom_nodes: Sequence[str] = ()  # more custom-node package folders to load beside ours
    model_paths: Mapping[str, str] = field(default_factory=dict)  # {"loras": "/path", ...}
    output_dir: str | None = None    # where SaveImage & co. write (default: the server's temp
                                     # dir, removed at shutdown)
    allow_remote_ports: bool = False
    # A server that answers nothing (no websocket message, no HTTP reply) for this many
    # seconds is unresponsive: stopped or wedged. A long render still answers, so it is not.
    unresponsive_timeout: float = 30.0
    token: str | None = None         # an attached server's Discomfort token (else $DISCOMFORT_TOKEN)
    headers: Mapping[str, str] = field(default_factory=dict)  # on every request (a proxy's auth)
    remote_lease_s: float = 60.0     # a server on another machine drops our run this long after we go

    def as_json(self) -> dict[str, Any]:
        """The settings as plain JSON (as a settings file would hold them)."""
        return json.loads(json.dumps(asdict(self)))


SETTING_NAMES = tuple(f.name for f in fields(ServerSettings))
LIVENESS_POLL_S = 1.0           # how often a quiet wait checks that the server lives
RECONCILE_EVERY = 5             # ... and every this many polls asks the server's record
HISTORY_DEADLINE_S = 10.0       # the history entry is written just after execution_success
HISTORY_BATCH = 16
WS_RECONNECT_DEADLINE_S = 60.0
PROBE_EVERY = 3                 # quiet polls between HTTP probes of a silent server
INTERRUPT_GRACE_S = 1.5         # how long a timed-out run may spend stopping its prompt


def load_connector_config(config_path: str | os.PathLike | None = None,
                          **overrides: Any) -> ServerSettings:
    """The settings of a JSON file (if given) with ``overrides`` over them (None: not given)."""
    given: dict[str, Any] = {}
    if config_path is not None:
        given.update(read_json_object(config_path, "server settings", ConfigError))
    given.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(given) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(f"unknown server setting(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(SETTING_NAMES)}")
    config = ServerSettings(**given)
    if not _is_loopback(config.listen) and not config.allow_remote_ports:
        raise ConfigError(
            f"listen={config.listen!r} serves the server beyond this machine, and anyone who "
            "can post a prompt could read or overwrite your run's values through the ports; "
            "set allow_remote_ports: true to accept that")
    quiet = config.unresponsive_timeout
    if isinstance(quiet, bool) or not isinstance(quiet, (int, float)) or not quiet > 0:
        raise ConfigError(f"unresponsive_timeout must be a number of seconds > 0, got {quiet!r}")
    headers = config.headers
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in headers.items()):
        raise ConfigError(f"headers must map header names to strings, got {headers!r:.80}")
    lease = config.remote_lease_s
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
        raise ConfigError(f"remote_lease_s must be a number of seconds > 0, got {lease!r}")
    port_range = config.port_range
    if port_range is not None and (not isinstance(port_range, (list, tuple)) or len(port_range) != 2):
        raise ConfigError(f"port_range must be [low, high], got {port_range!r}")
    return config


def cache_mode(argv: list) -> str:
    """How a server caches node results, from its command line (``/system_stats`` argv):
    ``"lru N"``, ``"ram"``, ``"classic"``, ``"none"``, or ``"default"`` (classic up to
    ComfyUI 0.3.x, RAM-pressure in later ones)."""
    args = [str(a) for a in argv]
    for index, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag == "--cache-lru":
            value = value or (args[index + 1] if index + 1 < len(args) else "0")
            return f"lru {value}" if value.isdigit() and int(value) > 0 else "classic"
        if flag in ("--cache-ram", "--cache-classic", "--cache-none"):
            return flag.removeprefix("--cache-")
    return "default"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _wants_cpu() -> bool:
    try:
        import torch
    except ImportError:
        return True
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))


class ComfyConnector:
    """Talks to one ComfyUI server. Create with ``await ComfyConnector.create()``."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.client_id = uuid.uuid4().hex
        self.server: ComfyServer | None = None
        self.url: str = settings.url.rstrip("/") if settings.url else ""
        self._session: aiohttp.ClientSession | None = None
        self._trackers: dict[str, PromptTracker] = {}  # each queued prompt's protocol state
        self._wakes: dict[str, asyncio.Event] = {}  # set when its tracker has news
        self._reader: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._object_info: dict | None = None
        self._ephemeral: list[Path] = []
        self._read: list[str] = []  # prompt ids whose history entries are ours to delete
        self._closed = False
        self._start_lock = asyncio.Lock()
        self._last_heard = 0.0  # loop time of the server's last websocket message or HTTP reply
        self.cache_mode: str | None = None  # how the server caches, from its command line
        self.jobs_api = False  # the server has /api/jobs (ComfyUI >= 0.6): asked once per start
        # An attached server that does not share our store keeps our values over HTTP:
        self.remote: RemoteStore | None = None
        self._jobs_cancel = True  # ... and /api/jobs/{id}/cancel (>= 0.26), until it says 404

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def create(cls, config_path: str | os.PathLike | None = None, **overrides) -> ComfyConnector:
        """A connector to a fresh managed server, or to ``url`` (config or keyword) if given."""
        self = cls(load_connector_config(config_path, **overrides))
        try:
            await self._start()
        except BaseException:
            await self.kill_api()
            raise
        return self

    @property
    def editor_url(self) -> str:
        """Where a browser opens this server's editor (with the token a managed server needs)."""
        token = self._auth_headers().get(TOKEN_HEADER)
        return editor_url(self.url, token)

    @property
    def managed(self) -> bool:
        return not self.settings.url

    async def _start(self) -> None:
        if self.managed:
            server = self._new_server()
            await asyncio.to_thread(server.start)  # on failure it stops, keeping its log
            self.server, self.url = server, server.url
            self.cache_mode = cache_mode(server.extra_args)
        if self._session is None:
            # No total: an upload may take long. But a server that stops answering mid-reply
            # (or never starts one) is noticed within unresponsive_timeout.
            quiet = float(self.settings.unresponsive_timeout)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=quiet, sock_read=quiet))
        if not self.managed:
            await self._check_attached_server()
        self.jobs_api, self._jobs_cancel = await self._has_jobs_api(), True
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_messages(), name="discomfort-ws")
        try:
            await asyncio.wait_for(self._connected.wait(), 30)
        except TimeoutError:
            raise ComfyServerError(f"no websocket from {self.url} within 30 s") from None

    async def _check_attached_server(self) -> None:
        """An attached server must answer, be ComfyUI, have the port nodes, and share our
        store root."""
        try:
            stats = await self._get("/system_stats")
        except _HTTPError as exc:
            raise ComfyServerError(
                f"{self.url} is not a ComfyUI server: GET /system_stats answered HTTP "
                f"{exc.status} ({exc.content_type or 'no content type'}): {exc.body[:200]!r}; "
                "give the URL ComfyUI prints at start (http://host:port)") from None
        if not isinstance(stats, dict) or "system" not in stats:
            raise ComfyServerError(
                f"{self.url} is not a ComfyUI server: GET /system_stats answered "
                f"{str(stats)[:200]!r}, not ComfyUI's system stats")
        try:
            info = await self._get("/discomfort/info")
        except _HTTPError:
            raise ComfyServerError(f"{self.url} runs ComfyUI without the Discomfort nodes: install "
                                   "this package into its custom_nodes and restart it") from None
        self.cache_mode = cache_mode(stats["system"].get("argv") or [])
        if not self.cache_mode.startswith("lru"):
            log.warning(
                "discomfort: %s runs with the %s cache: a model kept by reference can be evicted "
                "and loaded again between runs (discomfort.last_run.executions("
                "'CheckpointLoaderSimple') counts it); start that server with --cache-lru 32 to "
                "keep models loaded", self.url, self.cache_mode)
        theirs = info.get("store_id")
        if info.get("root") == str(default_root()) and theirs in (None, store_id()):
            return  # one store: values go through shared memory and files
        values = ServerValues.from_info(info)
        if not values.enabled:
            raise ComfyServerError(
                f"{self.url} keeps runs under {info.get('root')}, a store this process does not "
                f"share (ours: {default_root()}), and cannot keep our values over HTTP: "
                f"{values.reason}. On the same machine, start this process with "
                f"DISCOMFORT_ROOT={info.get('root')} instead")
        self.remote = RemoteStore(self, values, float(self.settings.remote_lease_s))
        near = _is_loopback(urllib.parse.urlsplit(self.url).hostname or "")
        log.log(
            logging.WARNING if near else logging.INFO,  # on this machine: probably not meant
            "discomfort: %s keeps its runs under %s, a store this process does not share (ours: "
            "%s): values go over HTTP. If it runs on this machine, start this process with "
            "DISCOMFORT_ROOT=%s to share memory instead", self.url, info.get("root"),
            default_root(), info.get("root"))

    async def _has_jobs_api(self) -> bool:
        """Once per server: 0.3.x answers 404 to ``/api/jobs``, newer servers list jobs."""
        try:
            reply, status = await self._get(JOBS_PROBE_PATH), 200
        except _HTTPError as exc:
            reply, status = exc.json(), exc.status
        return jobs_api_available(status, reply)

    def _new_server(self) -> ComfyServer:
        c = self.settings
        args = list(c.extra_args)
        if c.cache_lru and not any(a.startswith("--cache") for a in args):
            args += ["--cache-lru", str(int(c.cache_lru))]
        low_high = (int(c.port_range[0]), int(c.port_range[1])) if c.port_range else None
        return ComfyServer(
            c.comfyui_path, c.python, listen=c.listen, port_range=low_high,
            cpu=_wants_cpu() if c.cpu is None else bool(c.cpu), extra_args=args,
            start_timeout=float(c.start_timeout), env=dict(c.env),
            node_packages=c.custom_nodes, model_paths=c.model_paths, output_dir=c.output_dir)

    async def _ensure_running(self) -> None:
        """The next call after the managed server died starts a fresh one."""
        if self._closed:
            raise ComfyServerError("this connector was shut down (kill_api); create a new one")
        if not self.managed or (self.server and self.server.alive()):
            return
        async with self._start_lock:
            if self.server and self.server.alive():
                return
            log.warning("discomfort: the ComfyUI server died; starting a fresh one")
            if self.server:
                self.server.stop()
            self._connected.clear()
            self._object_info = None
            await self._start()

    async def kill_api(self, grace: float = 10.0) -> None:
        """Close the connection and stop a managed server: SIGTERM to its process group,
        SIGKILL after ``grace`` seconds. Ephemeral uploads are removed. Idempotent."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        for prompt_id, tracker in self._trackers.items():
            tracker.fail(ComfyServerError("the connector was shut down while waiting"))
            self._wakes[prompt_id].set()
        if self._session is not None:
            await self._session.close()
            self._session = None
        for path in self._ephemeral:
            path.unlink(missing_ok=True)
        self._ephemeral.clear()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop, grace)
            self.server = None

    async def __aenter__(self) -> ComfyConnector:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.kill_api()

    # --- HTTP -----------------------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        token = self.server.token if self.server else \
            (self.settings.token or os.environ.get(TOKEN_ENV))
        headers = dict(self.settings.headers)
        if token:
            headers[TOKEN_HEADER] = token
        return headers

    def request_headers(self) -> dict[str, str]:
        """What every request sends: the user's ``headers`` and the Discomfort token."""
        return self._auth_headers()

    @property
    def http_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ComfyServerError("this connector is not connected")
        return self._session

    def token_error(self, method: str, path: str, body: bytes) -> TokenError:
        """What a 401 means: our token missing or wrong, or a proxy in front wanting credentials."""
        if b"Discomfort token" not in body:
            return TokenError(
                f"{self.url} refused {method} {path} (HTTP 401) without naming the Discomfort "
                "token: a proxy in front of it wants credentials; pass them as "
                "headers={'Authorization': ...} to Discomfort.create")
        if TOKEN_HEADER not in self._auth_headers():
            return TokenError(
                f"{self.url} refused {method} {path}: it needs its Discomfort token. Pass "
                f"token=... to Discomfort.create, or set {TOKEN_ENV} (the value the server was "
                "started with); none was sent")
        return TokenError(
            f"{self.url} refused {method} {path}: the Discomfort token sent is not this server's. "
            f"Pass token=... to Discomfort.create, or set {TOKEN_ENV}, to the value the server "
            "was started with")

    async def _request(self, method: str, path: str, body: Any = None, **kwargs) -> Any:
        if self._session is None:
            raise ComfyServerError("this connector is not connected")
        try:
            headers = self._auth_headers()  # per request: a restarted server has a new token
            async with self._session.request(method, self.url + path, json=body, headers=headers,
                                             **kwargs) as response:
                raw = await response.read()
                if response.status == 401:
                    raise self.token_error(method, path, raw)
                if response.status >= 400:
                    raise _HTTPError(response.status, raw, response.headers.get("Content-Type", ""))
                ctype = response.headers.get("Content-Type", "")
                self._last_heard = asyncio.get_running_loop().time()
                return json.loads(raw) if raw and "json" in ctype else raw
        except TimeoutError:
            if self.server is not None and not self.server.alive():
                raise self._server_error(f"{method} {path} got no answer") from None
            raise ComfyServerUnresponsive(
                f"{self.url} did not answer {method} {path} within "
                f"{self.settings.unresponsive_timeout:g} s: is the server stopped or hung? "
                "(unresponsive_timeout sets the bound)",
                self.server.log_tail() if self.server else "") from None
        except aiohttp.ClientError as exc:
            raise await self._connection_failure(f"{method} {path} failed: {exc}") from exc

    async def _get(self, path: str) -> Any:
        return await self._request("GET", path)

    async def _post(self, path: str, body: Any = None) -> Any:
        return await self._request("POST", path, body if body is not None else {})

    async def _connection_failure(self, message: str) -> ComfyServerError:
        """A managed server's sockets close a moment before the kernel reports its exit: give
        it that moment, so a death is reported as one."""
        for _ in range(20):
            if self.server is None or not self.server.alive():
                break
            await asyncio.sleep(0.05)
        return self._server_error(message)

    def _server_error(self, message: str) -> ComfyServerError:
        if self.server is not None and not self.server.alive():
            return ComfyServerDied("the ComfyUI server died: " + message, self.server.log_tail())
        return ComfyServerError(message, self.server.log_tail() if self.server else "")

    async def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            await self._ensure_running()
            self._object_info = await self._get("/object_info")
        return self._object_info

    async def system_stats(self) -> dict:
        return await self._get("/system_stats")

    async def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        await self._post("/free", {"unload_models": unload_models, "free_memory": free_memory})

    # --- workflows and prompts ------------------------------------------------------------

    async def get_prompt_from_workflow(self, workflow: str | os.PathLike | dict, **convert) -> dict:
        """The API prompt of a workflow (a path or dict, editor or API format)."""
        workflow = load_workflow(workflow)
        if is_api_format(workflow):
            check_node_types(workflow, await self.object_info())
            return workflow
        return ui_to_api(workflow, await self.object_info(), **convert)

    async def run_workflow(self, payload: str | os.PathLike | dict, use_workflow_json: bool = True,
                           *, extra_data: dict | None = None, timeout: float | None = None,
                           on_event: Callable[[Event], None] | None = None) -> dict:
        """Run one workflow (``use_workflow_json``: a path or dict in either format) or one API
        prompt dict, and return its history entry."""
        if use_workflow_json:
            prompt = await self.get_prompt_from_workflow(payload)
        elif isinstance(payload, dict):
            prompt = payload
        else:
            raise WrongTypeError(f"use_workflow_json=False takes an API prompt dict, not a "
                                 f"{type(payload).__name__}")
        prompt_id = await self.queue(prompt, extra_data)
        return await self.wait(prompt_id, timeout=timeout, on_event=on_event)

    async def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        """Post an API prompt; return its id. Validation failures raise PromptValidationError."""
        await self._ensure_running()
        prompt_id = str(uuid.uuid4())  # canonical form: newer servers refuse others
        # Registered before the POST: its events may beat the reply.
        self._trackers[prompt_id] = PromptTracker(
            prompt_id, {str(k): str(v.get("class_type")) for k, v in prompt.items()},
            jobs_api=self.jobs_api, websocket=self._connected.is_set())
        self._wakes[prompt_id] = asyncio.Event()
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id,
                "extra_data": extra_data or {}}
        try:
            reply = await self._post("/prompt", body)
        except _HTTPError as exc:
            self._unregister(prompt_id)
            refused = prompt_reply(exc.status, exc.json())
            if refused is not None:
                raise refused from None
            raise self._server_error(f"POST /prompt answered {exc.status}: {exc.body[:500]!r}") from None
        except BaseException:
            self._unregister(prompt_id)
            raise
        refused = prompt_reply(200, reply)
        if refused is not None:
            # Part of it would run: stop that too (queued: removed; already running: interrupted).
            await self.interrupt(prompt_id)
            self._unregister(prompt_id)
            raise refused
        return prompt_id

    def _unregister(self, prompt_id: str) -> None:
        self._trackers.pop(prompt_id, None)
        self._wakes.pop(prompt_id, None)

    async def events(self, prompt_id: str, timeout: float | None = None) -> AsyncIterator[Event]:
        """Every event of a queued prompt, ending with its final one (success, error or
        interrupted). Raises if the server dies, stops answering for
        ``unresponsive_timeout`` seconds, loses the prompt, or ``timeout`` seconds pass."""
        tracker = self._tracker(prompt_id)
        try:
            async for event in self._follow(tracker, timeout):
                yield event
        finally:
            self._unregister(prompt_id)

    def _tracker(self, prompt_id: str) -> PromptTracker:
        tracker = self._trackers.get(prompt_id)
        if tracker is None:
            raise UnknownPromptError(f"prompt {prompt_id} was not queued by this connector")
        return tracker

    async def _follow(self, tracker: PromptTracker, timeout: float | None) -> AsyncIterator[Event]:
        """Drive one prompt's tracker until it ends: yield its events, send the requests it
        asks for, and keep the clocks (the run's deadline, liveness polls, reconciling)."""
        prompt_id, wake = tracker.prompt_id, self._wakes[tracker.prompt_id]
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        quiet_polls = 0
        self._last_heard = max(self._last_heard, loop.time())
        while True:
            wake.clear()  # before reading: news that comes while we yield sets it again
            events = tracker.events_received()
            for event in events:
                yield event
            if tracker.done:
                if tracker.outcome is None:
                    tracker.result()  # raises: lost, shut down
                return
            if deadline is not None and loop.time() >= deadline:  # checked even mid-stream
                await self.abandon(prompt_id)
                raise RunTimeout(f"prompt {prompt_id} did not finish within {timeout:g} s; "
                                 "it was interrupted") from None
            if events:
                quiet_polls = 0
                continue
            kind = tracker.wants()
            if kind is not None and await self._within(deadline, self._ask(tracker, kind)):
                continue
            wait_s = LIVENESS_POLL_S if deadline is None else \
                min(LIVENESS_POLL_S, max(deadline - loop.time(), 0))
            try:
                async with asyncio.timeout(wait_s):  # (wait_for would add a task per event)
                    await wake.wait()
                continue
            except TimeoutError:
                pass
            if deadline is not None and loop.time() >= deadline:
                continue  # (the check above raises)
            quiet_polls += 1
            await self._within(deadline, self._check_liveness(
                prompt_id, probe=quiet_polls % PROBE_EVERY == 0))
            if not tracker.connected or quiet_polls % RECONCILE_EVERY == 0:
                tracker.check()  # events may have been lost: ask the server's record

    async def _ask(self, tracker: PromptTracker, kind: str) -> bool:
        """Send the request a tracker wants and feed it the reply; False when the server did
        not answer in time (the liveness rule then decides, on the whole quiet time)."""
        try:
            reply, status = await self._get(tracker.path(kind)), 200
        except _HTTPError as exc:
            if kind != JOB or exc.status != 404:  # a jobs-API 404 is an answer: no such job
                raise
            reply, status = exc.json(), exc.status
        except ComfyServerUnresponsive:
            return False
        except ComfyServerError:
            if self.server is not None and not self.server.alive():
                raise ComfyServerDied("the ComfyUI server died while running a prompt",
                                      self.server.log_tail()) from None
            raise
        tracker.receive_reply(kind, status, reply)
        return True

    @staticmethod
    async def _within(deadline: float | None, awaitable):
        """``awaitable``, cut short at the run's deadline (the liveness poll then sees it)."""
        if deadline is None:
            return await awaitable
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                return None
            raise

    async def abandon(self, prompt_id: str) -> None:
        """Stop a prompt nobody waits for any more (a timed-out or cancelled run): removed if
        queued, interrupted if running. Best effort and brief: a server that does not answer
        must not hold the caller."""
        try:
            async with asyncio.timeout(INTERRUPT_GRACE_S):
                await self.interrupt(prompt_id)
        except (TimeoutError, ComfyServerError) as exc:  # either way: the caller's deadline first
            log.warning("discomfort: could not interrupt prompt %s: %s", prompt_id, exc)

    @overload
    async def wait(self, prompt_id: str, timeout: float | None = None,
                   on_event: Callable[[Event], None] | None = None,
                   history: Literal[True] = True) -> dict: ...

    @overload
    async def wait(self, prompt_id: str, timeout: float | None = None,
                   on_event: Callable[[Event], None] | None = None, history: bool = True) -> dict | None: ...

    async def wait(self, prompt_id: str, timeout: float | None = None,
                   on_event: Callable[[Event], None] | None = None, history: bool = True) -> dict | None:
        """Wait for a queued prompt; return its history entry (``history=False``: None, and
        no request for it) or raise what went wrong."""
        tracker = self._tracker(prompt_id)
        try:
            async for event in self._follow(tracker, timeout):
                if on_event is not None:
                    on_event(event)
            if tracker.error is not None:  # the prompt's own failure: the server is fine
                await self._forget(prompt_id)
                raise tracker.error
            if not history:
                await self._forget(prompt_id)
                return None
            return await self._history_entry(tracker)
        finally:
            self._unregister(prompt_id)

    async def _history_entry(self, tracker: PromptTracker) -> dict:
        # execution_success is sent just before the entry is written: ask again, briefly.
        tracker.want_entry = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HISTORY_DEADLINE_S
        while tracker.wants() == HISTORY:
            if loop.time() > deadline:
                raise ComfyServerError(f"prompt {tracker.prompt_id} succeeded but has no history entry")
            tracker.receive_history(await self._get(tracker.path(HISTORY)))
            if tracker.entry is None:
                await asyncio.sleep(0.005)
        if tracker.entry is None:  # (the loop ends only with it: a broken invariant)
            raise ComfyServerError(f"prompt {tracker.prompt_id} ended but has no history entry")
        if self.managed:
            await self._post("/history", {"delete": [tracker.prompt_id]})
        return tracker.entry

    async def _forget(self, prompt_id: str) -> None:
        """A managed server keeps up to 10,000 full prompts in its history: delete the ones
        nobody reads, in batches (an entry not yet written then goes with a later batch)."""
        if not self.managed:
            return
        self._read.append(prompt_id)
        if len(self._read) >= HISTORY_BATCH:
            batch, self._read = self._read, []
            await self._post("/history", {"delete": batch})

    async def _check_liveness(self, prompt_id: str, probe: bool) -> None:
        """Raise if the server died or stopped answering; with ``probe``, ask a silent server
        whether it still answers."""
        if self.server is not None and not self.server.alive():
            raise ComfyServerDied("the ComfyUI server died while running a prompt", self.server.log_tail())
        loop = asyncio.get_running_loop()
        quiet = float(self.settings.unresponsive_timeout)
        if loop.time() - self._last_heard > quiet:
            raise ComfyServerUnresponsive(
                f"{self.url} has answered nothing for {quiet:g} s (no websocket message, no "
                f"HTTP reply) while prompt {prompt_id} waited: is the server stopped or hung? "
                "(unresponsive_timeout sets the bound)",
                self.server.log_tail() if self.server else "")
        if probe and loop.time() - self._last_heard > LIVENESS_POLL_S * PROBE_EVERY:
            await self._probe()

    async def _probe(self) -> None:
        """One small request that a live server answers at once, even mid-render."""
        try:
            await self._request("GET", "/prompt", timeout=aiohttp.ClientTimeout(
                total=LIVENESS_POLL_S * PROBE_EVERY))
        except ComfyServerUnresponsive:
            pass

    # --- interrupt, uploads, files --------------------------------------------------------

    async def interrupt(self, prompt_id: str | None = None, deadline_s: float = 10.0) -> None:
        """Stop one prompt: removed if still queued, interrupted if running. Without an id,
        interrupt whatever runs now."""
        if prompt_id is None:
            await self._post("/interrupt", {})
            return
        tracker = self._trackers.get(prompt_id)
        if self.jobs_api and self._jobs_cancel and await self._cancel_job(prompt_id):
            if tracker is not None:  # dequeued or interrupted: it ends as interrupted
                tracker.cancel_requested()
                self._wakes[prompt_id].set()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while loop.time() < deadline:
            queue = queue_state(await self._get("/queue"))
            if prompt_id in queue.pending:
                await self._remove_from_queue(prompt_id)
                if tracker is not None:  # it will never run: no event would come
                    tracker.cancel_requested(removed=True)
                    self._wakes[prompt_id].set()
                return
            if prompt_id not in queue.running:
                return  # finished (or never existed): nothing to stop
            if tracker is not None:
                tracker.cancel_requested()
            # A targeted interrupt can land while the flag is being reset: re-check, retry.
            await self._post("/interrupt", {"prompt_id": prompt_id})
            await asyncio.sleep(0.25)
        raise ComfyServerError(f"prompt {prompt_id} still runs {deadline_s:g} s after interrupt")

    async def _cancel_job(self, prompt_id: str) -> bool:
        """``POST /api/jobs/{id}/cancel`` (ComfyUI >= 0.26: dequeues or interrupts, atomically);
        False where the server has no such route (remembered) or the job had already ended."""
        try:
            reply = await self._post(f"/api/jobs/{prompt_id}/cancel", {})
        except _HTTPError as exc:
            if exc.status not in (404, 405):
                raise
            self._jobs_cancel = False
            return False
        return isinstance(reply, dict) and reply.get("cancelled") is True

    async def _remove_from_queue(self, prompt_id: str) -> None:
        await self._post("/queue", {"delete": [prompt_id]})

    async def upload_data(self, source_path: str | os.PathLike, folder_type: str = "input",
                          subfolder: str | None = None, overwrite: bool = False,
                          is_ephemeral: bool = False) -> dict:
        """Make a file available to the server. ``input``/``temp``/``output`` go over the HTTP
        upload API; a model folder name (``upscale_models``, ``checkpoints``...) copies the file
        into that folder of a managed server. Returns ``{"name", "subfolder", "type"}``."""
        source = Path(source_path)
        if not source.is_file():
            raise NoSuchFileError(f"nothing to upload at {source}")
        await self._ensure_running()
        if folder_type in ("input", "temp", "output"):
            form = aiohttp.FormData()
            form.add_field("image", source.read_bytes(), filename=source.name)
            form.add_field("type", folder_type)
            form.add_field("overwrite", "true" if overwrite else "false")
            if subfolder:
                form.add_field("subfolder", subfolder)
            result = await self._request("POST", "/upload/image", data=form)
            if is_ephemeral:
                self._track_ephemeral(Path(folder_type) / result.get("subfolder", "") / result["name"])
            return result
        if folder_type not in MODEL_FOLDERS:
            raise InvalidArgumentError(f"folder_type {folder_type!r} is neither input/temp/output "
                                       f"nor a model folder ({', '.join(MODEL_FOLDERS)})")
        if self.server is None:
            raise ComfyServerError(
                "models can be copied only into a managed server's folders; for an attached "
                f"server, put {source.name} into its models/{folder_type} folder yourself")
        target = self.server.folder("models") / folder_type / (subfolder or "") / source.name
        if target.exists() and not overwrite:
            raise UploadExistsError(f"{target.name} is already in {folder_type}; pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if is_ephemeral:
            self._ephemeral.append(target)
        return {"name": str(Path(subfolder or "") / source.name), "subfolder": subfolder or "",
                "type": folder_type}

    def _track_ephemeral(self, relative: Path) -> None:
        if self.server is None:
            raise ComfyServerError("ephemeral uploads need a managed server: an attached "
                                   "server's files cannot be removed over its API")
        self._ephemeral.append(self.server.folder(relative.parts[0]) / Path(*relative.parts[1:]))

    async def fetch_file(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        """The bytes of a file the server wrote (as named in a history entry's outputs)."""
        params = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        try:
            return await self._request("GET", "/view", params=params)
        except _HTTPError as exc:
            raise NoSuchFileError(f"the server has no {folder_type} file {subfolder}/{filename} "
                                  f"(HTTP {exc.status})") from None

    # --- the websocket --------------------------------------------------------------------

    async def _read_messages(self) -> None:
        """The one reader of the websocket: route each message to its prompt's waiter."""
        loop = asyncio.get_running_loop()
        gave_up_at = None
        delay = 0.1
        while not self._closed:
            ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
            try:
                # No compression: the server is near, and inflating every message costs CPU.
                async with ws_connect(ws_url, max_size=None, open_timeout=10, ping_interval=20,
                                      ping_timeout=60, compression=None,
                                      additional_headers=self._auth_headers()) as ws:
                    self._connected.set()
                    for prompt_id, tracker in self._trackers.items():
                        if not tracker.connected:  # what came meanwhile is only in the record
                            tracker.connection_made()
                            self._wakes[prompt_id].set()
                    gave_up_at, delay = None, 0.1
                    async for message in ws:
                        self._last_heard = loop.time()
                        if isinstance(message, str):  # binary frames: previews, not ours
                            self._route(decode_message(message))
            except (OSError, WebSocketException, TimeoutError, ValueError) as exc:
                log.debug("discomfort: websocket closed: %s", exc)
            if self._closed:
                return
            self._connected.clear()
            for prompt_id, tracker in list(self._trackers.items()):
                if tracker.connected:
                    tracker.connection_lost()
                    self._wakes[prompt_id].set()
            gave_up_at = gave_up_at or loop.time() + WS_RECONNECT_DEADLINE_S
            if loop.time() > gave_up_at:  # prompts are still followed, by polling the server
                log.error("discomfort: no websocket to %s for %g s; giving up", self.url,
                          WS_RECONNECT_DEADLINE_S)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _route(self, message: dict | None) -> None:
        prompt_id = message_prompt_id(message)
        tracker = self._trackers.get(prompt_id) if prompt_id is not None else None
        if prompt_id is not None and tracker is not None:
            tracker.receive_message(message)
            self._wakes[prompt_id].set()


class _HTTPError(ComfyServerError):
    def __init__(self, status: int, body: bytes, content_type: str = ""):
        self.status, self.body, self.content_type = status, body, content_type
        super().__init__(f"HTTP {status}: {body[:300]!r}")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None
