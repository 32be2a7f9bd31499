"""Port nodes in an API prompt: which values a prompt reads and writes, and of what type.

A port's role is its class; its data type is the type of what it is wired to, read from
``/object_info`` (the consumers' input types for an input port, the source's output type for
an output port). Pure functions on JSON: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..binding import INPUT_CLASS, OUTPUT_CLASS
from ..errors import PortTypeError, WorkflowError
from .workflow import ANY, check_single_writers, consumers, input_type, is_link, output_spec, rewire

# Input types ComfyUI draws as widgets: a JSON scalar can stand in their place as a literal.
SCALAR_TYPES = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,),
                "COMBO": (str, int, float)}


@dataclass(frozen=True)
class Port:
    node_id: str
    unique_id: str
    role: str                     # "input" or "output"
    type: str = ANY               # "*" where object_info cannot tell
    is_list: bool = False         # an output fed by a list output (stored whole)
    has_default: bool = False     # an input with its `default` connected


def _unique_id(node_id: str, node: dict) -> str:
    uid = node.get("inputs", {}).get("unique_id")
    if not isinstance(uid, str) or not uid:
        raise WorkflowError(f"{node['class_type']} node {node_id} has no unique_id text: "
                            "type one into its unique_id widget")
    return uid


def find_ports(prompt: dict, object_info: dict | None = None) -> tuple[list[Port], list[Port]]:
    """The input and output ports of an API prompt. Two output ports with one unique_id in a
    prompt would race for one key: that is an error naming both nodes."""
    inputs, outputs = [], []
    for node_id, node in prompt.items():
        kind = node.get("class_type")
        if kind == INPUT_CLASS:
            types = {input_type(object_info, prompt[c]["class_type"], name)
                     for c, name in consumers(prompt, node_id)} - {ANY}
            inputs.append(Port(str(node_id), _unique_id(node_id, node), "input",
                               types.pop() if len(types) == 1 else ANY,
                               has_default=is_link(node["inputs"].get("default"))))
        elif kind == OUTPUT_CLASS:
            uid = _unique_id(node_id, node)
            source = node["inputs"].get("value")
            kind_, as_list = (output_spec(object_info, prompt[str(source[0])]["class_type"], source[1])
                              if is_link(source) and str(source[0]) in prompt else (ANY, False))
            outputs.append(Port(str(node_id), uid, "output", kind_, as_list))
    check_single_writers((p.unique_id, p.node_id) for p in outputs)
    return inputs, outputs


def is_scalar_for(port: Port, prompt: dict, object_info: dict | None, value: Any) -> bool:
    """Can ``value`` replace the port as a literal in every consumer? Only JSON scalars fed to
    widget inputs: their cache keys then depend on the value alone, and ComfyUI's own
    validation (min/max, combo options) checks them."""
    if not isinstance(value, (bool, int, float, str)):
        return False
    uses = consumers(prompt, port.node_id)
    return bool(uses) and all(
        isinstance(value, SCALAR_TYPES.get(input_type(object_info, prompt[c]["class_type"], n), ()))
        for c, n in uses)


def inline_value(prompt: dict, port: Port, value: Any) -> dict:
    """A copy of ``prompt`` with ``value`` written into the port's consumers, the port gone."""
    return rewire(prompt, port.node_id, value)


def check_value_type(port: Port, value: Any) -> None:
    """Refuse, before queueing, a stored value its port's consumers cannot take. ``value`` is
    the value, or the store's entry of a tensor or array (its shape, dtype and kind)."""
    problem = _type_problem(port.type, value)
    if problem:
        raise PortTypeError(f"input port {port.unique_id!r} feeds {port.type} but its value is "
                            f"{problem}")


def _is_numpy(value: Any) -> bool:
    kind = getattr(value, "kind", None)  # a store entry describing an array: its codec kind
    return kind == "numpy" if isinstance(kind, str) else type(value).__module__ == "numpy"


def _type_problem(kind: str, value: Any) -> str | None:
    def tensor_shape(v):
        return tuple(v.shape) if hasattr(v, "shape") and hasattr(v, "dtype") else None

    if kind in ("IMAGE", "MASK", "LATENT"):
        array = value.get("samples") if kind == "LATENT" and isinstance(value, dict) else value
        if _is_numpy(array):
            return ("a numpy array; ComfyUI's nodes take torch tensors: pass it in `inputs` "
                    "(converted for you) or save torch.from_numpy(array)")

    def is_float(v):
        return getattr(v.dtype, "is_floating_point", False) or "float" in str(v.dtype)

    if kind in ("IMAGE", "MASK"):
        dims, layout = (4, "[B, H, W, C]") if kind == "IMAGE" else (3, "[B, H, W]")
        shape = tensor_shape(value)
        if shape is None:
            return f"a {type(value).__name__}, not a tensor {layout}"
        if len(shape) != dims or not is_float(value):
            return f"a {value.dtype} tensor of shape {list(shape)}; expected a float tensor {layout}"
        if kind == "IMAGE" and shape[-1] not in (1, 3, 4):
            return f"a tensor of shape {list(shape)} with {shape[-1]} channels; expected 3 (or 4)"
        return None
    if kind == "LATENT":
        if not isinstance(value, dict) or tensor_shape(value.get("samples")) is None:
            return f"a {type(value).__name__}; expected a dict with a 'samples' tensor"
        return None
    if kind in SCALAR_TYPES and kind != "COMBO":
        wanted = SCALAR_TYPES[kind]
        if not isinstance(value, wanted) or (kind != "BOOLEAN" and isinstance(value, bool)):
            return f"{value!r} ({type(value).__name__})"
    return None
