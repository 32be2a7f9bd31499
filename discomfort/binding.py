"""The port protocol: how a prompt tells its port nodes which run and which value they serve.

ComfyUI keys its cache on every constant input of a node and its ancestors. So a port's
*binding* (a hidden input, a JSON string) holds only what should decide caching:

- an input port's binding holds the fingerprint of the stored value: the same value, in this
  run or a new one, keeps everything downstream cached; a changed value re-runs it;
- an output port's binding holds the prompt's stamp, new in every prompt: output ports always
  run, and the stamp they leave in the run proves the value arrived in *this* prompt.

Where the run lives travels beside the prompt, in ``extra_data.extra_pnginfo[RUN_KEY]``: the
server hands it to the nodes (the ``EXTRA_PNGINFO`` hidden input) but never hashes it.
Everything here is plain JSON: nothing crosses processes as a pickle of a project class.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from .errors import BindingError
from .store.ids import check_dir_name, check_run_id

INPUT_CLASS = "DiscomfortInput"
OUTPUT_CLASS = "DiscomfortOutput"
BINDING_INPUT = "discomfort_binding"
RUN_KEY = "discomfort_run"
VERSION = 1


@dataclass(frozen=True)
class InputBinding:
    fingerprint: str | None  # None: the key is not stored, use the connected default


@dataclass(frozen=True)
class OutputBinding:
    stamp: str
    pass_by: str = "val"     # "ref": store nothing but the stamp (the orchestrator keeps a recipe)
    is_list: bool | None = None  # None: infer (one element is stored bare, several as a list)
    use_ram: bool = True


def input_binding(fingerprint: str | None) -> str:
    return json.dumps({"v": VERSION, "fp": fingerprint}, separators=(",", ":"))


def output_binding(stamp: str, pass_by: str = "val", is_list: bool | None = None,
                   use_ram: bool = True) -> str:
    body = {"v": VERSION, "stamp": stamp, "pass_by": pass_by, "list": is_list, "ram": use_ram}
    return json.dumps(body, separators=(",", ":"))


def run_location(run_id: str, contexts_dir_name: str) -> dict[str, str]:
    return {"run": run_id, "dir": contexts_dir_name}


def new_stamp() -> str:
    return secrets.token_hex(8)


def _load(text: Any, role: str) -> dict:
    if not isinstance(text, str):
        raise BindingError(f"{role} binding must be a JSON string, got {type(text).__name__}")
    try:
        body = json.loads(text)
    except ValueError:
        raise BindingError(f"{role} binding is not JSON: {text[:80]!r}") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise BindingError(
            f"{role} binding {text[:80]!r} is not a version-{VERSION} Discomfort binding; "
            "bindings are written by Discomfort, not by hand")
    return body


def parse_input_binding(text: Any) -> InputBinding:
    body = _load(text, "input")
    fp = body.get("fp")
    if fp is not None and not isinstance(fp, str):
        raise BindingError(f"input binding fingerprint must be a string or null, got {fp!r}")
    return InputBinding(fp)


def parse_output_binding(text: Any) -> OutputBinding:
    body = _load(text, "output")
    stamp, pass_by = body.get("stamp"), body.get("pass_by", "val")
    if not isinstance(stamp, str) or not stamp:
        raise BindingError(f"output binding needs a stamp, got {stamp!r}")
    if pass_by not in ("val", "ref"):
        raise BindingError(f"output binding pass_by must be 'val' or 'ref', got {pass_by!r}")
    is_list = body.get("list")
    if is_list not in (None, True, False):
        raise BindingError(f"output binding 'list' must be true, false or null, got {is_list!r}")
    return OutputBinding(stamp, pass_by, is_list, bool(body.get("ram", True)))


def parse_run_location(extra_pnginfo: Any) -> tuple[str, str]:
    """(run_id, contexts_dir_name) from the prompt's extra_pnginfo, both validated."""
    location = extra_pnginfo.get(RUN_KEY) if isinstance(extra_pnginfo, dict) else None
    if not isinstance(location, dict):
        raise BindingError(
            f"a bound port needs extra_data.extra_pnginfo.{RUN_KEY} naming its run; "
            "queue bound prompts through Discomfort")
    return check_run_id(location.get("run")), check_dir_name(location.get("dir"))


def bind_prompt(prompt: dict, context, stamp: str | None = None, *, use_ram: bool = True,
                list_outputs: Set[str] = frozenset(),
                ref_outputs: Set[str] = frozenset()) -> tuple[dict, dict, str]:
    """Bind every port of an API prompt to ``context``.

    Returns the bound prompt (a copy), the ``extra_data`` to post with it, and the stamp the
    output ports will leave in the context. ``list_outputs`` names the output ports fed by a
    list output (stored whole even with one element); ``ref_outputs`` those that store nothing
    but their stamp (the orchestrator keeps their recipe).
    """
    stamp = stamp or new_stamp()
    stored = set(context.list_keys())
    bound = {}
    for node_id, node in prompt.items():
        node = dict(node, inputs=dict(node.get("inputs", {})))
        uid = node["inputs"].get("unique_id")
        if node.get("class_type") == INPUT_CLASS:
            fp = context.fingerprint(uid) if uid in stored else None
            node["inputs"][BINDING_INPUT] = input_binding(fp)
        elif node.get("class_type") == OUTPUT_CLASS:
            node["inputs"][BINDING_INPUT] = output_binding(
                stamp, pass_by="ref" if uid in ref_outputs else "val",
                is_list=True if uid in list_outputs else None, use_ram=use_ram)
        bound[node_id] = node
    location = run_location(context.run_id, context.contexts_dir_name)
    return bound, {"extra_pnginfo": {RUN_KEY: location}}, stamp
