"""A managed, headless ComfyUI process: start it, know when it is ready, stop it.

The server runs in a process group of its own, with every state directory in a private temp
dir and its database in memory, so it leaves the ComfyUI tree untouched. It loads this
package's port nodes (and any extra node packages) through ``--extra-model-paths-config``. It
is ready when ``/system_stats`` answers and ``/discomfort/info`` agrees with us on the store
root and version; any failure raises with the tail of its log. Only the process group we
started is ever signalled.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import __version__, protocol
from .auth import TOKEN_ENV, TOKEN_FILE_ENV, TOKEN_HEADER, editor_url, new_token
from .errors import ComfyServerDied, ComfyServerError, ComfyServerUnresponsive, ComfyStartError, RunTimeout
from .locate import default_python, find_comfyui, node_package_root
from .store import default_root
from .store.procs import me

PORT_ATTEMPTS = 3
POLL_S = 0.1
REQUEST_TIMEOUT_S = 10.0   # run_prompt: a server that answers no request this long is unresponsive
INTERRUPT_GRACE_S = 1.5    # how long a timed-out run_prompt may spend stopping its prompt
LOG_NAME = "comfyui.log"   # the server's log, in its state dir


# Model folders every managed server gets under its state dir, so files can be copied in.
MODEL_FOLDERS = ("checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "controlnet", "upscale_models", "gligen",
                 "hypernetworks", "photomaker", "model_patches", "audio_encoders")


def free_port(host: str = "127.0.0.1", port_range: tuple[int, int] | None = None) -> int:
    """A port nobody listens on now (the server may still lose a race for it: we retry)."""
    candidates = range(port_range[0], port_range[1] + 1) if port_range else [0]
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    where = f"in {port_range[0]}-{port_range[1]}" if port_range else "at all"
    raise ComfyStartError(f"no free port {where} on {host}")


def http_json(url: str, body: dict | None = None, timeout: float = 10.0, token: str | None = None):
    """GET (or POST ``body``) and decode JSON; HTTP errors raise ``urllib.error.HTTPError``.
    ``token``: the server's Discomfort token, sent as its header."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers[TOKEN_HEADER] = token
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


class ComfyServer:
    """One headless ComfyUI process. Use as a context manager, or call start()/stop()."""

    def __init__(self, comfyui_path: str | os.PathLike | None = None, python: str | None = None, *,
                 listen: str = "127.0.0.1", port: int | None = None,
                 port_range: tuple[int, int] | None = None, cpu: bool = True,
                 extra_args: tuple[str, ...] | list[str] = (), start_timeout: float = 120.0,
                 env: dict[str, str] | None = None, node_packages: Sequence[str | os.PathLike] = (),
                 model_paths: Mapping[str, str | os.PathLike] | None = None,
                 output_dir: str | os.PathLike | None = None, token: str | None = None):
        self.comfyui_path = find_comfyui(comfyui_path)
        self.python = python or default_python(self.comfyui_path)
        self.listen = listen
        self.requested_port = port
        self.port_range = port_range
        self.cpu = cpu
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self.node_packages = [Path(p).resolve() for p in node_packages]
        self.model_paths = {k: Path(v).resolve() for k, v in (model_paths or {}).items()}
        self.output_dir = Path(output_dir).expanduser().resolve() if output_dir else None
        # The server is its owner's: every request must carry this (discomfort/auth.py);
        # token="" starts it without one (beyond loopback its value routes are then off).
        self.token = new_token() if token is None else token
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.state_dir: Path | None = None
        self.jobs_api: bool | None = None  # has /api/jobs (ComfyUI >= 0.6): asked once per start

    # --- public ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.listen in ("0.0.0.0", "") else self.listen
        return f"http://{host}:{self.port}"

    @property
    def editor_url(self) -> str:
        """Open this in a browser to use the editor (it trades the token for a cookie)."""
        return editor_url(self.url, self.token)

    def request(self, path: str, body: dict | None = None, timeout: float = 10.0):
        """GET (or POST ``body``) one of the server's routes, with its token."""
        return http_json(self.url + path, body, timeout, self.token)

    @property
    def log_path(self) -> Path | None:
        return self.state_dir / LOG_NAME if self.state_dir else None

    @property
    def output_path(self) -> Path | None:
        """Where the server's output nodes write: ``output_dir``, else inside its state dir
        (removed by stop())."""
        if self.output_dir is not None:
            return self.output_dir
        return self.state_dir / "output" if self.state_dir else None

    def folder(self, name: str) -> Path:
        """Folder ``name`` (``output``, ``input``, ``temp``, ``models``...) of the started
        server: ``output_dir`` for its output when one was given, else in its state dir."""
        if name == "output" and self.output_dir is not None:
            return self.output_dir
        return self._state() / name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and not _exited(self.process.pid)

    def start(self) -> ComfyServer:
        if self.process is not None:
            raise ComfyServerError("this server was already started")
        self.state_dir = Path(tempfile.mkdtemp(prefix="discomfort-comfyui-"))
        self.jobs_api = None
        config = self._write_paths_config()
        try:
            for attempt in range(PORT_ATTEMPTS):
                self.port = self.requested_port or free_port(self.listen, self.port_range)
                self._spawn(config)
                try:
                    self._wait_ready()
                    return self
                except ComfyStartError:
                    bind_race = "address already in use" in self.log_tail().lower()
                    self._terminate()
                    if not bind_race or self.requested_port or attempt == PORT_ATTEMPTS - 1:
                        raise
        except BaseException:
            self.stop(keep_state=True)
            raise
        raise AssertionError("unreachable")

    def stop(self, grace: float = 10.0, keep_state: bool = False) -> None:
        """SIGTERM our process group, SIGKILL it after ``grace`` seconds. Idempotent."""
        self._terminate(grace)
        if self.state_dir and not keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None

    def run_prompt(self, prompt: dict, extra_data: dict | None = None,
                   timeout: float | None = 600.0, *, check: bool = False) -> dict:
        """Queue an API prompt and wait for its history entry, whatever its outcome: a plain,
        synchronous driver of the same protocol core as the async connector (it polls where
        the connector listens). Raises what the connector raises: ``PromptValidationError`` if
        the server refuses the prompt, ``ComfyServerDied`` if it dies,
        ``ComfyServerUnresponsive`` if it stops answering, ``PromptLost`` if it loses the
        prompt, ``RunTimeout`` (the prompt interrupted) after ``timeout`` seconds; with
        ``check``, also ``ExecutionError`` and ``ExecutionInterrupted``."""
        prompt_id = str(uuid.uuid4())  # ours (canonical: newer servers refuse others)
        body = {"prompt": prompt, "extra_data": extra_data or {}, "prompt_id": prompt_id}
        status, reply = self._call("/prompt", body)
        refused = protocol.prompt_reply(status, reply)
        if refused is not None:
            raise refused
        if status != 200:
            raise self._server_error(f"POST /prompt answered {status}: {str(reply)[:500]}")
        if self.jobs_api is None:
            self.jobs_api = protocol.jobs_api_available(*self._call(protocol.JOBS_PROBE_PATH))
        tracker = protocol.PromptTracker(
            prompt_id, {str(k): str(v.get("class_type")) for k, v in prompt.items()},
            jobs_api=self.jobs_api, websocket=False, want_entry=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if tracker.wants() is None:
                tracker.check()
            kind = tracker.wants()
            if kind is None:
                break
            status, reply = self._call(tracker.path(kind))
            if status != 200 and not (kind == protocol.JOB and status == 404):
                raise self._server_error(f"GET {tracker.path(kind)} answered {status}: "
                                         f"{str(reply)[:300]}")
            tracker.receive_reply(kind, status, reply)
            if tracker.done and tracker.wants() is None:
                break
            if not self.alive():
                raise ComfyServerDied("ComfyUI died while running a prompt", self.log_tail())
            if deadline is not None and time.monotonic() > deadline:
                self._abandon(tracker)
                raise RunTimeout(f"prompt {prompt_id} did not finish within {timeout:g} s; "
                                 "it was interrupted")
            if tracker.wants() is None:
                time.sleep(POLL_S / 2)
        if tracker.error is not None and (tracker.outcome is None or check):
            raise tracker.error
        if tracker.entry is None:  # (the loop ends only with it: a broken invariant)
            raise ComfyServerError(f"prompt {prompt_id} ended but has no history entry")
        return tracker.entry

    def _abandon(self, tracker: protocol.PromptTracker) -> None:
        """Stop a timed-out prompt, best effort and brief (as the connector does)."""
        try:
            if tracker.where == "pending":
                self._call("/queue", {"delete": [tracker.prompt_id]}, INTERRUPT_GRACE_S)
            else:
                self._call("/interrupt", {"prompt_id": tracker.prompt_id}, INTERRUPT_GRACE_S)
        except ComfyServerError:
            pass

    def _call(self, path: str, body: dict | None = None,
              timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, object]:
        """One request: ``(status, decoded body)``, HTTP errors included; a server that does
        not answer, or died, raises the connector's types."""
        try:
            return 200, self.request(path, body, timeout)
        except urllib.error.HTTPError as exc:
            return exc.code, _json_or_text(exc.read())
        except TimeoutError as exc:
            if self.alive():
                raise ComfyServerUnresponsive(
                    f"{self.url} did not answer {path} within {timeout:g} s: is the server "
                    "stopped or hung?", self.log_tail()) from exc
            raise self._server_error(f"{path} got no answer") from exc
        except (OSError, ValueError) as exc:  # refused, reset, or not JSON
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)) and self.alive():
                raise ComfyServerUnresponsive(
                    f"{self.url} did not answer {path} within {timeout:g} s: is the server "
                    "stopped or hung?", self.log_tail()) from exc
            for _ in range(20):  # its sockets close a moment before its exit is seen
                if not self.alive():
                    break
                time.sleep(0.05)
            raise self._server_error(f"{path} failed: {reason}") from exc

    def _server_error(self, message: str) -> ComfyServerError:
        if self.process is not None and not self.alive():
            return ComfyServerDied("the ComfyUI server died: " + message, self.log_tail())
        return ComfyServerError(message, self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        log_path = self.log_path
        if log_path is None:  # not started, or stopped
            return ""
        try:
            text = log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------

    def _state(self) -> Path:
        """The state dir, which start() makes before anything is written or spawned."""
        if self.state_dir is None:
            raise ComfyServerError("this server has no state dir: start() it first")
        return self.state_dir

    def _write_paths_config(self) -> Path:
        state_dir = self._state()
        nodes_dir = state_dir / "custom_nodes"
        nodes_dir.mkdir()
        package = node_package_root(build_in=state_dir)
        # Exactly one copy of the nodes (two cannot both register their routes): none of ours
        # if the ComfyUI's own custom_nodes has one, this checkout or another (the handshake
        # then checks that it runs our version).
        own = self.comfyui_path / "custom_nodes"
        theirs = own.is_dir() and any((p / "__init__.py").is_file() and
                                      (p / "discomfort" / "__init__.py").is_file() for p in own.iterdir())
        links = [] if theirs else [package]
        for source in links + self.node_packages:
            name = "discomfort" if source == package else source.name
            (nodes_dir / name).symlink_to(source, target_is_directory=True)
        for sub in ("output", "input", "temp", "user"):
            (state_dir / sub).mkdir()
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        folders = {folder: [state_dir / "models" / folder] for folder in MODEL_FOLDERS}
        for folder, path in self.model_paths.items():
            folders.setdefault(folder, []).insert(0, path)
        lines = ["discomfort:", f"    base_path: {json.dumps(str(state_dir))}",
                 "    custom_nodes: custom_nodes"]
        for folder, paths in folders.items():
            for path in paths:
                path.mkdir(parents=True, exist_ok=True)
            # ComfyUI reads one path per line of a value.
            lines.append(f"    {folder}: |")
            lines += [f"        {path}" for path in paths]
        config = state_dir / "extra_model_paths.yaml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _command(self, config: Path) -> list[str]:
        s = self._state()
        cmd = [self.python, str(self.comfyui_path / "main.py"),
               "--listen", self.listen, "--port", str(self.port),
               "--output-directory", str(self.output_path),
               "--input-directory", str(s / "input"),
               "--temp-directory", str(s / "temp"), "--user-directory", str(s / "user"),
               "--database-url", "sqlite:///:memory:", "--extra-model-paths-config", str(config),
               "--disable-auto-launch"]
        if self.cpu:
            cmd.append("--cpu")
        if not _has_frontend_package(self.python):
            (s / "web").mkdir(exist_ok=True)
            cmd += ["--front-end-root", str(s / "web")]
        return cmd + self.extra_args

    def _spawn(self, config: Path) -> None:
        pid, started = me()
        env = dict(os.environ, PYTHONUNBUFFERED="1", DISCOMFORT_ROOT=str(default_root()),
                   DISCOMFORT_OWNER_PID=str(pid), DISCOMFORT_OWNER_START=str(started))
        env.pop(TOKEN_FILE_ENV, None)
        env.update(self.env)
        env[TOKEN_ENV] = self.token  # never the caller's own: this server's secret
        with open(self._state() / LOG_NAME, "ab") as log:
            self.process = subprocess.Popen(
                self._command(config), cwd=self.comfyui_path, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.alive():
                raise ComfyStartError(
                    "ComfyUI exited while starting "
                    f"(log: {self.log_path})", self.log_tail())
            try:
                self.request("/system_stats", timeout=2)
                break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ComfyStartError(
                    f"ComfyUI did not answer on {self.url} within {self.start_timeout:g} s "
                    f"(log: {self.log_path})", self.log_tail())
            time.sleep(POLL_S)
        self._check_handshake()

    def _check_handshake(self) -> None:
        try:
            info = self.request("/discomfort/info", timeout=5)
        except urllib.error.HTTPError as exc:
            raise ComfyStartError(
                f"ComfyUI runs but the Discomfort nodes did not load (GET /discomfort/info: "
                f"HTTP {exc.code}); look for IMPORT FAILED in the log", self.log_tail(80)) from None
        except (OSError, ValueError) as exc:
            raise ComfyStartError(f"the Discomfort handshake failed: {exc}", self.log_tail()) from None
        ours = {"version": __version__, "root": str(default_root())}
        theirs = {key: info.get(key) for key in ours}
        if theirs != ours:
            raise ComfyStartError(
                f"the server's Discomfort disagrees with ours: server {theirs}, here {ours}; "
                "both must run the same version and share one store root", self.log_tail())

    def _terminate(self, grace: float = 10.0) -> None:
        """Stop the group. The leader is reaped last: until then its pid, which is the group
        id, cannot be recycled, so our signals reach no one else."""
        process = self.process
        if process is None:
            return
        if not _exited(process.pid):
            self._signal_group(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while not _exited(process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._signal_group(process.pid, signal.SIGKILL)  # the leader if it lingers, and anything it left
        process.wait(timeout=grace)
        self.process = None

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # start_new_session: the group id is our child's pid
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            if exc.errno != errno.EPERM:
                raise


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _exited(pid: int) -> bool:
    """Has our child exited? Checked without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _has_frontend_package(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import comfyui_frontend_package"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0
