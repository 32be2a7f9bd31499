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

import heapq
import os
from typing import Any, Iterable

from ..binding import INPUT_CLASS, OUTPUT_CLASS
from ..errors import WorkflowError
from .load import is_api_format, is_ui_format, load_workflow
from .pass_by import pass_by_for
from .ports import ANY, find_ports, is_link

MUTED, BYPASS = 2, 4
REROUTE = "Reroute"


# --- helpers shared with stitch ------------------------------------------------------------

def id_key(node_id: Any) -> tuple:
    """Sort key of a node id: numbers in numeric order (``"7:3"`` after ``"7"``), text after."""
    parts = str(node_id).split(":")
    return tuple((0, int(p), "") if p.lstrip("-").isdigit() else (1, 0, p) for p in parts)


def concrete(kind: Any) -> bool:
    return isinstance(kind, str) and kind not in ("", ANY)


def merge_types(kinds: Iterable[Any]) -> str:
    """One type from several views of a port: the one concrete type, else ``"*"`` (as
    :func:`.ports.find_ports` does when consumers disagree)."""
    found = {k for k in kinds if concrete(k)}
    return found.pop() if len(found) == 1 else ANY


def parse_link(raw: Any) -> list | None:
    """A UI link as ``[id, origin_id, origin_slot, target_id, target_slot, type]``."""
    if isinstance(raw, list) and len(raw) >= 5:
        return list(raw[:5]) + [raw[5] if len(raw) > 5 else ANY]
    if isinstance(raw, dict) and "id" in raw:
        return [raw["id"], raw.get("origin_id"), raw.get("origin_slot"), raw.get("target_id"),
                raw.get("target_slot"), raw.get("type", ANY)]
    return None


class UIGraph:
    """The root level of an editor workflow, indexed: nodes by id, links by id."""

    def __init__(self, workflow: dict):
        self.workflow = workflow
        self.nodes: dict[str, dict] = {}
        for node in workflow.get("nodes") or []:
            if not isinstance(node, dict):
                raise WorkflowError(f"a workflow node is a {type(node).__name__}, not an object")
            self.nodes[str(node.get("id"))] = node
        self.links: dict[int, list] = {}
        for raw in workflow.get("links") or []:
            link = parse_link(raw)
            if link is not None:
                self.links[link[0]] = link

    def node(self, node_id: Any) -> dict | None:
        return self.nodes.get(str(node_id))

    @staticmethod
    def out_links(node: dict, slot: int = 0) -> list:
        outputs = node.get("outputs") or []
        if slot >= len(outputs) or not isinstance(outputs[slot], dict):
            return []
        return list(outputs[slot].get("links") or [])

    @staticmethod
    def input_index(node: dict, name: str, fallback: int = 0) -> int:
        inputs = node.get("inputs") or []
        for index, slot in enumerate(inputs):
            if isinstance(slot, dict) and slot.get("name") == name:
                return index
        return fallback

    def in_link(self, node: dict, name: str, fallback: int = 0) -> list | None:
        """The link into the input called ``name`` (None when unconnected)."""
        inputs = node.get("inputs") or []
        index = self.input_index(node, name, fallback)
        if index >= len(inputs) or not isinstance(inputs[index], dict):
            return None
        link_id = inputs[index].get("link")
        return self.links.get(link_id) if link_id is not None else None

    def target_slot_type(self, link: list) -> Any:
        target = self.node(link[3])
        if target is None:
            return None
        inputs = target.get("inputs") or []
        for slot in inputs:
            if isinstance(slot, dict) and slot.get("link") == link[0]:
                return slot.get("type")
        index = link[4]
        if isinstance(index, int) and 0 <= index < len(inputs) and isinstance(inputs[index], dict):
            return inputs[index].get("type")
        return None

    def downstream_types(self, link: list, seen: set | None = None) -> list:
        """What a link's value is taken as: its type, else its target's input type (through
        Reroute nodes)."""
        if concrete(link[5]):
            return [link[5]]
        seen = set() if seen is None else seen
        if link[0] in seen:
            return []
        seen.add(link[0])
        target = self.node(link[3])
        if target is not None and target.get("type") == REROUTE:
            return [t for lid in self.out_links(target) if lid in self.links
                    for t in self.downstream_types(self.links[lid], seen)]
        kind = self.target_slot_type(link)
        return [kind] if concrete(kind) else []

    def upstream_type(self, link: list | None, seen: set | None = None) -> str:
        """What a link carries: its type, else its origin's output type (through Reroutes)."""
        if link is None:
            return ANY
        if concrete(link[5]):
            return link[5]
        seen = set() if seen is None else seen
        if link[0] in seen:
            return ANY
        seen.add(link[0])
        origin = self.node(link[1])
        if origin is None:
            return ANY
        if origin.get("type") == REROUTE:
            return self.upstream_type(self.in_link(origin, "", 0), seen)
        outputs = origin.get("outputs") or []
        slot = link[2]
        if isinstance(slot, int) and 0 <= slot < len(outputs) and isinstance(outputs[slot], dict):
            kind = outputs[slot].get("type")
            return kind if concrete(kind) else ANY
        return ANY

    def input_port_type(self, node: dict) -> str:
        return merge_types(t for lid in self.out_links(node) if lid in self.links
                           for t in self.downstream_types(self.links[lid]))

    def output_port_type(self, node: dict) -> str:
        return self.upstream_type(self.in_link(node, "value"))


def ui_unique_id(node: dict) -> str:
    values = node.get("widgets_values")
    uid = values[0] if isinstance(values, list) and values else \
        values.get("unique_id") if isinstance(values, dict) else None
    if not isinstance(uid, str) or not uid:
        raise WorkflowError(f"{node.get('type')} node {node.get('id')} has no unique_id text: "
                            "type one into its unique_id widget")
    return uid


def ui_ports(graph: UIGraph) -> list[tuple[str, dict, str]]:
    """``(role, node, unique_id)`` of every active root-level port node, in node order."""
    ports = []
    for node in graph.nodes.values():
        role = {INPUT_CLASS: "input", OUTPUT_CLASS: "output"}.get(node.get("type"))
        if role and (node.get("mode") or 0) not in (MUTED, BYPASS):
            ports.append((role, node, ui_unique_id(node)))
    return ports


def check_port_links(graph: UIGraph) -> None:
    """Every link that leaves an input port must be carried by the input it points at. The
    editor reads a link from the input's side: a link whose target input does not hold it
    feeds nothing there, and the widget's own value would run in its place, silently."""
    ports = {key: node for key, node in graph.nodes.items()
             if node.get("type") == INPUT_CLASS and (node.get("mode") or 0) not in (MUTED, BYPASS)}
    for link in graph.links.values():
        port = ports.get(str(link[1]))
        if port is None:
            continue
        target = graph.node(link[3])
        inputs = (target.get("inputs") or []) if target else []
        if any(isinstance(slot, dict) and slot.get("link") == link[0] for slot in inputs):
            continue
        where = (f"node {link[3]}, which is not in the workflow" if target is None else
                 f"input slot {link[4]} of node {link[3]} ({target.get('type')}), "
                 + _slot_text(inputs, link[4]))
        raise WorkflowError(
            f"link {link[0]} from input port {ui_unique_id(port)!r} (node {link[1]}) goes to "
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


def check_single_writers(writers: Iterable[tuple[str, Any]]) -> None:
    """Two output ports writing one unique_id in one workflow is an error naming both."""
    seen: dict[str, Any] = {}
    for uid, node_id in writers:
        if uid in seen:
            raise WorkflowError(f"output ports {seen[uid]} and {node_id} both write {uid!r}: "
                                "give one of them another unique_id")
        seen[uid] = node_id


def topological_order(node_ids: Iterable[Any], edges: Iterable[tuple[Any, Any]]) -> list:
    """Kahn's algorithm, ready nodes taken in node-id order. A cycle is a ``WorkflowError``."""
    ids = {str(n): n for n in node_ids}
    successors: dict[str, set] = {k: set() for k in ids}
    indegree = dict.fromkeys(ids, 0)
    for source, target in edges:
        s, t = str(source), str(target)
        if s in ids and t in ids and t not in successors[s] and s != t:
            successors[s].add(t)
            indegree[t] += 1
        elif s == t and s in ids:
            raise WorkflowError(f"node {source} is linked to itself")
    ready = [(id_key(k), k) for k, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(ids[key])
        for nxt in successors[key]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (id_key(nxt), nxt))
    if len(order) < len(ids):
        stuck = sorted((k for k, d in indegree.items() if d > 0), key=id_key)
        raise WorkflowError(f"the workflow's links form a cycle through node(s) {', '.join(stuck)}")
    return order


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
                _entry(inputs, uid, node.get("id"), graph.input_port_type(node))
            else:
                _entry(outputs, uid, node.get("id"), graph.output_port_type(node))
        order = topological_order([n.get("id") for n in graph.nodes.values()],
                                  [(link[1], link[3]) for link in graph.links.values()])
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
