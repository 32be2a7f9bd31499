"""DiscomfortPool: several ComfyUI servers on one machine, driven as one.

The pool composes one :class:`~discomfort.orchestrator.Discomfort` per server and runs no
prompt logic of its own: a job is one ``Discomfort.run`` on a server the pool picked. What the
pool decides is where and when:

- at most one job (so one prompt) per server at a time; a job takes a free server or waits,
  in arrival order, for one to free up;
- model affinity: a job whose inputs are references (recipes) prefers a free server that
  already ran those recipes, so each server loads a model once, not once per job;
- faults: a server that dies or stops answering mid-job is replaced in the background and
  the job runs again, once, on another server; a job that fails by itself (validation, a
  node's error, a timeout) is never retried and its error comes back in its slot;
- pinning: each managed server gets its own settings (``--cuda-device N`` where CUDA devices
  exist; on CPU, a share of the cores, since servers that each use every core are slower
  together than one alone).

Every wait is bounded: a job waits for a server only while other jobs run (each bounded by
the connector's liveness rule and the caller's ``timeout``) or while a server is replaced
(bounded by ``start_timeout``); when no server is left, waiting jobs fail at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import hashlib
import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .errors import (
    ComfyServerDied,
    ComfyServerError,
    ComfyServerUnresponsive,
    ConfigError,
    InvalidArgumentError,
    PromptLost,
    WrongTypeError,
)
from .graph.refs import is_recipe
from .inputs import check_inputs
from .orchestrator import Discomfort, Workflow
from .report import RunReport
from .store import WorkflowContext

R = TypeVar("R", bound="JobReport")
log = logging.getLogger("discomfort")

# What a server's own failure looks like (the job did nothing wrong): rerun it elsewhere.
SERVER_FAULTS = (ComfyServerDied, ComfyServerUnresponsive, PromptLost)
# Discomfort.run's options a pool job passes through (``context``/``progress`` are the pool's).
RUN_OPTIONS = ("iterations", "use_ram", "fixed_seeds", "seed", "timeout", "on_event")
UP, REPLACING, RETIRED = "up", "replacing", "retired"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_last_run: contextvars.ContextVar[JobReport | None] = contextvars.ContextVar(
    "discomfort_pool_last_run", default=None)


def recipe_digest(recipe: dict) -> str:
    """A recipe's identity for affinity: the digest of its canonical JSON (a recipe is
    content-addressed, so the same producer gives the same digest on every server)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class JobReport:
    """One job of the pool: where it ran, how often, and what the run did."""

    index: int | None                 # its position in map(); None for run()
    server: int | None = None         # the pool's server that ran its last attempt
    server_url: str | None = None
    attempts: int = 0                 # 2 when a server fault made it run again
    faults: list[BaseException] = field(default_factory=list)  # the server faults it met
    report: RunReport | None = None   # Discomfort.last_run of its last attempt
    error: BaseException | None = None
    result: dict | None = None
    seconds: float = 0.0              # from submission (waiting included) to its end

    @property
    def ok(self) -> bool:
        return self.error is None

    def executions(self, class_type: str | None = None) -> Counter | int:
        """How often node classes executed in its last attempt (see ``RunReport``)."""
        if self.report is None:
            return Counter() if class_type is None else 0
        return self.report.executions(class_type)


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of one server of the pool (``pool.status()``)."""

    index: int
    url: str
    pid: int | None        # a managed server's process id; None when attached
    state: str             # "up", "replacing" or "retired"
    busy: bool
    jobs: int              # jobs finished on it (any outcome)
    replacements: int      # how often it was replaced after a fault
    recipes: int           # distinct recipes it ran (what affinity prefers it for)


class _Server:
    """One slot of the pool: a Discomfort and what the scheduler knows of it."""

    def __init__(self, index: int, settings: dict, discomfort: Discomfort):
        self.index, self.settings, self.discomfort = index, settings, discomfort
        self.state, self.busy = UP, False
        self.recipes: set[str] = set()
        self.identity = _identity(discomfort)
        self.jobs = self.replacements = 0
        self.last_used = 0
        self.error: BaseException | None = None

    def ran(self, digests: set[str]) -> None:
        """Record recipes this server ran; a server restarted under us holds none."""
        identity = _identity(self.discomfort)
        if identity != self.identity:
            self.recipes.clear()
            self.identity = identity
        self.recipes |= digests


def _identity(discomfort: Discomfort) -> Any:
    worker = discomfort.Worker
    return worker.server.pid if worker.server is not None else worker.url


@dataclass
class _Waiter:
    future: asyncio.Future
    wants: set[str]
    avoid: set[int]


@dataclass
class _Job:
    index: int | None
    workflows: list
    inputs: dict
    refs: dict[str, dict]             # input key -> recipe, saved pass_by="ref"
    context: WorkflowContext | None   # the caller's; None: a temporary one per attempt
    options: dict
    progress: bool
    wants: set[str]


class DiscomfortPool:
    """``pool = await DiscomfortPool.create(servers=2)``; ``await pool.map(workflows,
    [inputs, ...])`` or ``await pool.run(...)`` from many tasks; ``await pool.shutdown()``."""

    def __init__(self, servers: list[_Server]):
        self._servers = servers
        self._waiters: list[_Waiter] = []
        self._replacing: set[asyncio.Task] = set()
        self._contexts_in_use: set[int] = set()
        self._clock = itertools.count(1)
        self._closed = False
        self.last_map: list[JobReport] | None = None  # the last map() to end: its job reports

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def create(cls, servers: int | None = None, *, urls: Sequence[str] = (),
                     devices: Sequence[int] | str | None = None,
                     per_server: Sequence[dict] | None = None,
                     cpu_threads: int | None = None, pass_by_rules=None,
                     **options) -> DiscomfortPool:
        """Start ``servers`` managed servers (default: one per CUDA device, else 2) and
        attach to each of ``urls``; ``options`` are ``Discomfort.create``'s, for every
        managed server. See :func:`server_settings` for ``devices``, ``per_server`` and
        ``cpu_threads``. All servers start at once; if one fails, the others are stopped
        and its error is raised."""
        settings = server_settings(servers, urls=urls, devices=devices, per_server=per_server,
                                   cpu_threads=cpu_threads, options=options)
        if pass_by_rules is not None:
            settings = [dict(s, pass_by_rules=pass_by_rules) for s in settings]
        starting = asyncio.ensure_future(asyncio.gather(
            *(Discomfort.create(**s) for s in settings), return_exceptions=True))
        try:
            made = await asyncio.shield(starting)
        except asyncio.CancelledError:
            made = await starting  # let each start end, so none is left running
            await _stop_all([m for m in made if isinstance(m, Discomfort)])
            raise
        failed = [m for m in made if isinstance(m, BaseException)]
        if failed:
            await _stop_all([m for m in made if isinstance(m, Discomfort)])
            raise failed[0]
        started = [m for m in made if isinstance(m, Discomfort)]
        return cls([_Server(i, s, d) for i, (s, d) in enumerate(zip(settings, started, strict=True))])

    async def shutdown(self) -> None:
        """Stop every managed server (replacements still starting included); detach from
        attached ones. Waiting jobs fail. Idempotent."""
        self._closed = True
        self._fail_waiters(ComfyServerError("the pool was shut down"))
        if self._replacing:  # a start cannot be cancelled without leaking its process
            await asyncio.gather(*self._replacing, return_exceptions=True)
        await _stop_all([s.discomfort for s in self._servers])

    async def __aenter__(self) -> DiscomfortPool:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.shutdown()

    @property
    def servers(self) -> list[Discomfort]:
        """Each server's Discomfort, by index (a replaced server's new one)."""
        return [s.discomfort for s in self._servers]

    def __len__(self) -> int:
        return len(self._servers)

    def status(self) -> list[ServerStatus]:
        return [ServerStatus(s.index, s.discomfort.Worker.url,
                             s.discomfort.Worker.server.pid if s.discomfort.Worker.server else None,
                             s.state, s.busy, s.jobs, s.replacements, len(s.recipes))
                for s in self._servers]

    @property
    def last_run(self) -> JobReport | None:
        """The report of the last ``run()`` that ended in this asyncio task (each of many
        concurrent tasks sees its own; ``asyncio.wait_for`` on Python 3.11 runs its
        awaitable in a task of its own, so read it there)."""
        return _last_run.get()

    # --- running jobs ---------------------------------------------------------------------

    async def run(self, workflows: Workflow | Sequence[Workflow], inputs: dict | None = None, *,
                  context: WorkflowContext | None = None, progress: bool = False,
                  **run_options) -> dict[str, Any]:
        """One job on a free server (waiting for one if none is): ``Discomfort.run``'s
        result, or its exception. Safe to call from many tasks at once. ``progress``: the
        run's own per-prompt bar (off by default: concurrent bars interleave)."""
        job = self._job(None, workflows, inputs, context, run_options, progress)
        report = await self._execute(job)
        _last_run.set(report)
        if report.error is not None:
            raise report.error
        return report.result or {}

    async def map(self, workflows: Workflow | Sequence[Workflow], inputs: Sequence[dict | None],
                  *, contexts: Sequence[WorkflowContext | None] | None = None,
                  progress: bool = True, return_exceptions: bool = True,
                  **run_options) -> list:
        """Run ``workflows`` once per item of ``inputs``, on every server at once; return
        the results in input order. A job that fails has its exception in its slot
        (``return_exceptions=False``: the first failure, in input order, is raised once
        every job has ended). ``contexts``: one per job (None entries: a temporary one);
        ``progress``: one bar over all jobs. ``run_options`` go to each ``Discomfort.run``."""
        if isinstance(inputs, (dict, str, bytes)) or not isinstance(inputs, Sequence):
            raise WrongTypeError(f"inputs must be a list with one dict per job, not "
                                 f"{type(inputs).__name__}")
        if contexts is not None:
            if isinstance(contexts, WorkflowContext) or not isinstance(contexts, Sequence):
                raise WrongTypeError("contexts must be a list with one context (or None) per job")
            if len(contexts) != len(inputs):
                raise InvalidArgumentError(f"contexts has {len(contexts)} entries for "
                                           f"{len(inputs)} jobs: give one per job")
            given = [id(c) for c in contexts if c is not None]
            if len(given) != len(set(given)):
                raise InvalidArgumentError(
                    "one context is given to several jobs: jobs run at the same time and "
                    "would overwrite each other's outputs; give each its own (pass shared "
                    "models as recipes in inputs)")
        jobs = [self._job(i, workflows, item, contexts[i] if contexts else None, run_options, False)
                for i, item in enumerate(inputs)]
        self.last_map = await run_jobs([self._execute(job) for job in jobs], progress)
        return job_results(self.last_map, return_exceptions)

    def _job(self, index, workflows, inputs, context, run_options, progress) -> _Job:
        """A job, checked: errors of the call itself raise here, before anything runs."""
        if self._closed:
            raise ComfyServerError("this pool was shut down; create a new one")
        unknown = [k for k in run_options if k not in RUN_OPTIONS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], RUN_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise WrongTypeError(f"the pool's jobs take no option {unknown[0]!r}{hint} (they "
                                 f"take {', '.join(RUN_OPTIONS)}, context/contexts, progress)")
        if isinstance(workflows, (str, os.PathLike, dict)):
            workflows = [workflows]
        if not isinstance(workflows, (list, tuple)) or not workflows:
            raise WrongTypeError(f"workflows must be a path, a dict or a non-empty list of them, "
                                 f"not {workflows!r:.80}")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            where = "inputs" if index is None else f"inputs[{index}]"
            raise WrongTypeError(f"{where} must be a dict {{unique_id: value}} (or None), not "
                                 f"a {type(inputs).__name__}")
        if context is not None and not isinstance(context, WorkflowContext):
            raise WrongTypeError(f"context must be a WorkflowContext, not {type(context).__name__}")
        refs = {k: v for k, v in inputs.items() if is_recipe(v)}
        wants = {recipe_digest(r) for r in refs.values()}
        if context is not None:
            wants |= _context_refs(context)
        values = {k: v for k, v in inputs.items() if k not in refs}
        return _Job(index, list(workflows), values, refs, context, dict(run_options), progress, wants)

    async def _execute(self, job: _Job) -> JobReport:
        """Run a job to its end: its exception is kept in the report, never raised (only a
        cancellation propagates). A server fault makes it run again once, elsewhere."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        report = JobReport(job.index)
        avoid: set[int] = set()
        if job.context is not None:
            if id(job.context) in self._contexts_in_use:
                report.error = InvalidArgumentError(
                    "this context is in use by another pool job that has not ended: give each "
                    "concurrent job its own")
                return report
            self._contexts_in_use.add(id(job.context))
        try:
            while True:
                try:
                    server = await self._acquire(job.wants, avoid)
                except ComfyServerError as exc:  # no server left
                    report.error = exc
                    break
                report.attempts += 1
                report.server, report.server_url = server.index, server.discomfort.Worker.url
                outcome = await self._attempt(server, job, report)
                if outcome is None:  # done, well or badly
                    break
                report.faults.append(outcome)
                avoid.add(server.index)
                if report.attempts >= 2:
                    report.error = outcome
                    break
                log.warning("discomfort: server %d failed a job (%s); running it again on "
                            "another server", server.index, type(outcome).__name__)
        finally:
            self._contexts_in_use.discard(id(job.context))
            report.seconds = loop.time() - started
        return report

    async def _attempt(self, server: _Server, job: _Job, report: JobReport) -> BaseException | None:
        """One attempt on ``server`` (already taken): None when the job ended, or the server
        fault that stopped it (the server is then being replaced)."""
        discomfort = server.discomfort
        ctx = job.context
        succeeded = fault = False
        before = discomfort.last_run  # a run refused before it began leaves the last one's
        try:
            if ctx is None:
                ctx = WorkflowContext()  # the job's own, for this attempt only
            if job.refs:
                await self._save_refs(discomfort, job, ctx)
            report.result = await discomfort.run(job.workflows, job.inputs, context=ctx,
                                                 progress=job.progress, **job.options)
            report.error, succeeded = None, True
        except SERVER_FAULTS as exc:
            fault = True
            return exc
        except Exception as exc:  # the job's own failure: never retried
            report.error = exc
        finally:
            report.report = discomfort.last_run if discomfort.last_run is not before else None
            if job.context is None and ctx is not None:
                ctx.shutdown()
            server.jobs += 1
            if fault:
                self._replace(server)
            else:
                ran = set(job.wants)
                if succeeded:
                    ran |= {recipe_digest(v) for v in (report.result or {}).values() if is_recipe(v)}
                self._release(server, ran if succeeded else set())
        return None

    @staticmethod
    async def _save_refs(discomfort: Discomfort, job: _Job, ctx: WorkflowContext) -> None:
        """Recipes given in inputs go into the context by reference (the way a captured
        model is kept), after the same key check ``run`` does for its inputs."""
        object_info = await discomfort.Worker.object_info()
        prompts = [(_label(i, w), await discomfort.Worker.get_prompt_from_workflow(w))
                   for i, w in enumerate(job.workflows)]
        check_inputs(job.refs, prompts, object_info)
        for key, recipe in job.refs.items():
            ctx.save(key, recipe, pass_by="ref")

    # --- the scheduler --------------------------------------------------------------------

    async def _acquire(self, wants: set[str], avoid: set[int]) -> _Server:
        """A free server for a job, when one is (a rerun goes first: it waited longest)."""
        if self._closed:
            raise ComfyServerError("the pool was shut down")
        waiter = _Waiter(asyncio.get_running_loop().create_future(), wants, avoid)
        if avoid:
            self._waiters.insert(0, waiter)
        else:
            self._waiters.append(waiter)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled() \
                    and waiter.future.exception() is None:
                self._release(waiter.future.result(), set())  # taken just as we were cancelled
            raise

    def _dispatch(self) -> None:
        """Give free servers to waiting jobs, oldest first."""
        if all(s.state == RETIRED for s in self._servers):
            self._fail_waiters(ComfyServerError(
                "no server of the pool is left: each died and could not be replaced "
                "(see the log for why)"))
            return
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            server = self._pick(waiter.wants, waiter.avoid)
            if server is None:
                continue
            server.busy = True
            self._waiters.remove(waiter)
            waiter.future.set_result(server)

    def _pick(self, wants: set[str], avoid: set[int]) -> _Server | None:
        return pick_worker(self._servers, wants, avoid)

    def _release(self, server: _Server, ran: set[str]) -> None:
        server.busy = False
        server.last_used = next(self._clock)
        server.ran(ran)
        self._dispatch()

    def _fail_waiters(self, error: BaseException) -> None:
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
        self._waiters.clear()

    def _replace(self, server: _Server) -> None:
        """Take a faulty server out of service and start a fresh one in its place, in the
        background (jobs meanwhile go to the others)."""
        server.state, server.busy = REPLACING, False
        task = asyncio.ensure_future(self._replace_server(server))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replace_server(self, server: _Server) -> None:
        old = server.discomfort
        try:
            await old.shutdown()  # the dead (or hung) server: its process group and files
        except Exception as exc:  # stopping a dead server is best effort
            log.warning("discomfort: stopping server %d failed: %s", server.index, exc)
        try:
            if self._closed:
                raise ComfyServerError("the pool was shut down")
            fresh = await Discomfort.create(**server.settings)
        except Exception as exc:
            log.error("discomfort: server %d could not be replaced, and is retired: %s",
                      server.index, exc)
            server.state, server.error = RETIRED, exc
        else:
            server.discomfort, server.identity = fresh, _identity(fresh)
            server.recipes.clear()
            server.replacements += 1
            server.state = UP
            if self._closed:
                await fresh.shutdown()
        self._dispatch()


def server_settings(servers: int | None = None, *, urls: Sequence[str] = (),
                    devices: Sequence[int] | str | None = None,
                    per_server: Sequence[dict] | None = None, cpu_threads: int | None = None,
                    options: dict | None = None, cuda_devices: int | None = None,
                    cores: int | None = None) -> list[dict]:
    """``Discomfort.create`` keyword arguments for each server of a pool: the managed ones
    first, then one per attached URL.

    - ``servers``: how many managed servers (default: one per device, else 2 with ``urls``
      none; 0 with only ``urls``).
    - ``devices``: CUDA device ids, server ``i`` pinned to ``devices[i % len(devices)]`` with
      ``--cuda-device``; ``None``: every CUDA device this machine has (``cuda_devices``, else
      asked of torch); ``"cpu"`` or ``[]``: none.
    - on CPU (no device), each managed server gets ``cpu_threads`` threads (default: the
      cores shared out, at least 1) through ``OMP_NUM_THREADS``, unless its ``env`` sets it.
    - ``per_server``: one dict per managed server, over ``options`` (``extra_args`` add up).
    """
    options = dict(options or {})
    if "url" in options:
        raise ConfigError("a pool attaches with urls=[...], not url=")
    if isinstance(urls, str) or not all(isinstance(u, str) and u for u in urls):
        raise WrongTypeError("urls must be a list of server URLs (strings)")
    if devices is None:
        count = _cuda_device_count() if cuda_devices is None else cuda_devices
        devices = list(range(count)) if options.get("cpu") is not True else []
    elif devices == "cpu":
        devices = []
    elif isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence) or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in devices):
        raise InvalidArgumentError(f"devices must be a list of CUDA device ids (whole numbers "
                                   f">= 0), or 'cpu'; got {devices!r}")
    devices = [int(d) for d in devices]
    if servers is None:
        servers = len(devices) or (0 if urls else 2)
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < 0:
        raise InvalidArgumentError(f"servers must be a whole number >= 0, got {servers!r}")
    if servers + len(urls) < 1:
        raise InvalidArgumentError("a pool needs at least one server: servers >= 1 or urls")
    if per_server is not None and (isinstance(per_server, dict) or len(per_server) != servers
                                   or not all(isinstance(p, dict) for p in per_server)):
        raise InvalidArgumentError(f"per_server must be a list of {servers} dicts, one per "
                                   "managed server")
    if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int)
                                    or cpu_threads < 1):
        raise InvalidArgumentError(f"cpu_threads must be a whole number >= 1, got {cpu_threads!r}")
    base_args = _args(options.get("extra_args"), "extra_args")
    if devices and "--cuda-device" in base_args:
        raise ConfigError("extra_args sets --cuda-device for every server, and devices pins "
                          "each to its own: give one or the other")
    cores = cores or os.cpu_count() or 1
    threads = cpu_threads or max(1, cores // max(servers, 1))
    settings = []
    for i in range(servers):
        own = dict((per_server or [{}] * servers)[i])
        merged = {**options, **own}
        args = base_args + _args(own.get("extra_args"), f"per_server[{i}].extra_args")
        env = {**(options.get("env") or {}), **(own.get("env") or {})}
        if devices and "--cuda-device" not in args:
            args += ["--cuda-device", str(devices[i % len(devices)])]
        elif not devices and merged.get("cpu") is not False and not set(THREAD_VARS) & set(env):
            env.update({name: str(threads) for name in THREAD_VARS})
        merged.update(extra_args=args, env=env)
        settings.append(merged)
    attached = {k: v for k, v in options.items() if k in ("token", "unresponsive_timeout")}
    settings += [dict(attached, url=u) for u in urls]
    return settings


def _args(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise WrongTypeError(f"{name} must be a list of command-line arguments, not {value!r:.60}")
    return [str(a) for a in value]


def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _context_refs(context: WorkflowContext) -> set[str]:
    """Digests of the recipes a caller's context holds by reference."""
    digests = set()
    for key in context.list_keys():
        if context.entry(key).is_ref:
            value = context.load(key)
            if is_recipe(value):
                digests.add(recipe_digest(value))
    return digests


def _label(index: int, workflow: Any) -> str:
    return os.path.basename(os.fspath(workflow)) if isinstance(workflow, (str, os.PathLike)) \
        else f"workflow {index}"


async def _stop_all(discomforts: list[Discomfort]) -> None:
    results = await asyncio.gather(*(d.shutdown() for d in discomforts), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("discomfort: stopping a server failed: %s", result)


W = TypeVar("W", bound="_Worker")


class _Worker(Protocol):
    """What the choice of a worker reads: a pool's server, or a Ray pool's actor."""

    index: int
    state: str          # UP, RETIRED, or on its way back
    busy: bool
    recipes: set[str]   # digests of the recipes it has run
    last_used: int


def pick_worker(workers: Sequence[W], wants: set[str], avoid: set[int]) -> W | None:
    """The free worker a job prefers: most of its recipes held; then (for a job with recipes)
    the fewest other models; then the longest idle. A worker the job met a fault on is avoided
    while another could still take the job."""
    free = [w for w in workers if w.state == UP and not w.busy]
    if any(w.state != RETIRED and w.index not in avoid for w in workers):
        free = [w for w in free if w.index not in avoid]
    if not free:
        return None
    return max(free, key=lambda w: (len(wants & w.recipes), -len(w.recipes) if wants else 0,
                                    -w.last_used))


async def run_jobs(jobs: list[Awaitable[R]], progress: bool) -> list[R]:
    """Run a map's jobs at once, one bar over them all; their reports in input order. Cancelled,
    every job is cancelled and waited for, so none runs on unseen."""
    bar = _JobsBar(len(jobs)) if progress else None
    tasks = [asyncio.ensure_future(job) for job in jobs]
    if bar is not None:
        for task in tasks:
            task.add_done_callback(bar.done)
    try:
        if tasks:
            await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return [task.result() for task in tasks]


def job_results(reports: Sequence[JobReport], return_exceptions: bool) -> list:
    """What map() returns: each job's result, or its error in its slot (``return_exceptions``)
    or raised, the first in input order."""
    if not return_exceptions:
        for report in reports:
            if report.error is not None:
                raise report.error
    return [r.result if r.error is None else r.error for r in reports]


class _JobsBar:
    """One tqdm bar over a map's jobs, counting failures as it goes."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="jobs", unit="job")
        self.failed = 0

    def done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is None and task.result().error is not None:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
