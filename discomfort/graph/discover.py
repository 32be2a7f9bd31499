"""Which port nodes a workflow has, of what type, how their values travel, and in what order
its nodes run.

Works on both formats. In an editor (UI-format) workflow a port's type comes from the links
it is wired with (the type on the link leaving an input port, or entering an output port; when
that says ``"*"``, the type of the slot at the other end); in an API prompt it comes from
``/object_info`` (see :func:`.ports.find_ports`). ``"*"`` where it cannot be known. Only
root-level, active port nodes count in an editor workflow: muted or bypassed ones are not sent
to the server.
"""

from __future__ import annotations

import os
from typing import Any

from ..binding import INPUT_CLASS, OUTPUT_CLASS
from ..errors import WorkflowError
from .load import is_api_format, is_ui_format, load_workflow
from .pass_by import pass_by_for
from .ports import find_ports
from .workflow import (
    UIGraph,
    check_single_writers,
    id_key,
    is_active,
    is_link,
    merge_types,
    topological_order,
)


def ui_unique_id(node: dict) -> str:
    values = node.get("widgets_values")
    uid = values[0] if isinstance(values, list) and values else \
        values.get("unique_id") if isinstance(values, dict) else None
    if not isinstance(uid, str) or not uid:
        raise WorkflowError(f"{node.get('type')} node {node.get('id')} has no unique_id text: "
                            "type one into its unique_id widget")
    return uid


def input_port_type(graph: UIGraph, port: dict) -> str:
    """What an editor input port feeds: the one type its links are taken as, else ``"*"``."""
    return merge_types(t for link in graph.links_from(port) for t in graph.downstream_types(link))


def output_port_type(graph: UIGraph, port: dict) -> str:
    """What an editor output port receives: the type its ``value`` link carries."""
    return graph.upstream_type(graph.in_link(port, "value"))


def ui_ports(graph: UIGraph) -> list[tuple[str, dict, str]]:
    """``(role, node, unique_id)`` of every active root-level port node, in node order."""
    ports = []
    for node in graph.nodes.values():
        type_ = node.get("type")
        role = "input" if type_ == INPUT_CLASS else "output" if type_ == OUTPUT_CLASS else None
        if role and is_active(node):
            ports.append((role, node, ui_unique_id(node)))
    return ports


def check_port_links(graph: UIGraph) -> None:
    """Every link that leaves an input port must be carried by the input it points at. The
    editor reads a link from the input's side: a link whose target input does not hold it
    feeds nothing there, and the widget's own value would run in its place, silently."""
    ports = {key: node for key, node in graph.nodes.items()
             if node.get("type") == INPUT_CLASS and is_active(node)}
    for link in graph.links.values():
        port = ports.get(str(link.origin_id))
        if port is None or graph.holds(link):
            continue
        target = graph.node(link.target_id)
        inputs = (target.get("inputs") or []) if target else []
        where = (f"node {link.target_id}, which is not in the workflow" if target is None else
                 f"input slot {link.target_slot} of node {link.target_id} ({target.get('type')}), "
                 + _slot_text(inputs, link.target_slot))
        raise WorkflowError(
            f"link {link.id} from input port {ui_unique_id(port)!r} (node {link.origin_id}) goes to "
            f"{where}: the port feeds nothing there. Reconnect the port to that input in the "
            "editor and save the workflow again")


def _slot_text(inputs: list, index: Any) -> str:
    if not isinstance(index, int) or not 0 <= index < len(inputs) or not isinstance(inputs[index], dict):
        names = ", ".join(str(s.get("name")) for s in inputs if isinstance(s, dict)) or "none"
        return f"which has no such input (its inputs: {names})"
    slot = inputs[index]
    held = slot.get("link")
    return (f"'{slot.get('name')}', which holds " + ("no link" if held is None else f"link {held}")
            + " instead")


def check_acyclic(prompt: dict) -> None:
    """An API prompt whose links loop: ComfyUI says only "Prompt outputs failed validation";
    name the nodes of the loop instead."""
    feeds = {str(k): {str(v[0]) for v in (n.get("inputs") or {}).values()
                      if is_link(v) and str(v[0]) in prompt} for k, n in prompt.items()}
    loop = set(feeds)
    while True:  # peel off nodes fed by nothing in the set, then nodes feeding nothing in it
        fed = {k for k in loop if feeds[k] & loop}
        feeding = {src for k in loop for src in feeds[k] & loop}
        kept = fed & feeding
        if kept == loop:
            break
        loop = kept
    if loop:
        names = ", ".join(f"{k} ({prompt[k].get('class_type')})" for k in sorted(loop, key=id_key))
        raise WorkflowError(f"the prompt's links form a loop through nodes {names}: a prompt "
                            "cannot feed a node's output back into it; break the loop, or "
                            "carry the value from one run to the next through a port pair")


# --- public ----------------------------------------------------------------------------------

def _entry(table: dict, uid: str, node_id: Any, kind: str) -> None:
    entry = table.setdefault(uid, {"node_ids": [], "types": []})
    entry["node_ids"].append(node_id)
    entry["types"].append(kind)


def _finish(table: dict, rules: dict | None) -> dict:
    out = {}
    for uid, entry in table.items():
        kind = merge_types(entry["types"])
        out[uid] = {"node_ids": entry["node_ids"], "type": kind,
                    "pass_by": pass_by_for(kind, rules)}
    return out


def discover_port_nodes(workflow: str | os.PathLike | dict, object_info: dict | None = None,
                        rules: dict | None = None) -> dict:
    """The port nodes of a workflow (a path or a dict; editor or API format).

    Returns ``{"inputs": {unique_id: info}, "outputs": {unique_id: info},
    "execution_order": [node ids]}`` where ``info`` is ``{"node_ids": [...], "type": str,
    "pass_by": "val" | "ref"}``. Node ids are as the workflow spells them (numbers in an editor
    workflow, strings in an API prompt). Several input ports may share a unique_id; two output
    ports sharing one raise ``WorkflowError`` naming both. ``rules`` are pass_by rules
    (:func:`.pass_by.load_rules`; the defaults when omitted). The execution order is a
    topological order of all the (root-level) nodes over the links, ties by node id.
    """
    workflow = load_workflow(workflow)
    inputs: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    if is_ui_format(workflow):
        graph = UIGraph(workflow)
        check_port_links(graph)
        ports = ui_ports(graph)
        check_single_writers((uid, node.get("id")) for role, node, uid in ports if role == "output")
        for role, node, uid in ports:
            if role == "input":
                _entry(inputs, uid, node.get("id"), input_port_type(graph, node))
            else:
                _entry(outputs, uid, node.get("id"), output_port_type(graph, node))
        order = topological_order([n.get("id") for n in graph.nodes.values()],
                                  [(link.origin_id, link.target_id) for link in graph.links.values()])
    elif is_api_format(workflow):
        in_ports, out_ports = find_ports(workflow, object_info)  # raises on two writers
        for port in in_ports:
            _entry(inputs, port.unique_id, port.node_id, port.type)
        for port in out_ports:
            _entry(outputs, port.unique_id, port.node_id, port.type)
        order = topological_order(list(workflow), [
            (value[0], node_id) for node_id, node in workflow.items()
            for value in (node.get("inputs") or {}).values() if is_link(value)])
    else:
        raise WorkflowError("not a ComfyUI workflow: expected an editor workflow (nodes and "
                            "links) or an API prompt ({id: {class_type, inputs}})")
    return {"inputs": _finish(inputs, rules), "outputs": _finish(outputs, rules),
            "execution_order": order}
