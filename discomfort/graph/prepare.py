"""One pass from a workflow's API prompt to the prompt that is queued, and what to do around it.

For each prompt of a run, in order: stored refs are spliced in as the recipes that make them
(:mod:`.refs`); each input port that reads a stored value is type-checked against it and, for
a small widget scalar, inlined as a literal (otherwise its ``default`` link is cut); the output
ports that go by reference get the recipe of what feeds them, reading frozen copies of the
stored values they were made from; and every port is bound to the run (:mod:`..binding`).

The pass decides; the facade does the I/O. It reads the store through ``store``, any object
with the :class:`StoreView` methods (a ``WorkflowContext`` is one; a test passes a dict-backed
one) and writes nothing: the frozen copies to make before queueing and the recipes to save
after a success come back in :class:`PreparedPrompt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..binding import bind_prompt
from ..errors import MissingInputsError
from .convert import ui_to_api
from .load import is_api_format, load_workflow
from .pass_by import pass_by_for
from .ports import Port, check_value_type, find_ports, inline_value, is_scalar_for
from .refs import (
    capture_recipe,
    expand_refs,
    freeze_inputs,
    frozen_key,
    is_recipe,
    recipe_inputs,
    recipe_source,
)
from .workflow import consumers

SMALL_VALUE = 64 * 1024  # stored values up to this size are loaded to check and inline them


class StoredEntry(Protocol):
    """What the pass asks of a stored value without loading it (``store.entry.Entry``, a frozen
    dataclass: read-only, hence properties)."""

    @property
    def pass_by(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...] | None: ...
    @property
    def dtype(self) -> str | None: ...


class StoreView(Protocol):
    """What the pass reads of a store (``WorkflowContext``: its identity is read-only)."""

    @property
    def run_id(self) -> str: ...
    @property
    def contexts_dir_name(self) -> str: ...

    def list_keys(self) -> list[str]: ...
    def entry(self, unique_id: str) -> StoredEntry: ...
    def load(self, unique_id: str) -> Any: ...
    def fingerprint(self, unique_id: str) -> str: ...


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt ready to queue, and what the run must do before and after it."""

    prompt: dict                      # bound: what is posted
    extra_data: dict                  # posted beside it (where the run lives)
    stamp: str                        # what the output ports leave in the store
    outputs: list[Port]               # the output ports it writes
    copies: dict[str, str] = field(default_factory=dict)   # frozen key -> key it copies, now
    recipes: dict[str, dict] = field(default_factory=dict)  # unique_id -> recipe, on success

    def recipe_sources(self) -> dict[str, dict]:
        """What each recipe makes, as ``get_storage_info(...)["source"]`` says it."""
        return {uid: recipe_source(recipe) for uid, recipe in self.recipes.items()}


def prepare_prompt(prompt: dict, store: StoreView, object_info: dict, *,
                   rules: dict[str, str] | None = None, use_ram: bool = True,
                   stamp: str | None = None) -> PreparedPrompt:
    """The one pass (see the module's docstring). Raises ``MissingInputsError`` naming every
    input port with neither a stored value nor a connected default, before anything is
    written, and ``PortTypeError`` for a stored value its port's consumers cannot take."""
    stored = set(store.list_keys())
    entries: dict[str, StoredEntry] = {}

    def entry(uid: str) -> StoredEntry | None:
        if uid not in stored:
            return None
        if uid not in entries:
            entries[uid] = store.entry(uid)
        return entries[uid]

    def stored_ref(uid: str) -> dict | None:
        found = entry(uid)
        if found is None or found.pass_by != "ref":
            return None
        value = store.load(uid)
        if is_recipe(value) or is_api_format(value):
            return value
        return ui_to_api(load_workflow(value), object_info)

    prompt = expand_refs(prompt, stored_ref)
    in_ports, out_ports = find_ports(prompt, object_info)
    # An input port that feeds nothing never runs (say, one a stitch joined): no value needed.
    in_ports = [p for p in in_ports if consumers(prompt, p.node_id)]
    missing = [p.unique_id for p in in_ports if p.unique_id not in stored and not p.has_default]
    if missing:
        raise MissingInputsError(missing)
    for port in in_ports:
        found = entry(port.unique_id)
        if found is not None:
            prompt = _read_stored(prompt, port, found, store, object_info)

    refs = [p for p in out_ports if pass_by_for(p.type, rules) == "ref"]
    recipes: dict[str, dict] = {}
    copies: dict[str, str] = {}
    if refs:  # stored values a recipe was made from are frozen: content-addressed copies
        fingerprints = {p.unique_id: store.fingerprint(p.unique_id) for p in in_ports
                        if p.unique_id in stored}
        frozen = freeze_inputs(prompt, fingerprints)
        recipes = {p.unique_id: capture_recipe(frozen, p.node_id) for p in refs}
        used = set().union(*map(recipe_inputs, recipes.values()))
        copies = {frozen_key(fp): uid for uid, fp in fingerprints.items()
                  if frozen_key(fp) in used and frozen_key(fp) not in stored}

    bound, extra, stamp = bind_prompt(
        prompt, store, stamp, use_ram=use_ram, list_outputs={p.unique_id for p in out_ports if p.is_list},
        ref_outputs=set(recipes))
    return PreparedPrompt(bound, extra, stamp, out_ports, copies, recipes)


def _read_stored(prompt: dict, port: Port, entry: StoredEntry, store: StoreView,
                 object_info: dict) -> dict:
    """Type-check a stored value against its port; inline it when it is a widget scalar."""
    if entry.pass_by == "ref":
        return prompt
    if entry.shape is not None:  # a tensor or array: its entry says enough
        check_value_type(port, entry)
        return _without_default(prompt, port)
    if entry.size > SMALL_VALUE:
        return _without_default(prompt, port)
    value = store.load(port.unique_id)
    check_value_type(port, value)
    if is_scalar_for(port, prompt, object_info, value):
        return inline_value(prompt, port, value)
    return _without_default(prompt, port)


def _without_default(prompt: dict, port: Port) -> dict:
    """The port reads its stored value: its ``default`` (say, a LoadImage of a file only the
    editor's machine has) is cut off, so ComfyUI neither validates nor runs it."""
    node = prompt[port.node_id]
    if "default" not in node.get("inputs", {}):
        return prompt
    inputs = {k: v for k, v in node["inputs"].items() if k != "default"}
    return dict(prompt, **{port.node_id: dict(node, inputs=inputs)})
