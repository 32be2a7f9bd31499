"""The one model of a workflow that every graph module reads: links, modes, input specs.

Both formats meet here. An editor (UI) workflow is nodes and links (:class:`Link`,
:class:`UIGraph`); an API prompt is ``{node_id: {"class_type", "inputs"}}`` where a link is
``[node_id, slot]`` (:func:`is_link`). What a node class takes and gives comes from
``/object_info`` (:func:`input_spec`, :func:`output_spec`), and whether two types may be joined
is LiteGraph's rule (:func:`types_compatible`). Pure functions and plain data: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import WorkflowError

ANY = "*"
MUTED, BYPASS = 2, 4          # node modes the editor never sends to the server
REROUTE = "Reroute"


# --- node ids, types -------------------------------------------------------------------------

def id_key(node_id: Any) -> tuple:
    """Sort key of a node id: numbers in numeric order (``"7:3"`` after ``"7"``), text after."""
    parts = str(node_id).split(":")
    return tuple((0, int(p), "") if p.lstrip("-").isdigit() else (1, 0, p) for p in parts)


def concrete(kind: Any) -> bool:
    """A type that says something (not empty, not the wildcard)."""
    return isinstance(kind, str) and kind not in ("", ANY)


def merge_types(kinds: Iterable[Any]) -> str:
    """One type from several views of a value: the one concrete type, else ``"*"``."""
    found = {k for k in kinds if concrete(k)}
    return found.pop() if len(found) == 1 else ANY


def types_compatible(a: Any, b: Any) -> bool:
    """LiteGraph's rule for a connection: a wildcard or empty type matches anything, names
    compare case-insensitively, and ``"A,B"`` lists match when they share a member."""
    if a in ("", ANY, None, 0) or b in ("", ANY, None, 0) or a == b:
        return True
    left = {x.strip() for x in str(a).lower().split(",")}
    right = {x.strip() for x in str(b).lower().split(",")}
    return bool(left & right) or ANY in left | right


def is_active(node: dict) -> bool:
    """Not muted or bypassed: the editor sends it (and a port of it counts)."""
    return (node.get("mode") or 0) not in (MUTED, BYPASS)


# --- /object_info ----------------------------------------------------------------------------

def spec_parts(spec: Any) -> tuple[str, dict]:
    """One raw input spec, ``[type, options]`` or ``[[choices...], options]``, as ``(type,
    options)``: a combo in either spelling is ``"COMBO"`` with its choices in
    ``options["options"]``. The options are a copy."""
    spec = spec if isinstance(spec, list) else [spec]
    head = spec[0] if spec else None
    opts = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(head, list):
        return "COMBO", {**opts, "options": head}
    return str(head), opts


def input_spec(object_info: dict | None, class_type: Any, name: str) -> tuple[str, dict] | None:
    """``(type, options)`` of input ``name`` of a node class (see :func:`spec_parts`); None
    when the class has no such input."""
    info = (object_info or {}).get(class_type) or {}
    for section in ("required", "optional"):
        spec = ((info.get("input") or {}).get(section) or {}).get(name)
        if isinstance(spec, list) and spec:
            return spec_parts(spec)
    return None


def input_type(object_info: dict | None, class_type: Any, name: str) -> str:
    spec = input_spec(object_info, class_type, name)
    return spec[0] if spec else ANY


def output_spec(object_info: dict | None, class_type: Any, slot: Any) -> tuple[str, bool]:
    """``(type, is_list)`` of output ``slot`` of a node class (``"*"`` when unknown)."""
    info = (object_info or {}).get(class_type) or {}
    outputs, as_list = info.get("output") or [], info.get("output_is_list") or []
    if not isinstance(slot, int) or not 0 <= slot < len(outputs):
        return ANY, False
    return str(outputs[slot]), bool(as_list[slot]) if slot < len(as_list) else False


# --- API prompts -----------------------------------------------------------------------------

def is_link(value: Any) -> bool:
    """An API input that reads another node's output: ``[node_id, slot]``."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) \
        and not isinstance(value[1], bool) and isinstance(value[0], (str, int))


def links_of(node: dict) -> list[tuple[str, list]]:
    """``(input name, link)`` of each linked input of an API node."""
    return [(name, value) for name, value in (node.get("inputs") or {}).items() if is_link(value)]


def consumers(prompt: dict, node_id: Any) -> list[tuple[str, str]]:
    """``(consumer node id, input name)`` of every link that reads ``node_id``."""
    return [(cid, name) for cid, node in prompt.items()
            for name, value in links_of(node) if str(value[0]) == str(node_id)]


def rewire(prompt: dict, node_id: Any, replacement: Any, *, drop: bool = True) -> dict:
    """A copy of ``prompt`` whose inputs that read ``node_id`` read ``replacement`` instead (a
    link ``[id, slot]`` or a literal value); with ``drop``, ``node_id`` itself is gone. The
    one way a port's readers are pointed elsewhere: inlining, splicing a recipe, stitching."""
    key = str(node_id)
    out = {}
    for nid, node in prompt.items():
        if drop and str(nid) == key:
            continue
        inputs = node.get("inputs") or {}
        if any(str(v[0]) == key for _, v in links_of(node)):
            inputs = {name: (_copy(replacement) if is_link(v) and str(v[0]) == key else v)
                      for name, v in inputs.items()}
            node = dict(node, inputs=inputs)
        out[nid] = node
    return out


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def check_single_writers(writers: Iterable[tuple[str, Any]]) -> None:
    """Two output ports writing one unique_id in one workflow would race for one key."""
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
        if s == t and s in ids:
            raise WorkflowError(f"node {source} is linked to itself")
        if s in ids and t in ids and t not in successors[s]:
            successors[s].add(t)
            indegree[t] += 1
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


# --- editor workflows ------------------------------------------------------------------------

@dataclass
class Link:
    """An editor link. Saved as ``[id, origin_id, origin_slot, target_id, target_slot,
    type]`` (a workflow's ``links``) or as a dict (subgraph definitions, version-1 files)."""

    id: Any
    origin_id: Any
    origin_slot: Any
    target_id: Any
    target_slot: Any
    type: Any = ANY

    def as_list(self) -> list:
        return [self.id, self.origin_id, self.origin_slot, self.target_id, self.target_slot,
                self.type]


def parse_link(raw: Any) -> Link | None:
    """A saved link in either shape; None for anything else (the editor skips those too)."""
    if isinstance(raw, list) and len(raw) >= 5:
        return Link(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5] if len(raw) > 5 else ANY)
    if isinstance(raw, dict) and "id" in raw:
        return Link(raw["id"], raw.get("origin_id"), raw.get("origin_slot"), raw.get("target_id"),
                    raw.get("target_slot"), raw.get("type", ANY))
    return None


class UIGraph:
    """One level of an editor workflow (the root, or a subgraph definition), indexed: nodes by
    id, links by id. Holds the workflow's own node dicts, so edits through it are edits of it."""

    def __init__(self, workflow: dict):
        self.workflow = workflow
        self.nodes: dict[str, dict] = {}
        for node in workflow.get("nodes") or []:
            if not isinstance(node, dict):
                raise WorkflowError(f"a workflow node is a {type(node).__name__}, not an object")
            self.nodes[str(node.get("id"))] = node
        self.links: dict[Any, Link] = {}
        for raw in workflow.get("links") or []:
            link = parse_link(raw)
            if link is not None:
                self.links[link.id] = link

    def node(self, node_id: Any) -> dict | None:
        return self.nodes.get(str(node_id))

    @staticmethod
    def out_links(node: dict, slot: int = 0) -> list:
        """The ids of the links leaving output ``slot`` of ``node``."""
        outputs = node.get("outputs") or []
        if slot >= len(outputs) or not isinstance(outputs[slot], dict):
            return []
        return list(outputs[slot].get("links") or [])

    def links_from(self, node: dict, slot: int = 0) -> list[Link]:
        return [self.links[i] for i in self.out_links(node, slot) if i in self.links]

    @staticmethod
    def input_index(node: dict, name: str, fallback: int = 0) -> int:
        for index, slot in enumerate(node.get("inputs") or []):
            if isinstance(slot, dict) and slot.get("name") == name:
                return index
        return fallback

    def in_link(self, node: dict, name: str, fallback: int = 0) -> Link | None:
        """The link into the input called ``name`` (None when unconnected)."""
        inputs = node.get("inputs") or []
        index = self.input_index(node, name, fallback)
        if index >= len(inputs) or not isinstance(inputs[index], dict):
            return None
        link_id = inputs[index].get("link")
        return self.links.get(link_id) if link_id is not None else None

    def target_input(self, link: Link) -> dict | None:
        """The input slot of the link's target that holds it (else the one at its slot)."""
        target = self.node(link.target_id)
        inputs = [s for s in (target or {}).get("inputs") or [] if isinstance(s, dict)]
        held = next((s for s in inputs if s.get("link") == link.id), None)
        if held is None and isinstance(link.target_slot, int) and 0 <= link.target_slot < len(inputs):
            held = inputs[link.target_slot]
        return held

    def holds(self, link: Link) -> bool:
        """Does the link's target input carry it? The editor reads links from that side."""
        target = self.node(link.target_id)
        return any(isinstance(s, dict) and s.get("link") == link.id
                   for s in (target or {}).get("inputs") or [])

    def downstream_types(self, link: Link, seen: set | None = None) -> list:
        """What a link's value is taken as: its type, else its target's input type (through
        Reroute nodes)."""
        if concrete(link.type):
            return [link.type]
        seen = set() if seen is None else seen
        if link.id in seen:
            return []
        seen.add(link.id)
        target = self.node(link.target_id)
        if target is not None and target.get("type") == REROUTE:
            return [t for nxt in self.links_from(target) for t in self.downstream_types(nxt, seen)]
        kind = (self.target_input(link) or {}).get("type")
        return [kind] if concrete(kind) else []

    def upstream_type(self, link: Link | None, seen: set | None = None) -> str:
        """What a link carries: its type, else its origin's output type (through Reroutes)."""
        if link is None:
            return ANY
        if concrete(link.type):
            return link.type
        seen = set() if seen is None else seen
        if link.id in seen:
            return ANY
        seen.add(link.id)
        origin = self.node(link.origin_id)
        if origin is None:
            return ANY
        if origin.get("type") == REROUTE:
            return self.upstream_type(self.in_link(origin, "", 0), seen)
        outputs = origin.get("outputs") or []
        slot = link.origin_slot
        if isinstance(slot, int) and 0 <= slot < len(outputs) and isinstance(outputs[slot], dict):
            kind = outputs[slot].get("type")
            return kind if concrete(kind) else ANY
        return ANY
