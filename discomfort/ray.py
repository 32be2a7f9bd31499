"""RayPool: one managed ComfyUI per node (or per GPU) of a Ray cluster, driven as one pool.

Each server is owned by a Ray actor placed on its node: the actor creates a ``Discomfort``
there (so the server, its store and its files stay on that node) and runs one job at a time.
The driver decides where jobs go, the way :class:`~discomfort.pool.DiscomfortPool` does on one
machine: a free actor, preferring one that already ran the job's recipes (same digest,
:func:`~discomfort.pool.recipe_digest`); results in input order, each failure in its slot.

Only plain data crosses machines, through Ray's object store: dicts, lists, strings, numbers,
None and numpy arrays. A torch tensor travels as a numpy array (marked, and made a tensor
again on the other side); anything else is refused before the job is sent
(``RemoteValueError``). Errors come back as their type name, message and plain attributes and
are raised again as the same class of :mod:`discomfort.errors` (``RemoteJobError`` for any
other exception).

Faults: an actor that dies mid-job (its node lost, ``ray.kill``) or stays silent past the
job's deadline is retired and its job runs again, once, on another actor; a server that dies
inside a live actor is restarted there in the background. A job that fails by itself is never
retried. Connecting to the cluster is the caller's (``ray.init(address=...)``) or
``create(address=...)``; this module never starts one.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .errors import (
    ComfyServerDied,
    ComfyServerError,
    ComfyServerUnresponsive,
    ComfyStartError,
    InvalidArgumentError,
    RayNotInstalledError,
    RemoteJobError,
    RemoteValueError,
    WrongTypeError,
)
from .graph import load_workflow
from .graph.refs import is_recipe
from .pool import (
    RETIRED,
    RUN_OPTIONS,
    SERVER_FAULTS,
    UP,
    JobReport,
    job_results,
    pick_worker,
    recipe_digest,
    run_jobs,
    server_settings,
)

log = logging.getLogger("discomfort")

TENSOR = "discomfort.tensor"   # {TENSOR: ndarray}: a torch tensor on its way
RAY_RUN_OPTIONS = tuple(o for o in RUN_OPTIONS if o != "on_event")  # a callback cannot travel
_FAULT_NAMES = {cls.__name__ for cls in SERVER_FAULTS}
# Started beside each server by its actor: when the actor dies (SIGKILL, ray.kill), this
# kills the server's process group, so no ComfyUI outlives the actor that owns it.
_WATCHDOG = """
import os, signal, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
while True:
    time.sleep(0.25)
    try:
        os.kill(server, 0)
    except OSError:
        break
    if os.getppid() != parent:
        try:
            os.killpg(server, signal.SIGKILL)
        except OSError:
            pass
        break
"""


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            "discomfort.ray needs Ray: pip install 'discomfort[ray]'") from exc
    return ray


# --- values as plain data -----------------------------------------------------------------

def to_plain(value: Any, key: str = "value") -> Any:
    """``value`` as plain data for Ray's object store: tensors become marked numpy arrays;
    dicts (string keys), lists, tuples, str, numbers, None and numpy arrays pass; anything
    else raises ``RemoteValueError`` naming ``key``."""
    import numpy as np

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise RemoteValueError(f"{key}: a numpy array of Python objects cannot travel")
        return value
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            raise RemoteValueError(f"{key}: a bfloat16 tensor has no numpy type; convert it first")
        return {TENSOR: tensor.numpy()}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise RemoteValueError(f"{key}: a dict with keys that are not strings cannot travel")
        return {k: to_plain(v, f"{key}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    raise RemoteValueError(f"{key}: a {type(value).__name__} cannot travel to a Ray actor (only "
                           "tensors, numpy arrays and plain JSON data do)")


def from_plain(value: Any) -> Any:
    """What :func:`to_plain` made, with its tensors made torch tensors again."""
    import numpy as np

    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(TENSOR), np.ndarray):
            import torch

            return torch.from_numpy(np.array(value[TENSOR]))  # a writable copy of Ray's buffer
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def _error_to_plain(exc: BaseException) -> dict:
    attrs = {}
    for name, value in vars(exc).items():
        try:
            attrs[name] = to_plain(value, name)
        except RemoteValueError:
            pass
    return {"type": type(exc).__name__, "message": str(exc), "attrs": attrs,
            "fault": type(exc).__name__ in _FAULT_NAMES}


def _error_from_plain(data: dict, where: str) -> BaseException:
    """The exception an actor sent back: Discomfort's own class (or a builtin) when it is
    one, with its message and plain attributes; else a ``RemoteJobError``."""
    name, message = data["type"], data["message"]
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if cls is None:
        found = getattr(builtins, name, None)
        cls = found if isinstance(found, type) and issubclass(found, Exception) else None
    if cls is None:
        return RemoteJobError(f"{name} on {where}: {message}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    try:
        exc.__dict__.update(from_plain(data.get("attrs") or {}))
    except AttributeError:  # a builtin without a __dict__
        pass
    return exc


# --- the actor ----------------------------------------------------------------------------

class NodeServer:
    """The actor class (wrapped by ``ray.remote`` when a pool starts): one managed ComfyUI on
    this node, its Discomfort, and a watchdog that stops it if the actor dies."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.discomfort: Any = None
        self.watchdog: subprocess.Popen | None = None
        self.jobs = 0

    async def start(self) -> dict:
        """This node's server up: its ``info()``, or ``{"error": ...}`` (plain data, as every
        answer of the actor is)."""
        from .orchestrator import Discomfort

        try:
            self.discomfort = await Discomfort.create(**self.settings)
        except Exception as exc:
            return {"error": _error_to_plain(exc)}
        server = self.discomfort.Worker.server
        if server is not None and server.pid is not None:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(server.pid)],
                start_new_session=True)
        return self.info()

    def info(self) -> dict:
        from .store.root import default_root

        ray = _ray()
        worker = self.discomfort.Worker if self.discomfort is not None else None
        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                "pid": os.getpid(), "url": worker.url if worker else None,
                "server_pid": worker.server.pid if worker and worker.server else None,
                "store_root": str(default_root()), "jobs": self.jobs}

    async def run(self, workflows: list, inputs: dict, options: dict) -> dict:
        """One job: a plain-data outcome, never an exception (``ok``, ``result`` or ``error``,
        what ran)."""
        started = time.monotonic()
        self.jobs += 1
        discomfort = self.discomfort
        before = discomfort.last_run
        outcome: dict[str, Any] = {"node": self.info()["node"], "pid": os.getpid()}
        try:
            result = await discomfort.run(workflows, from_plain(inputs), progress=False, **options)
            outcome.update(ok=True, result=to_plain(result, "result"))
        except Exception as exc:
            outcome.update(ok=False, error=_error_to_plain(exc))
        report = discomfort.last_run if discomfort.last_run is not before else None
        outcome["executed"] = dict(report.executions()) if report is not None else {}
        outcome["prompt_ids"] = list(report.prompt_ids) if report is not None else []
        outcome["seconds"] = time.monotonic() - started
        return outcome

    async def restart(self) -> dict:
        """A fresh server in place of one that died."""
        await self.shutdown()
        return await self.start()

    async def shutdown(self) -> None:
        if self.discomfort is not None:
            discomfort, self.discomfort = self.discomfort, None
            await discomfort.shutdown()
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
            self.watchdog = None


# --- the driver ---------------------------------------------------------------------------

@dataclass
class RayJobReport(JobReport):
    """A pool job's report (see ``JobReport``), with the node and actor that ran it; what ran
    comes back as counts of node classes (``executed``), not as a ``RunReport``."""

    node: str | None = None                   # the Ray node id of its last attempt
    actor_pid: int | None = None              # the actor's process there
    executed: Counter = field(default_factory=Counter)
    prompt_ids: list[str] = field(default_factory=list)

    def executions(self, class_type: str | None = None) -> Counter | int:
        return Counter(self.executed) if class_type is None else self.executed[class_type]


@dataclass
class _Actor:
    index: int
    handle: Any
    info: dict
    gpu: bool
    state: str = UP            # UP, "restarting", RETIRED
    busy: bool = False
    recipes: set[str] = field(default_factory=set)
    jobs: int = 0
    last_used: int = 0


class RayPool:
    """``pool = await RayPool.create()`` (Ray connected first); ``await pool.map(workflows,
    [inputs, ...])`` or ``await pool.run(...)``; ``await pool.shutdown()``."""

    def __init__(self, actors: list[_Actor], job_timeout: float):
        self._actors = actors
        self._job_timeout = job_timeout
        self._changed = asyncio.Condition()
        self._clock = 0
        self._closed = False
        self._background: set[asyncio.Task] = set()
        self.last_map: list[RayJobReport] | None = None
        self.last_run: RayJobReport | None = None

    @classmethod
    async def create(cls, *, address: str | None = None, per: str = "node",
                     nodes: Sequence[str] | None = None, start_timeout: float = 300.0,
                     job_timeout: float = 3600.0, **options) -> RayPool:
        """Start one actor, each with its managed ComfyUI, per alive node of the connected
        Ray cluster (``per="gpu"``: one per GPU, each given that GPU by Ray; ``nodes``: only
        these node ids). ``options`` are ``Discomfort.create``'s, for every server (paths in
        them are paths on each node). ``address``: connect first with
        ``ray.init(address=...)`` (else Ray must be initialized already). ``job_timeout``
        bounds each attempt (a job's own ``timeout`` plus a minute, when it has one)."""
        ray = _ray()
        if per not in ("node", "gpu"):
            raise InvalidArgumentError(f"per must be 'node' or 'gpu', not {per!r}")
        if not ray.is_initialized():
            if address is None:
                raise ComfyServerError(
                    "Ray is not connected: call ray.init(address=...) first, or give address=")
            ray.init(address=address)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = [n for n in ray.nodes() if n.get("Alive")]
        if nodes is not None:
            alive = [n for n in alive if n["NodeID"] in set(nodes)]
        remote_cls = ray.remote(NodeServer)
        handles, gpus = [], []
        for node in alive:
            resources = node.get("Resources", {})
            count = int(resources.get("GPU", 0)) if per == "gpu" else 1
            if count < 1:
                continue
            for settings in _node_settings(count, per == "gpu", int(resources.get("CPU", 1)), options):
                handles.append(remote_cls.options(
                    num_cpus=0, num_gpus=1 if per == "gpu" else 0, max_concurrency=4,
                    max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                ).remote(to_plain(settings, "options")))
                gpus.append(per == "gpu")
        if not handles:
            raise ComfyStartError(f"no Ray node to start a server on (per={per!r})")
        starts = [asyncio.wrap_future(h.start.remote().future()) for h in handles]
        try:
            done = await asyncio.wait_for(asyncio.gather(*starts, return_exceptions=True),
                                          start_timeout + 30)
        except (TimeoutError, asyncio.CancelledError):
            for handle in handles:  # their watchdogs stop any server already up
                ray.kill(handle)
            raise
        failed: list[BaseException] = []
        for answer in done:
            if isinstance(answer, BaseException):
                failed.append(answer)
            elif "error" in answer:
                failed.append(_error_from_plain(answer["error"], "a Ray node"))
        actors = [_Actor(i, h, d, g) for i, (h, d, g) in enumerate(zip(handles, done, gpus, strict=True))
                  if isinstance(d, dict) and "error" not in d]
        if failed:
            await cls(actors, job_timeout).shutdown()
            for handle in handles:
                ray.kill(handle)
            raise ComfyStartError(f"a server on a Ray node did not start: {failed[0]}") from failed[0]
        return cls(actors, job_timeout)

    async def shutdown(self) -> None:
        """Stop every actor's server, then the actor. Waiting jobs fail. Idempotent."""
        ray = _ray()
        if self._closed:
            return
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        live = [a for a in self._actors if a.state != RETIRED]
        stops = [asyncio.wrap_future(a.handle.shutdown.remote().future()) for a in live]
        try:
            await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), 60)
        except TimeoutError:
            log.warning("discomfort: a Ray actor did not stop its server in 60 s; killing it")
        for actor in self._actors:
            actor.state = RETIRED
            if ray.is_initialized():  # (ray.kill would start a local Ray otherwise)
                ray.kill(actor.handle)  # its watchdog stops a server it had not stopped

    async def __aenter__(self) -> RayPool:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.shutdown()

    def __len__(self) -> int:
        return len(self._actors)

    def status(self) -> list[dict]:
        """Each actor: its node, process, server URL, state, jobs and recipes held."""
        return [dict(a.info, index=a.index, state=a.state, busy=a.busy, jobs=a.jobs,
                     recipes=len(a.recipes)) for a in self._actors]

    def actor(self, index: int) -> Any:
        """The Ray actor handle of server ``index`` (to inspect it, or ``ray.kill`` it)."""
        return self._actors[index].handle

    # --- jobs -----------------------------------------------------------------------------

    async def run(self, workflows, inputs: dict | None = None, **run_options) -> dict[str, Any]:
        """One job on a free actor: its result, or its exception raised."""
        job = self._job(workflows, inputs, run_options)
        report = await self._execute(None, job)
        self.last_run = report
        if report.error is not None:
            raise report.error
        return report.result or {}

    async def map(self, workflows, inputs: Sequence[dict | None], *, progress: bool = True,
                  return_exceptions: bool = True, **run_options) -> list:
        """Run ``workflows`` once per item of ``inputs`` over every actor; results in input
        order, a failed job's exception in its slot (``return_exceptions=False``: the first,
        in input order, raised once all have ended)."""
        if isinstance(inputs, (dict, str, bytes)) or not isinstance(inputs, Sequence):
            raise WrongTypeError(f"inputs must be a list with one dict per job, not "
                                 f"{type(inputs).__name__}")
        jobs = [self._job(workflows, item, run_options) for item in inputs]
        self.last_map = await run_jobs([self._execute(i, job) for i, job in enumerate(jobs)],
                                       progress)
        return job_results(self.last_map, return_exceptions)

    def _job(self, workflows, inputs, run_options) -> dict:
        """A job as plain data, checked (mistakes of the call raise here)."""
        if self._closed:
            raise ComfyServerError("this pool was shut down; create a new one")
        unknown = [k for k in run_options if k not in RAY_RUN_OPTIONS]
        if unknown:
            raise WrongTypeError(f"a Ray pool's jobs take no option {unknown[0]!r} (they take "
                                 f"{', '.join(RAY_RUN_OPTIONS)}, progress)")
        if isinstance(workflows, (str, os.PathLike, dict)):
            workflows = [workflows]
        if not isinstance(workflows, (list, tuple)) or not workflows:
            raise WrongTypeError("workflows must be a workflow (a path or a dict) or a list of them")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise WrongTypeError(f"each job's inputs must be a dict, not {type(inputs).__name__}")
        wants = {recipe_digest(v) for v in inputs.values() if is_recipe(v)}
        return {"workflows": to_plain([load_workflow(w) for w in workflows], "workflows"),
                "inputs": to_plain(inputs, "inputs"), "options": to_plain(run_options, "options"),
                "wants": wants}

    async def _execute(self, index: int | None, job: dict) -> RayJobReport:
        started = time.monotonic()
        report = RayJobReport(index)
        avoid: set[int] = set()
        try:
            while True:
                actor = await self._acquire(job["wants"], avoid)
                if actor is None:
                    report.error = ComfyServerError(
                        "the pool was shut down" if self._closed else
                        "no Ray actor of the pool is left: each died (see the log)")
                    break
                report.attempts += 1
                report.server, report.server_url = actor.index, actor.info.get("url")
                report.node, report.actor_pid = actor.info.get("node"), actor.info.get("pid")
                fault = await self._attempt(actor, job, report)
                if fault is None:
                    break
                report.faults.append(fault)
                avoid.add(actor.index)
                if report.attempts >= 2:
                    report.error = fault
                    break
                log.warning("discomfort: Ray actor %d failed a job (%s); running it again on "
                            "another actor", actor.index, type(fault).__name__)
        finally:
            report.seconds = time.monotonic() - started
        return report

    async def _attempt(self, actor: _Actor, job: dict, report: RayJobReport) -> BaseException | None:
        ray = _ray()
        timeout = job["options"].get("timeout")
        deadline = self._job_timeout if timeout is None else min(self._job_timeout, timeout + 60)
        where = f"Ray actor {actor.index} (node {str(actor.info.get('node'))[:12]})"
        fault: BaseException | None = None
        outcome = None
        try:
            ref = actor.handle.run.remote(job["workflows"], job["inputs"], job["options"])
            outcome = await asyncio.wait_for(asyncio.wrap_future(ref.future()), deadline)
        except TimeoutError:
            fault = ComfyServerUnresponsive(f"{where} gave no answer in {deadline:.0f} s")
            ray.kill(actor.handle)
            actor.state = RETIRED
        except ray.exceptions.RayActorError as exc:
            fault = ComfyServerDied(f"{where} died mid-job: {type(exc).__name__}")
            actor.state = RETIRED
        except ray.exceptions.RayError as exc:  # e.g. the object was lost with its node
            fault = ComfyServerDied(f"{where} lost the job: {type(exc).__name__}: {exc}")
            actor.state = RETIRED
        actor.jobs += 1
        if outcome is not None:
            report.executed = Counter(outcome.get("executed") or {})
            report.prompt_ids = list(outcome.get("prompt_ids") or [])
            if outcome["ok"]:
                report.result, report.error = from_plain(outcome["result"]), None
                actor.recipes |= job["wants"] | {recipe_digest(v) for v in report.result.values()
                                                 if is_recipe(v)}
            else:
                error = _error_from_plain(outcome["error"], where)
                if outcome["error"].get("fault"):
                    fault = error
                    self._restart(actor)
                else:
                    report.error = error
        await self._release(actor)
        return fault

    # --- the scheduler --------------------------------------------------------------------

    async def _acquire(self, wants: set[str], avoid: set[int]) -> _Actor | None:
        """A free actor (None when none is left or the pool is shut down)."""
        async with self._changed:
            while True:
                if self._closed or all(a.state == RETIRED for a in self._actors):
                    return None
                actor = self._pick(wants, avoid)
                if actor is not None:
                    actor.busy = True
                    return actor
                await self._changed.wait()

    def _pick(self, wants: set[str], avoid: set[int]) -> _Actor | None:
        return pick_worker(self._actors, wants, avoid)

    async def _release(self, actor: _Actor) -> None:
        async with self._changed:
            actor.busy = False
            self._clock += 1
            actor.last_used = self._clock
            self._changed.notify_all()

    def _restart(self, actor: _Actor) -> None:
        """A live actor whose server died: a fresh server there, in the background."""
        actor.state = "restarting"
        actor.recipes.clear()

        async def restart() -> None:
            try:
                ref = actor.handle.restart.remote()
                info = await asyncio.wait_for(asyncio.wrap_future(ref.future()), 330)
                if "error" in info:
                    raise _error_from_plain(info["error"], f"Ray actor {actor.index}")
                actor.info = info
                actor.state = UP if not self._closed else RETIRED
            except Exception as exc:
                log.error("discomfort: Ray actor %d could not restart its server, and is "
                          "retired: %s", actor.index, exc)
                actor.state = RETIRED
            async with self._changed:
                self._changed.notify_all()

        task = asyncio.ensure_future(restart())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _node_settings(count: int, gpu: bool, cores: int, options: dict) -> list[dict]:
    """Discomfort.create keywords for the ``count`` servers of one node: on CPU, the node's
    cores shared out (as on one machine); on a GPU, no pinning (Ray gives each actor its own
    GPU through CUDA_VISIBLE_DEVICES)."""
    if gpu:
        return [dict(options) for _ in range(count)]
    return server_settings(count, devices="cpu", options=options, cores=max(cores, 1))


__all__ = ["RayPool", "RayJobReport", "NodeServer", "to_plain", "from_plain"]
