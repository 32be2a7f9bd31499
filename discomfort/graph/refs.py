"""Pass-by-reference: a heavy value (a model) is kept as the recipe that makes it.

A recipe is the API-format subgraph of an output port's ancestors, with node ids derived from
content: identical producers (model, clip and vae of one checkpoint loader) are one node, and
the same recipe spliced into any prompt has the same ComfyUI cache signature as the prompt
that captured it, so the loaded model is reused, never rebuilt. Plain JSON, pure functions.

    {"format": "discomfort-recipe/1", "nodes": {id: {"class_type", "inputs"}},
     "output": [node_id, slot]}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..binding import INPUT_CLASS, OUTPUT_CLASS
from ..errors import WorkflowError
from .workflow import is_link, rewire

FORMAT = "discomfort-recipe/1"
MAX_DEPTH = 32  # refs made of refs: deeper than this is a cycle


def is_recipe(value: Any) -> bool:
    return isinstance(value, dict) and value.get("format") == FORMAT


def ancestors(prompt: dict, node_id: str) -> list[str]:
    """``node_id`` and every node it depends on, dependencies first."""
    order, seen = [], set()

    def visit(nid: str) -> None:
        if nid in seen:
            return
        seen.add(nid)
        node = prompt.get(nid)
        if node is None:
            raise WorkflowError(f"node {nid} is linked to but not in the prompt")
        for value in node.get("inputs", {}).values():
            if is_link(value):
                visit(str(value[0]))
        order.append(nid)

    visit(str(node_id))
    return order


def prune_to_output(prompt: dict, unique_id: str) -> dict:
    """The part of an API prompt that output port ``unique_id`` needs: the port and its
    ancestors (what a recipe is made of)."""
    ports = [nid for nid, node in prompt.items() if node.get("class_type") == OUTPUT_CLASS
             and node.get("inputs", {}).get("unique_id") == unique_id]
    if not ports:
        raise WorkflowError(f"no {OUTPUT_CLASS} with unique_id {unique_id!r} in the prompt")
    return {nid: prompt[nid] for nid in ancestors(prompt, ports[0])}


def capture_recipe(prompt: dict, output_port_id: str) -> dict:
    """The recipe of what feeds output port ``output_port_id`` in ``prompt``."""
    port = prompt.get(str(output_port_id))
    if port is None or port.get("class_type") != OUTPUT_CLASS:
        raise WorkflowError(f"node {output_port_id} is not a {OUTPUT_CLASS}")
    source = port["inputs"].get("value")
    if not is_link(source):
        raise WorkflowError(f"output port {output_port_id} has nothing connected to 'value'")
    new_ids: dict[str, str] = {}
    nodes: dict[str, dict] = {}
    for nid in ancestors(prompt, str(source[0])):
        node = prompt[nid]
        inputs = {name: ([new_ids[str(v[0])], v[1]] if is_link(v) else v)
                  for name, v in node.get("inputs", {}).items()}
        body = {"class_type": node["class_type"], "inputs": inputs}
        content = json.dumps(body, sort_keys=True, separators=(",", ":"))
        new_ids[nid] = "ref_" + hashlib.blake2b(content.encode(), digest_size=8).hexdigest()
        nodes[new_ids[nid]] = body
    return {"format": FORMAT, "nodes": nodes, "output": [new_ids[str(source[0])], source[1]]}


def recipe_inputs(recipe: dict) -> set[str]:
    """The keys a recipe's own input ports read (frozen copies, or refs it is made of)."""
    return {node["inputs"].get("unique_id") for node in recipe["nodes"].values()
            if node.get("class_type") == INPUT_CLASS}


def recipe_source(recipe: dict) -> dict:
    """What makes a recipe's value, in a line a user can read: the producing node's class,
    output slot and constant inputs (``{"class_type": "CheckpointLoaderSimple", "slot": 0,
    "inputs": {"ckpt_name": ...}}``)."""
    node_id, slot = recipe["output"]
    node = recipe["nodes"][node_id]
    constants = {k: v for k, v in node.get("inputs", {}).items() if not is_link(v)}
    return {"class_type": node["class_type"], "slot": slot, "inputs": constants}


def recipe_from_workflow(prompt: dict) -> dict:
    """A workflow saved as a ref: its one output port says what it makes."""
    outputs = [nid for nid, node in prompt.items() if node.get("class_type") == OUTPUT_CLASS]
    if len(outputs) != 1:
        raise WorkflowError(f"a workflow saved as a ref needs exactly one {OUTPUT_CLASS}, "
                            f"found {len(outputs)}")
    return capture_recipe(prompt, outputs[0])


def splice(prompt: dict, port_id: str, recipe: dict) -> dict:
    """A copy of ``prompt`` where input port ``port_id`` is replaced by ``recipe``: its nodes
    join the prompt (merging with identical ones already there) and the port's consumers read
    the recipe's output."""
    if not is_recipe(recipe):
        raise WorkflowError(f"not a {FORMAT} recipe")
    out = rewire(prompt, port_id, list(recipe["output"]))
    for nid, node in recipe["nodes"].items():
        out.setdefault(nid, {"class_type": node["class_type"], "inputs": dict(node["inputs"])})
    return out


def expand_refs(prompt: dict, load_ref) -> dict:
    """Replace every input port whose key holds a ref by its recipe, recursively (a recipe
    may itself read refs). ``load_ref(unique_id)`` gives the stored recipe or workflow, or
    None for a key that is not a ref; it is asked once per key."""
    known: dict[Any, Any] = {}
    for _ in range(MAX_DEPTH):
        pending = [(nid, node["inputs"].get("unique_id")) for nid, node in prompt.items()
                   if node.get("class_type") == INPUT_CLASS]
        replaced = False
        for nid, uid in pending:
            if uid not in known:
                known[uid] = load_ref(uid)
            stored = known[uid]
            if stored is None:
                continue
            recipe = stored if is_recipe(stored) else recipe_from_workflow(stored)
            prompt = splice(prompt, nid, recipe)
            replaced = True
        if not replaced:
            return prompt
    raise WorkflowError(f"refs nested more than {MAX_DEPTH} deep: does a ref read itself?")


def frozen_key(fingerprint: str) -> str:
    """Where a recipe keeps a copy of a value it was made from (content-addressed)."""
    return f"frozen:{fingerprint}"


def freeze_inputs(prompt: dict, fingerprints: dict[str, str]) -> dict:
    """A copy of ``prompt`` whose input ports read frozen copies (``frozen_key``) of the
    values they had, so a recipe captured from it replays with the values of its capture,
    not today's. ``fingerprints`` maps unique_id to the stored value's fingerprint."""
    out = {}
    for nid, node in prompt.items():
        uid = node.get("inputs", {}).get("unique_id")
        if node.get("class_type") == INPUT_CLASS and uid in fingerprints:
            node = dict(node, inputs=dict(node["inputs"], unique_id=frozen_key(fingerprints[uid])))
        out[nid] = node
    return out
