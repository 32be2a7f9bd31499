"""Discomfort: the facade that runs saved workflows from Python, in loops, with state.

It composes the parts and decides nothing that belongs to one of them: the connector talks to
the server, the graph core converts and inspects workflows, the context holds the values.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .binding import bind_prompt
from .connector import ComfyConnector, Event
from .errors import MissingInputsError, MissingOutputError
from .graph import check_node_types, is_api_format, load_workflow, ui_to_api
from .graph.pass_by import load_rules, pass_by_for
from .graph.ports import Port, check_value_type, consumers, find_ports, inline_value, is_scalar_for
from .graph.refs import capture_recipe, expand_refs, freeze_inputs, frozen_key, is_recipe
from .graph.seeds import advance_controlled_widgets
from .store import WorkflowContext
from .tools import WorkflowTools

Workflow = str | os.PathLike | dict
SMALL_VALUE = 64 * 1024  # stored values up to this size are loaded to check and inline them


@dataclass
class RunReport:
    """What a run used that the workflows did not fix: for reproducing it."""

    prompt_ids: list[str] = field(default_factory=list)
    # One entry per iteration and workflow: the controlled widgets (seeds) as the editor
    # would have advanced them, and the dynamic-prompt choices made.
    widget_changes: list[list[dict]] = field(default_factory=list)
    dynamic_prompts: list[list[dict]] = field(default_factory=list)
    seed: int | None = None


class Discomfort:
    """``discomfort = await Discomfort.create()``; ``await discomfort.run([...])``;
    ``await discomfort.shutdown()``."""

    Context = WorkflowContext
    Tools = WorkflowTools

    def __init__(self, connector: ComfyConnector, pass_by_rules: dict[str, str] | None = None):
        self.Worker = connector
        self.pass_by_rules = pass_by_rules or load_rules()
        self.last_run: RunReport | None = None

    @classmethod
    async def create(cls, config_path: str | os.PathLike | None = None, *,
                     pass_by_rules: str | os.PathLike | None = None, **server) -> "Discomfort":
        """Start a headless ComfyUI (or attach to ``url``) as the config says.

        ``pass_by_rules``: a JSON file mapping port types to "val" or "ref", over the defaults
        (models and the like by reference; only what is known to be data by value)."""
        rules = load_rules(pass_by_rules)
        return cls(await ComfyConnector.create(config_path, **server), rules)

    async def shutdown(self) -> None:
        await self.Worker.kill_api()

    async def __aenter__(self) -> "Discomfort":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.shutdown()

    async def run(self, workflows: Workflow | Sequence[Workflow], inputs: dict[str, Any] | None = None,
                  iterations: int = 1, use_ram: bool = True, context: WorkflowContext | None = None,
                  *, fixed_seeds: bool = False, seed: int | None = None, timeout: float | None = None,
                  progress: bool = True, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
        """Run ``workflows`` in order, ``iterations`` times; return every output port's value
        from the last iteration.

        ``inputs`` are saved into the context first. Each workflow runs as one prompt; output
        ports write into the context, so an output and an input sharing a unique_id carry a
        value from one iteration to the next. Controlled widgets (seeds set to randomize,
        increment...) advance between iterations as if Queue were pressed each time, unless
        ``fixed_seeds``; ``seed`` makes that and dynamic prompts reproducible. The values
        used are in ``self.last_run``. Without a context, a temporary one is used.
        """
        if isinstance(workflows, (str, os.PathLike, dict)):
            workflows = [workflows]
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a whole number >= 1, got {iterations!r}")
        loaded = [load_workflow(w) for w in workflows]  # a malformed file fails before anything runs
        object_info = await self.Worker.object_info()
        rng = random.Random(seed)
        report = self.last_run = RunReport(seed=seed)
        own_context = context is None
        ctx = WorkflowContext() if own_context else context
        try:
            for key, value in (inputs or {}).items():
                ctx.save(key, value, use_ram=use_ram)
            outputs: dict[str, Port] = {}
            for iteration in range(iterations):
                outputs = {}
                for index, workflow in enumerate(loaded):
                    choices: list[dict] = []
                    if is_api_format(workflow):
                        check_node_types(workflow, object_info)
                        prompt = workflow
                    else:
                        prompt = ui_to_api(workflow, object_info, rng=rng, choices=choices)
                    report.dynamic_prompts.append(choices)
                    written = await self._run_prompt(prompt, ctx, object_info, use_ram, timeout,
                                                     progress, on_event, report)
                    outputs.update(written)
                    if not fixed_seeds and not is_api_format(workflow) and iteration + 1 < iterations:
                        loaded[index], changes = advance_controlled_widgets(workflow, object_info, rng)
                        report.widget_changes.append(changes)
            return {uid: ctx.load(uid) for uid in outputs}
        finally:
            if own_context:
                ctx.shutdown()

    async def _run_prompt(self, prompt: dict, ctx: WorkflowContext, object_info: dict, use_ram: bool,
                          timeout: float | None, progress: bool,
                          on_event: Callable[[Event], None] | None, report: RunReport) -> dict[str, Port]:
        """One prompt: check and bind its ports, run it, prove every output arrived."""
        prompt = expand_refs(prompt, lambda uid: self._stored_ref(ctx, uid, object_info))
        in_ports, out_ports = find_ports(prompt, object_info)
        # An input port that feeds nothing never runs (say, one a stitch joined): no value needed.
        in_ports = [p for p in in_ports if consumers(prompt, p.node_id)]
        stored = set(ctx.list_keys())
        missing = [p.unique_id for p in in_ports if p.unique_id not in stored and not p.has_default]
        if missing:
            raise MissingInputsError(missing)
        for port in in_ports:
            if port.unique_id in stored:
                prompt = self._prepare_input(prompt, port, ctx, object_info)
        recipes = self._capture(prompt, in_ports, out_ports, ctx)
        list_outputs = {p.unique_id for p in out_ports if p.is_list}
        bound, extra, stamp = bind_prompt(prompt, ctx, use_ram=use_ram, list_outputs=list_outputs,
                                          ref_outputs=set(recipes))
        prompt_id = await self.Worker.queue(bound, extra)
        report.prompt_ids.append(prompt_id)
        bar = _ProgressBar(len(bound), prompt_id) if progress else None
        try:
            await self.Worker.wait(prompt_id, timeout=timeout, history=False,
                                   on_event=_fan_out(on_event, bar and bar.on_event))
        finally:
            if bar:
                bar.close()
        late = [p.unique_id for p in out_ports if ctx.get_stamp(p.unique_id) != stamp]
        if late:
            raise MissingOutputError(f"output port(s) {', '.join(map(repr, late))} wrote nothing in "
                                     f"prompt {prompt_id}: was something upstream muted or bypassed?")
        for uid, recipe in recipes.items():  # only now: a failed run keeps the previous recipe
            ctx.save(uid, recipe, pass_by="ref")
        return {p.unique_id: p for p in out_ports}

    def _capture(self, prompt: dict, in_ports: list[Port], out_ports: list[Port],
                 ctx: WorkflowContext) -> dict[str, dict]:
        """Recipes of the output ports whose type goes by reference. Stored values they were
        made from are frozen: copied under a content-addressed key the recipe reads."""
        refs = [p for p in out_ports if pass_by_for(p.type, self.pass_by_rules) == "ref"]
        if not refs:
            return {}
        stored = set(ctx.list_keys())
        fingerprints = {p.unique_id: ctx.fingerprint(p.unique_id) for p in in_ports
                        if p.unique_id in stored}
        frozen = freeze_inputs(prompt, fingerprints)
        recipes = {p.unique_id: capture_recipe(frozen, p.node_id) for p in refs}
        used = json.dumps(recipes)
        for uid, fingerprint in fingerprints.items():
            key = frozen_key(fingerprint)
            if key in used and key not in stored:
                ctx.save(key, ctx.load(uid))
        return recipes

    @staticmethod
    def _stored_ref(ctx: WorkflowContext, unique_id: str, object_info: dict) -> dict | None:
        """The recipe (or API-format workflow) stored under a ref key; None for other keys."""
        info = ctx.get_storage_info(unique_id)
        if info is None or info["pass_by"] != "ref":
            return None
        stored = ctx.load(unique_id)
        if is_recipe(stored) or is_api_format(stored):
            return stored
        return ui_to_api(load_workflow(stored), object_info)

    @staticmethod
    def _prepare_input(prompt: dict, port: Port, ctx: WorkflowContext, object_info: dict) -> dict:
        """Type-check a stored value against its port; inline it when it is a widget scalar."""
        info = ctx.get_storage_info(port.unique_id)
        if info["pass_by"] == "ref":
            return prompt
        if "shape" in info:
            check_value_type(port, _TensorInfo(info["shape"], info["dtype"]))
            return prompt
        if info["size"] > SMALL_VALUE:
            return prompt
        value = ctx.load(port.unique_id)
        check_value_type(port, value)
        if is_scalar_for(port, prompt, object_info, value):
            return inline_value(prompt, port, value)
        return prompt


@dataclass
class _TensorInfo:
    """A stored tensor's shape and dtype, enough for a type check without loading it."""

    shape: list
    dtype: str


def _fan_out(*callbacks):
    live = [c for c in callbacks if c]
    return (lambda event: [c(event) for c in live]) if live else None


class _ProgressBar:
    """A tqdm bar over a prompt's nodes, fed by its events."""

    def __init__(self, total: int, prompt_id: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"prompt {prompt_id[:8]}", unit="node", leave=False)

    def on_event(self, event: Event) -> None:
        if event.type == "execution_cached":
            self.bar.update(len(event.data.get("nodes", [])))
        elif event.type == "executing" and event.data.get("node") is not None:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
