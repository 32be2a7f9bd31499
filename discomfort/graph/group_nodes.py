"""Legacy group nodes (``extra.groupNodes``, node type ``workflow>NAME``): expanded in place.

Before subgraphs, the editor could pack nodes into a "group node" whose definition lives in
the workflow's ``extra.groupNodes``. The editor 1.32 sends each inner node as
``"<id>:<index>"``. The editor 1.58 turns each group node into a subgraph when it loads the
workflow: the inner nodes get fresh ids counted up from ``last_node_id``, then the instance
one more, so they are sent as ``"<new instance id>:<new inner id>"`` (group nodes in workflow
order). Here the group node is replaced by its inner nodes under the chosen editor's ids,
with the links rewired, so the rest of the conversion sees an ordinary graph.

A definition link that names an inner node the group does not have: 1.58 drops that link;
1.32 cannot register such a group node at all, so it is an error here (naming the group).

Covered: inner nodes and links, the instance's widget values (in inner-node order), its
socket inputs and its outputs. Both editors send the inner nodes of a muted or bypassed
group node; 1.32 resolves what a bypassed one feeds through the bypass (its matching input),
1.58 (which made it a subgraph without its mode) through the inner nodes. Not covered:
widgets converted to inputs on the instance.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..errors import WorkflowError
from .workflow import BYPASS, types_compatible

PREFIXES = ("workflow>", "workflow/")


def group_name(node_type: Any, groups: dict) -> str | None:
    """The ``extra.groupNodes`` key a node type refers to, if it is a group node."""
    if isinstance(node_type, str):
        for prefix in PREFIXES:
            if node_type.startswith(prefix) and node_type[len(prefix):] in groups:
                return node_type[len(prefix):]
    return None


def expand_group_nodes(workflow: dict, saved_widget_count: Callable[[str], int],
                       editor: str = "1.58") -> dict:
    """A copy of ``workflow`` with every group node replaced by its inner nodes.

    ``saved_widget_count(type)`` tells how many ``widgets_values`` slots a node type takes;
    ``editor`` ("1.32" or "1.58") whose ids and link handling to follow.
    """
    groups = (workflow.get("extra") or {}).get("groupNodes") or {}
    if not groups or not any(group_name(n.get("type"), groups) for n in workflow["nodes"]
                             if isinstance(n, dict)):
        return workflow
    workflow = copy.deepcopy(workflow)
    links = {link[0]: link for link in workflow["links"] if isinstance(link, list)}
    ids = _Ids(workflow) if editor == "1.58" else None
    by_id = {n.get("id"): n for n in workflow["nodes"] if isinstance(n, dict)}
    nodes, bypassed = [], {}
    for node in workflow["nodes"]:
        name = group_name(node.get("type"), groups) if isinstance(node, dict) else None
        if name is None:
            nodes.append(node)
            continue
        if editor == "1.32" and node.get("mode") == BYPASS:
            bypassed.update(_bypass_targets(node, links, by_id))
        nodes += _expand(node, name, groups[name], links, saved_widget_count, ids)
    for link_id, origin in bypassed.items():
        if origin is not None:
            links[link_id][1], links[link_id][2] = origin
        else:  # nothing of that type passes through: the consumer's input goes unconnected
            link = links.pop(link_id)
            for slot in (by_id.get(link[3]) or {}).get("inputs") or []:
                if slot.get("link") == link_id:
                    slot["link"] = None
    workflow["nodes"] = nodes
    workflow["links"] = list(links.values())
    return workflow


def _bypass_targets(instance: dict, links: dict, by_id: dict) -> dict:
    """For the editor 1.32, a bypassed group node still sends its inner nodes, but what its
    outputs feed is resolved through the bypass: each outgoing link maps to the (origin, slot)
    feeding the instance input that passes its type through, or None."""

    inputs = instance.get("inputs") or []
    feeds = [links.get(i.get("link")) for i in inputs]
    found = {}
    for k, output in enumerate(instance.get("outputs") or []):
        for link_id in output.get("links") or []:
            link = links.get(link_id)
            if link is None:
                continue
            target = by_id.get(link[3]) or {}
            wanted = next((s.get("type") for s in target.get("inputs") or []
                           if s.get("link") == link_id), link[5] if len(link) > 5 else None)
            index = _bypass_index([i.get("type") for i in inputs], output.get("type"), k, wanted,
                                  types_compatible)
            feed = feeds[index] if 0 <= index < len(feeds) else None
            found[link_id] = (feed[1], feed[2]) if feed is not None else None
    return found


def _bypass_index(types: list, output_type, slot: int, wanted, valid) -> int:
    """The input a bypassed node passes through to output ``slot`` (LiteGraph's rule)."""
    if wanted in ("*", ""):
        return slot if len(types) > slot else 0
    if slot < len(types) and valid(types[slot], output_type) and valid(types[slot], wanted):
        return slot
    exact = next((i for i, t in enumerate(types) if t == wanted), -1)
    if exact != -1:
        return exact
    return next((i for i, t in enumerate(types) if valid(t, output_type) and valid(t, wanted)),
                -1)


class _Ids:
    """The editor 1.58's id counter: ``last_node_id`` + 1 onwards, skipping ids in use."""

    def __init__(self, workflow: dict):
        self.used = {n.get("id") for n in workflow["nodes"] if isinstance(n, dict)}
        last = workflow.get("last_node_id")
        self.last = last if isinstance(last, int) and not isinstance(last, bool) else 0

    def next(self) -> int:
        self.last += 1
        while self.last in self.used:
            self.last += 1
        self.used.add(self.last)
        return self.last


def _expand(instance: dict, name: str, group: dict, links: dict, saved_widget_count,
            ids: _Ids | None) -> list[dict]:
    gid = str(instance.get("id"))
    inner = copy.deepcopy(group.get("nodes") or [])
    if ids is not None:  # 1.58: fresh inner ids, then the instance's
        inner_ids = [ids.next() for _ in inner]
        prefix = str(ids.next())
    for index, node in enumerate(inner):
        # Inner nodes keep their own mode and title: both editors send the nodes of a muted
        # or bypassed group node all the same, under their default titles.
        if ids is not None:
            node["id"] = f"{prefix}:{inner_ids[index]}"
        else:
            node["id"] = f"{gid}:{node.get('index', index)}"
        for slot in node.get("inputs") or []:
            slot["link"] = None
        for slot in node.get("outputs") or []:
            slot["links"] = []
    by_index = {node.get("index", i): node for i, node in enumerate(inner)}
    internal_in, internal_out = set(), set()
    for n, raw in enumerate(group.get("links") or []):
        origin, origin_slot, target, target_slot = raw[0], raw[1], raw[2], raw[3]
        if origin not in by_index or target not in by_index:
            if ids is not None:
                continue  # the editor 1.58 drops the link
            absent = sorted({str(i) for i in (origin, target) if i not in by_index})
            raise WorkflowError(
                f"group node {gid} ({instance.get('type')}, title "
                f"{instance.get('title') or name!r}): link {n} of extra.groupNodes[{name!r}] "
                f"names inner node(s) {', '.join(absent)}, which the group does not have "
                f"(it has {', '.join(str(i) for i in by_index) or 'none'}); the editor 1.32 "
                "cannot load such a group node. Remove that link from the group's links, or "
                "convert with editor='1.58', which drops it")
        link_id = f"{gid}:link{n}"
        links[link_id] = [link_id, by_index[origin]["id"], origin_slot,
                          by_index[target]["id"], target_slot, raw[-1]]
        _input(by_index[target], target_slot)["link"] = link_id
        internal_in.add((target, target_slot))
        internal_out.add((origin, origin_slot))
    _spread_widget_values(inner, instance.get("widgets_values"), saved_widget_count)
    _rewire_inputs(instance, inner, internal_in, links)
    _rewire_outputs(instance, inner, group, internal_out, links)
    return inner


def _input(node: dict, slot: int) -> dict:
    inputs = node.setdefault("inputs", [])
    while len(inputs) <= slot:
        inputs.append({"name": f"input_{len(inputs)}", "type": "*", "link": None})
    return inputs[slot]


def _spread_widget_values(inner: list[dict], values: Any, saved_widget_count) -> None:
    """The instance's widgets_values are its inner nodes' values, one node after the other."""
    if not isinstance(values, list):
        return
    offset = 0
    for node in inner:
        count = saved_widget_count(node.get("type"))
        node["widgets_values"] = values[offset:offset + count]
        offset += count


def _rewire_inputs(instance: dict, inner: list[dict], internal: set, links: dict) -> None:
    """Outer input k feeds the k-th inner socket input that no inner link feeds."""
    free = [(node, slot) for node in inner
            for slot, info in enumerate(node.get("inputs") or [])
            if (node.get("index"), slot) not in internal and not info.get("widget")]
    for k, outer in enumerate(instance.get("inputs") or []):
        link = links.get(outer.get("link"))
        if link is None or k >= len(free):
            continue
        node, slot = free[k]
        node["inputs"][slot]["link"] = link[0]
        link[3], link[4] = node["id"], slot


def _rewire_outputs(instance: dict, inner: list[dict], group: dict, internal: set,
                    links: dict) -> None:
    """Outer output k is the k-th inner output that is unlinked inside or marked external."""
    external = {(e[0], e[1]) for e in group.get("external") or []}
    exposed = [(node, slot) for node in inner
               for slot in range(len(node.get("outputs") or []))
               if (node.get("index"), slot) not in internal
               or (node.get("index"), slot) in external]
    for k, outer in enumerate(instance.get("outputs") or []):
        if k >= len(exposed):
            break
        node, slot = exposed[k]
        for link_id in outer.get("links") or []:
            link = links.get(link_id)
            if link is not None:
                link[1], link[2] = node["id"], slot
                node["outputs"][slot]["links"].append(link_id)
