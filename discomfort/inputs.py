"""The values a caller hands ``run(inputs=...)``, checked before anything is saved.

Every key must name an input port that some workflow of the run reads, and every value must
fit every port that reads it; numpy arrays for IMAGE, MASK and LATENT ports become the torch
tensors ComfyUI's nodes take. All of it happens before the first save, so a refused run
leaves the caller's context exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import PortTypeError, UnknownInputError, UnusedInputError, WrongTypeError
from .graph.ports import ANY, Port, check_value_type, consumers, find_ports

TENSOR_TYPES = ("IMAGE", "MASK", "LATENT")


def input_ports(prompts: Iterable[tuple[str, dict]],
                object_info: dict | None) -> dict[str, list[tuple[str, Port, bool]]]:
    """unique_id -> every (workflow label, port, feeds something) that reads it."""
    table: dict[str, list[tuple[str, Port, bool]]] = {}
    for label, prompt in prompts:
        for port in find_ports(prompt, object_info)[0]:
            table.setdefault(port.unique_id, []).append(
                (label, port, bool(consumers(prompt, port.node_id))))
    return table


def check_inputs(inputs: dict[str, Any], prompts: list[tuple[str, dict]],
                 object_info: dict | None) -> dict[str, Any]:
    """The values to save for ``inputs``, converted where a port needs it; raises naming the
    key and the fix for an unknown key, a key whose ports feed nothing, or a value that does
    not fit its port."""
    if not isinstance(inputs, dict):
        raise WrongTypeError(f"inputs must be a dict {{unique_id: value}}, "
                             f"not a {type(inputs).__name__}")
    table = input_ports(prompts, object_info)
    labels = ", ".join(label for label, _ in prompts)
    ready = {}
    for key, value in inputs.items():
        readers = table.get(key)
        if not readers:
            raise UnknownInputError(key, sorted(table), labels)
        live = [port for _, port, feeds in readers if feeds]
        if not live:
            where = ", ".join(f"node {port.node_id} of {label}" for label, port, _ in readers)
            raise UnusedInputError(
                f"input {key!r} would change nothing: its port ({where}) is connected to no "
                "node; connect the port's output in the editor, or leave the key out")
        for port in live:
            value = as_port_value(port, value)
            check_value_type(port, value)
        ready[key] = value
    return ready


def as_port_value(port: Port, value: Any) -> Any:
    """A numpy array for an IMAGE/MASK port (or a LATENT's ``samples``) as a float32 torch
    tensor; anything else as it is."""
    if port.type not in TENSOR_TYPES or port.type == ANY:
        return value
    if port.type == "LATENT":
        if isinstance(value, dict) and _is_array(value.get("samples")):
            return dict(value, samples=_to_tensor(port, value["samples"]))
        return value
    return _to_tensor(port, value) if _is_array(value) else value


def _is_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _to_tensor(port: Port, array):
    import numpy as np

    if not np.issubdtype(array.dtype, np.floating):
        hint = " (for 0-255 pixels: array.astype('float32') / 255)" if array.dtype == np.uint8 else ""
        raise PortTypeError(f"input port {port.unique_id!r} feeds {port.type}, which holds floats "
                            f"in 0..1, but its value is a {array.dtype} array{hint}")
    try:
        import torch
    except ImportError:
        raise PortTypeError(f"input port {port.unique_id!r} feeds {port.type}: a numpy array "
                            "must become a torch tensor, and torch is not installed in this "
                            "process (pip install torch)") from None
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

