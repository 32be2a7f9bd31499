"""Discomfort: the facade that runs saved workflows from Python, in loops, with state.

It composes the parts and decides nothing that belongs to one of them: the connector talks to
the server, the graph core converts and inspects workflows, the context holds the values.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from .connector import ComfyConnector
from .errors import InvalidArgumentError, MissingOutputError, RunTimeout, WorkflowError, WrongTypeError
from .graph import check_node_types, is_api_format, load_workflow, ui_to_api
from .graph.discover import check_acyclic
from .graph.pass_by import load_rules
from .graph.ports import Port
from .graph.prepare import PreparedPrompt, StoreView, prepare_prompt
from .graph.refs import ancestors, is_recipe
from .graph.seeds import advance_controlled_widgets
from .inputs import check_inputs
from .protocol import Event
from .remote import RemoteRun, RemoteRuns
from .report import OutputFile, PromptReport, RunReport
from .store import WorkflowContext
from .tools import WorkflowTools

Workflow = str | os.PathLike | dict


class Discomfort:
    """``discomfort = await Discomfort.create()``; ``await discomfort.run([...])``;
    ``await discomfort.shutdown()``."""

    Context = WorkflowContext
    Tools = WorkflowTools

    def __init__(self, connector: ComfyConnector, pass_by_rules: dict[str, str] | None = None):
        self.Worker = connector
        self.pass_by_rules = pass_by_rules or load_rules()
        self.last_run: RunReport | None = None
        # A server on another machine: each context gets a run there (values over HTTP).
        self._remote = RemoteRuns(connector.remote) if connector.remote is not None else None

    @classmethod
    async def create(cls, config_path: str | os.PathLike | None = None, *,
                     pass_by_rules: str | os.PathLike | None = None, **server) -> Discomfort:
        """Start a headless ComfyUI (or attach to ``url``) as the config says.

        ``pass_by_rules``: a JSON file mapping port types to "val" or "ref", over the defaults
        (models and the like by reference; only what is known to be data by value)."""
        rules = load_rules(pass_by_rules)
        return cls(await ComfyConnector.create(config_path, **server), rules)

    async def shutdown(self) -> None:
        if self._remote is not None:
            await self._remote.close()  # the server deletes our runs now, not when they expire
        await self.Worker.kill_api()

    async def __aenter__(self) -> Discomfort:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.shutdown()

    async def run(self, workflows: Workflow | Sequence[Workflow], inputs: dict[str, Any] | None = None,
                  iterations: int = 1, use_ram: bool = True, context: WorkflowContext | None = None,
                  *, fixed_seeds: bool = False, seed: int | None = None, timeout: float | None = None,
                  progress: bool = True, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
        """Run ``workflows`` in order, ``iterations`` times; return every output port's value
        from the last iteration.

        ``inputs`` are checked against the ports that read them, then saved into the context
        (a refused run saves nothing). Each workflow runs as one prompt; output ports write
        into the context, so an output and an input sharing a unique_id carry a value from one
        iteration to the next. Controlled widgets (seeds set to randomize, increment...)
        advance between iterations as if Queue were pressed each time, unless
        ``fixed_seeds``; ``seed`` makes that and dynamic prompts reproducible. What ran, what
        was cached and the files output nodes wrote are in ``self.last_run``. Without a
        context, a temporary one is used.
        """
        sources = _check_run_args(workflows, iterations, timeout)
        loaded = [load_workflow(w) for w in sources]  # a malformed file fails before anything runs
        labels = [_label(i, w) for i, w in enumerate(sources)]
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        object_info = await self.Worker.object_info()
        rng = random.Random(seed)
        report = self.last_run = RunReport(seed=seed)
        choices: list[list[dict]] = [[] for _ in loaded]  # each prompt's dynamic prompt choices
        prompts = [self._to_prompt(w, object_info, rng, c) for w, c in zip(loaded, choices, strict=True)]
        values = check_inputs(inputs or {}, list(zip(labels, prompts, strict=True)), object_info)
        own_context = context is None
        ctx = await asyncio.to_thread(WorkflowContext) if context is None else context  # it reaps
        try:
            # Large values are copied and hashed in a thread: the websocket reader keeps going.
            for key, value in values.items():
                pass_by = "ref" if is_recipe(value) else "val"  # a model kept by reference
                await asyncio.to_thread(ctx.save, key, value, use_ram=use_ram, pass_by=pass_by)
            outputs: dict[str, Port] = {}
            for iteration in range(iterations):
                outputs = {}
                for index, workflow in enumerate(loaded):
                    if iteration:
                        choices[index] = []
                        prompts[index] = self._to_prompt(workflow, object_info, rng, choices[index])
                    report.dynamic_prompts.append(choices[index])
                    written = await self._run_prompt(prompts[index], labels[index], ctx, object_info,
                                                     use_ram, deadline, progress, on_event, report)
                    outputs.update(written)
                    if not fixed_seeds and not is_api_format(workflow) and iteration + 1 < iterations:
                        loaded[index], changes = advance_controlled_widgets(workflow, object_info, rng)
                        report.widget_changes.append(changes)
            return {uid: await asyncio.to_thread(ctx.load, uid) for uid in outputs}
        finally:
            if own_context:
                if self._remote is not None:
                    await self._remote.release(ctx)
                await asyncio.to_thread(ctx.shutdown)  # deletes the run's files

    async def load_images(self, files: Sequence[OutputFile] | None = None, *,
                          as_pil: bool = False) -> list:
        """The images output nodes wrote (default: every image of ``last_run``), fetched from
        the server: each as an IMAGE tensor ``[1, H, W, C]``, or a PIL image with ``as_pil``."""
        import io

        from PIL import Image

        from .images import image_to_tensor

        if files is None:
            files = self.last_run.images if self.last_run else []
        images = []
        for item in files:
            data = await self.Worker.fetch_file(item.filename, item.subfolder, item.type)
            picture = Image.open(io.BytesIO(data))
            images.append(picture if as_pil else image_to_tensor(picture))
        return images

    @staticmethod
    def _to_prompt(workflow: dict, object_info: dict, rng: random.Random, choices: list) -> dict:
        if is_api_format(workflow):
            check_node_types(workflow, object_info)
            check_acyclic(workflow)
            return workflow
        return ui_to_api(workflow, object_info, rng=rng, choices=choices)

    async def _run_prompt(self, prompt: dict, label: str, ctx: WorkflowContext, object_info: dict,
                          use_ram: bool, deadline: float | None, progress: bool,
                          on_event: Callable[[Event], None] | None, report: RunReport) -> dict[str, Port]:
        """One prompt: check and bind its ports, run it (within the run's ``deadline``, a loop
        time), prove every output arrived."""
        # Fingerprints may hash large values, frozen copies copy them: in a thread, so the
        # websocket reader keeps going. A server on another machine reads a mirror of ctx: the
        # values its ports read are uploaded as the pass asks for their fingerprints.
        remote: RemoteRun | None = None
        store: StoreView = ctx
        if self._remote is not None:
            remote, held = await self._remote.for_prompt(ctx)
            store = remote.mirror(ctx, held, asyncio.get_running_loop())
        ready = await asyncio.to_thread(self._prepare, prompt, ctx, store, object_info, use_ram)
        bound, out_ports, stamp = ready.prompt, ready.outputs, ready.stamp
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                prompt_id = await self.Worker.queue(bound, ready.extra_data)
        except TimeoutError:
            if not scope.expired():  # the server's own silence: ComfyServerUnresponsive
                raise
            raise RunTimeout("the run's timeout ran out while the server took the prompt "
                             "(is it stopped or hung?)") from None
        record = PromptReport(prompt_id, label, {k: v["class_type"] for k, v in bound.items()})
        report.prompts.append(record)
        bar = _ProgressBar(_runnable(bound, object_info), prompt_id) if progress else None
        try:
            timeout = None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0.001)
            await self.Worker.wait(prompt_id, timeout=timeout, history=False,
                                   on_event=_fan_out(record.on_event, on_event, bar and bar.on_event))
        except asyncio.CancelledError:  # Ctrl-C, a notebook's stop button, an outer timeout
            await asyncio.shield(self.Worker.abandon(prompt_id))
            raise
        finally:
            if bar:
                bar.close()
        uids = [p.unique_id for p in out_ports]
        stamps = await remote.stamps(uids) if remote else await asyncio.to_thread(_stamps, ctx, uids)
        late = [uid for uid in uids if stamps.get(uid) != stamp]
        if late:
            raise MissingOutputError(f"output port(s) {', '.join(map(repr, late))} wrote nothing in "
                                     f"prompt {prompt_id}: was something upstream muted or bypassed?")
        if remote is not None:  # what the output ports wrote there, into the user's context
            await remote.fetch_into(ctx, [uid for uid in uids if uid not in ready.recipes], stamp, use_ram)
        await asyncio.to_thread(_save_recipes, ctx, ready)  # now: a failed run keeps the old ones
        return {p.unique_id: p for p in out_ports}

    def _prepare(self, prompt: dict, ctx: WorkflowContext, store: StoreView, object_info: dict,
                 use_ram: bool) -> PreparedPrompt:
        """The graph core's pass over ``store`` (``ctx``, or its mirror on a server on another
        machine), then the frozen copies its recipes read (before queueing)."""
        ready = prepare_prompt(prompt, store, object_info, rules=self.pass_by_rules, use_ram=use_ram)
        for key, source in ready.copies.items():
            ctx.save(key, ctx.load(source))
        return ready


def _stamps(ctx: WorkflowContext, uids: list[str]) -> dict[str, str | None]:
    return {uid: ctx.get_stamp(uid) for uid in uids}


def _save_recipes(ctx: WorkflowContext, ready: PreparedPrompt) -> None:
    sources = ready.recipe_sources()
    for uid, recipe in ready.recipes.items():
        ctx.save(uid, recipe, pass_by="ref", source=sources[uid])


def _runnable(prompt: dict, object_info: dict) -> int:
    """How many nodes of a prompt can run: the output nodes and their ancestors."""
    outputs = [nid for nid, node in prompt.items()
               if (object_info.get(node.get("class_type")) or {}).get("output_node")]
    needed: set[str] = set()
    for nid in outputs:
        needed.update(ancestors(prompt, nid))
    return len(needed) or len(prompt)


def _label(index: int, workflow: Workflow) -> str:
    return os.path.basename(os.fspath(workflow)) if isinstance(workflow, (str, os.PathLike)) \
        else f"workflow {index}"


def _check_run_args(workflows: Any, iterations: Any, timeout: Any) -> list:
    """The workflows as a list; a clear error, before anything runs, for arguments of the
    wrong kind (``iterations=True``, ``timeout=-1`` or NaN, ``workflows=None``...)."""
    if isinstance(workflows, (str, os.PathLike, dict)):
        workflows = [workflows]
    if not isinstance(workflows, (list, tuple)) or not workflows:
        raise WrongTypeError(f"workflows must be a path, a dict or a non-empty list of them, "
                        f"not {workflows!r:.80}")
    for index, workflow in enumerate(workflows):
        if not isinstance(workflow, (str, os.PathLike, dict)):
            raise WorkflowError(f"workflow {index} is a {type(workflow).__name__}; each workflow "
                                "is a path or a dict (a list of workflows is flat)")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InvalidArgumentError(f"iterations must be a whole number >= 1, got {iterations!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise InvalidArgumentError(f"timeout must be a number of seconds > 0, or None for none; "
                         f"got {timeout!r}")
    return list(workflows)


def _fan_out(*callbacks):
    live = [c for c in callbacks if c]
    return (lambda event: [c(event) for c in live]) if live else None


class _ProgressBar:
    """A tqdm bar over the nodes a prompt can run, fed by its events."""

    def __init__(self, total: int, prompt_id: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"prompt {prompt_id[:8]}", unit="node", leave=False)

    def on_event(self, event: Event) -> None:
        if event.type == "execution_cached":
            self.bar.update(len(event.data.get("nodes", [])))
        elif event.type == "executing" and event.node is not None:
            self.bar.update(1)
        elif event.type == "execution_success" and self.bar.total is not None:
            # lazy inputs left unevaluated ran nothing (the bar always has a total: ours)
            self.bar.update(max(self.bar.total - self.bar.n, 0))

    def close(self) -> None:
        self.bar.close()
