"""DiscomfortInput and DiscomfortOutput: thin ComfyUI adapters over WorkflowContext.

In the editor (no binding) an input passes its ``default`` through and an output does nothing
harmful. Queued by Discomfort, each is bound to a run (see ``discomfort/binding.py``): an input
returns the run's value, an output stores its value there and leaves the prompt's stamp.
"""

from __future__ import annotations

from ..binding import BINDING_INPUT, parse_input_binding, parse_output_binding, parse_run_location
from ..errors import PortError, ValueChangedError
from ..store import WorkflowContext
from ..store.codec import is_plain_data


class AnyType(str):
    """A type string equal to every other: ComfyUI's link validation accepts it anywhere.

    (A plain "*" output fails validation at every typed consumer.)
    """

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")
_HIDDEN = {BINDING_INPUT: "STRING", "extra_pnginfo": "EXTRA_PNGINFO"}


def _open_run(extra_pnginfo) -> WorkflowContext:
    run_id, dir_name = parse_run_location(extra_pnginfo)
    return WorkflowContext.attach(run_id, dir_name)


class DiscomfortInput:
    CATEGORY = "discomfort"
    DESCRIPTION = ("Where a value comes in from Python. Run from the editor it passes `default` "
                   "through; run by Discomfort it returns the value stored under unique_id.")
    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("value",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"unique_id": ("STRING", {"default": "input",
                                                  "tooltip": "The key this port reads."})},
            "optional": {"default": (ANY, {"lazy": True, "tooltip":
                                           "Used in the editor, or when the key is not stored."})},
            "hidden": dict(_HIDDEN),
        }

    def check_lazy_status(self, unique_id, discomfort_binding=None, **inputs):
        # A connected default not yet evaluated arrives as None; an unconnected one not at all.
        unbound = discomfort_binding is None or parse_input_binding(discomfort_binding).fingerprint is None
        return ["default"] if unbound and "default" in inputs else []

    def run(self, unique_id, default=None, discomfort_binding=None, extra_pnginfo=None, **_):
        binding = parse_input_binding(discomfort_binding) if discomfort_binding is not None else None
        if binding is None or binding.fingerprint is None:
            if default is None:
                where = "is not stored in the run" if binding else "is not run from Python"
                raise PortError(
                    f"DiscomfortInput {unique_id!r} {where} and has nothing connected to "
                    "'default': connect a default, or save the value before running")
            return (default,)
        context = _open_run(extra_pnginfo)
        try:
            try:
                fingerprint = context.fingerprint(unique_id)
            except KeyError:
                raise PortError(f"DiscomfortInput {unique_id!r}: the run {context.run_id!r} "
                                "has no such key") from None
            if fingerprint != binding.fingerprint:
                raise ValueChangedError(
                    f"DiscomfortInput {unique_id!r}: the stored value changed after the prompt "
                    "was queued; queue it again")
            return (context.load(unique_id),)  # a copy of its own: ComfyUI caches and mutates
        finally:
            context.shutdown()


class DiscomfortOutput:
    CATEGORY = "discomfort"
    DESCRIPTION = ("Where a value goes out to Python. Run by Discomfort it stores its value "
                   "under unique_id; in the editor it does nothing.")
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True  # a list output arrives whole, never one element at a time

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": (ANY, {"tooltip": "The value to hand to Python."}),
                "unique_id": ("STRING", {"default": "output", "tooltip": "The key this port writes."}),
            },
            "hidden": dict(_HIDDEN),
        }

    def run(self, value, unique_id, discomfort_binding=None, extra_pnginfo=None, **_):
        unique_id = unique_id[0]
        if discomfort_binding is None:
            return {"ui": {"discomfort": [{"unique_id": unique_id, "stored": False}]}}
        binding = parse_output_binding(discomfort_binding[0])
        if binding.is_list is False or (binding.is_list is None and len(value) == 1):
            value = value[0]
        context = _open_run(extra_pnginfo[0] if extra_pnginfo else None)
        try:
            if binding.pass_by == "val":
                if not is_plain_data(value):
                    raise PortError(
                        f"DiscomfortOutput {unique_id!r} got a {type(value).__name__}, which is "
                        "not data: give its type \"ref\" in the pass-by rules so it is kept "
                        "by reference (the subgraph that makes it), never pickled")
                context.save(unique_id, value, use_ram=binding.use_ram, stamp=binding.stamp)
            else:
                context.set_stamp(unique_id, binding.stamp)
        finally:
            context.shutdown()
        stored = binding.pass_by == "val"
        return {"ui": {"discomfort": [{"unique_id": unique_id, "stored": stored,
                                       "stamp": binding.stamp}]}}
