"""Add port nodes to a saved editor workflow, as a user would wire them in the editor.

For people who script: ``add_input_port(workflow, node, "seed", "seed")`` turns KSampler's
seed widget into an input fed by a ``DiscomfortInput`` named ``seed``; ``add_output_port``
hangs a ``DiscomfortOutput`` on a node's output. The result opens in the editor (ids and
counters consistent, links agreeing with both ends) and runs from Python. Pure: the input
workflow is never modified.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from ..binding import INPUT_CLASS, OUTPUT_CLASS
from ..errors import WorkflowError
from .load import is_ui_format, load_workflow
from .workflow import ANY, UIGraph, input_spec

PORT_SIZE = [270, 58]
GAP = 320  # how far left (inputs) or right (outputs) of its node a new port is placed


def add_input_port(workflow: str | os.PathLike | dict, node_id: Any, input_name: str,
                   unique_id: str, *, object_info: dict | None = None) -> dict:
    """A copy of ``workflow`` where a new DiscomfortInput ``unique_id`` feeds input (or
    widget) ``input_name`` of node ``node_id``. The port has no default connected, so a run
    needs a value for ``unique_id``. ``object_info`` types a widget that the file does not
    list as an input yet (frontends before 1.16 list only converted widgets)."""
    data, graph, node = _open(workflow, node_id)
    inputs = node.setdefault("inputs", [])
    slot_index = next((i for i, s in enumerate(inputs) if s.get("name") == input_name), None)
    if slot_index is None:
        spec = input_spec(object_info, node.get("type"), input_name)
        if object_info is not None and spec is None:
            raise WorkflowError(f"node {node_id} ({node.get('type')}) has no input or widget "
                                f"{input_name!r}")
        kind = spec[0] if spec else ANY
        inputs.append({"name": input_name, "type": kind, "widget": {"name": input_name},
                       "link": None})
        slot_index = len(inputs) - 1
    slot = inputs[slot_index]
    if slot.get("link") is not None:
        raise WorkflowError(f"input {input_name!r} of node {node_id} ({node.get('type')}) is "
                            f"already connected (link {slot['link']}): disconnect it first")
    kind = slot.get("type") or ANY
    port_id, link_id = _next_node_id(data, graph), _next_link_id(data, graph)
    slot["link"] = link_id
    data["nodes"].append(_port_node(port_id, INPUT_CLASS, unique_id, _beside(node, -GAP),
                                    inputs=[{"name": "default", "type": ANY, "link": None, "shape": 7}],
                                    outputs=[{"name": "value", "type": kind, "links": [link_id]}]))
    data.setdefault("links", []).append([link_id, port_id, 0, node["id"], slot_index, kind])
    return _finish(data, port_id, link_id)


def add_output_port(workflow: str | os.PathLike | dict, node_id: Any, output: str | int,
                    unique_id: str) -> dict:
    """A copy of ``workflow`` where a new DiscomfortOutput ``unique_id`` reads ``output`` (a
    name or a slot number) of node ``node_id``."""
    data, graph, node = _open(workflow, node_id)
    outputs = node.get("outputs") or []
    if isinstance(output, int) and not isinstance(output, bool):
        slot_index = output if 0 <= output < len(outputs) else None
    else:
        slot_index = next((i for i, s in enumerate(outputs) if s.get("name") == output), None)
    if slot_index is None:
        names = ", ".join(str(s.get("name")) for s in outputs) or "none"
        raise WorkflowError(f"node {node_id} ({node.get('type')}) has no output {output!r} "
                            f"(its outputs: {names})")
    source = outputs[slot_index]
    kind = source.get("type") or ANY
    port_id, link_id = _next_node_id(data, graph), _next_link_id(data, graph)
    source["links"] = list(source.get("links") or []) + [link_id]
    data["nodes"].append(_port_node(port_id, OUTPUT_CLASS, unique_id, _beside(node, GAP),
                                    inputs=[{"name": "value", "type": kind, "link": link_id}],
                                    outputs=[]))
    data.setdefault("links", []).append([link_id, node["id"], slot_index, port_id, 0, kind])
    return _finish(data, port_id, link_id)


def _open(workflow, node_id) -> tuple[dict, UIGraph, dict]:
    data = copy.deepcopy(load_workflow(workflow))
    if not is_ui_format(data):
        raise WorkflowError("ports can be added to editor workflows (nodes and links) only; "
                            "an API prompt names its port nodes directly: add a "
                            f"{{'class_type': '{INPUT_CLASS}', 'inputs': {{'unique_id': ...}}}} node")
    graph = UIGraph(data)
    node = graph.node(node_id)
    if node is None:
        raise WorkflowError(f"the workflow has no node {node_id!r} (its nodes: "
                            f"{', '.join(sorted(graph.nodes))})")
    return data, graph, node


def _next_node_id(data: dict, graph: UIGraph) -> int:
    numbers = [int(k) for k in graph.nodes if k.lstrip("-").isdigit()]
    return max([data.get("last_node_id") or 0, *numbers]) + 1


def _next_link_id(data: dict, graph: UIGraph) -> int:
    return max([data.get("last_link_id") or 0, *[int(k) for k in graph.links]]) + 1


def _beside(node: dict, dx: float) -> list:
    pos = node.get("pos")
    if isinstance(pos, dict):  # some files save {"0": x, "1": y}
        pos = [pos.get("0", 0), pos.get("1", 0)]
    x, y = (pos or [0, 0])[:2]
    return [x + dx, y]


def _port_node(node_id: int, kind: str, unique_id: str, pos: list, *, inputs: list,
               outputs: list) -> dict:
    if not isinstance(unique_id, str) or not unique_id:
        raise WorkflowError(f"a port's unique_id must be a non-empty string, got {unique_id!r}")
    role = "Input" if kind == INPUT_CLASS else "Output"
    return {"id": node_id, "type": kind, "title": f"{role}: {unique_id}", "pos": pos,
            "size": list(PORT_SIZE), "flags": {}, "order": 0, "mode": 0, "inputs": inputs,
            "outputs": outputs, "properties": {"Node name for S&R": kind},
            "widgets_values": [unique_id]}


def _finish(data: dict, node_id: int, link_id: int) -> dict:
    data["last_node_id"] = max(data.get("last_node_id") or 0, node_id)
    data["last_link_id"] = max(data.get("last_link_id") or 0, link_id)
    return data
