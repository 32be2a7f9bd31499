"""Join partial workflows into one: what one part writes, the next reads.

Each input port is joined to the latest *earlier* output port with the same unique_id: the
input port's consumers are rewired to read what feeds that output port. Parts keep their
groups, ``extra`` data and subgraph definitions; node, link, group and reroute ids are
renumbered so that nothing collides, and (editor format) each part is laid out to the right of
the previous ones. Pure functions on JSON: no I/O beyond reading the given paths.

An output port followed by a later output port with the same unique_id is *superseded*: run in
sequence, the later one would overwrite its value, and one prompt with two writers of one key
is refused. Superseded output ports are therefore always removed from the stitched workflow
(their producers stay).
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DiscomfortWarning, PortTypeError, WorkflowError
from .discover import discover_port_nodes, input_port_type, output_port_type, ui_ports
from .load import is_api_format, is_ui_format, load_workflow
from .ports import find_ports
from .workflow import (
    Link,
    UIGraph,
    check_single_writers,
    concrete,
    consumers,
    input_type,
    is_link,
    merge_types,
    output_spec,
    parse_link,
    rewire,
    types_compatible,
)

MARGIN = 100          # editor units between two stitched parts
_NAMESPACE = uuid.UUID("5f0c6d2e-7a57-4c1b-9d3e-6b7d1f0a2c11")  # renamed subgraph definitions


@dataclass
class _Writer:
    node_id: Any          # in the stitched workflow
    original_id: Any      # in its own workflow
    label: str


def _label(index: int, source: Any) -> str:
    if isinstance(source, dict):
        return f"workflow {index + 1}"
    return f"workflow {index + 1} ({os.fspath(source)})"


def _describe(role: str, uid: str, original_id: Any, new_id: Any, label: str) -> str:
    where = f"node {original_id} of {label}"
    if str(original_id) != str(new_id):
        where += f", node {new_id} when stitched"
    return f"{role} port {uid!r} ({where})"


def _check_join(uid: str, out_desc: str, out_type: str, in_desc: str, in_type: str) -> None:
    if not types_compatible(out_type, in_type):
        raise PortTypeError(f"cannot join {out_desc}, of type {out_type}, to {in_desc}, "
                            f"which feeds {in_type}")


def _no_source(uid: str, out_desc: str, in_desc: str) -> WorkflowError:
    return WorkflowError(f"cannot join {in_desc} to {out_desc}: nothing is connected to that "
                         "output port's value input")


# --- public ---------------------------------------------------------------------------------

def stitch_workflows(workflows: Iterable[str | os.PathLike | dict],
                     delete_input_ports: bool = False, delete_output_ports: bool = False, *,
                     object_info: dict | None = None, rules: dict | None = None) -> dict:
    """Stitch partial workflows (paths or dicts, all editor format or all API format) into one.

    Returns ``{"stitched_workflow": ..., "inputs": ..., "outputs": ..., "execution_order":
    ...}``, the last three as :func:`.discover.discover_port_nodes` gives for the result.
    Joined port nodes are kept unless ``delete_input_ports`` / ``delete_output_ports`` asks to
    remove them; unjoined ones always stay. A join whose types disagree (a MODEL output into
    an IMAGE input) raises ``PortTypeError`` naming both ports; ``"*"`` matches anything.
    ``object_info`` (the server's ``/object_info``) gives API-format ports their types, so
    that their joins are checked too; editor workflows carry their types on their links.
    The inputs are never modified.
    """
    if isinstance(workflows, (str, os.PathLike, dict)):
        raise WorkflowError("stitch_workflows takes a list of workflows, not one workflow")
    sources = list(workflows)
    if not sources:
        raise WorkflowError("stitch_workflows needs at least one workflow")
    parts, labels, formats = [], [], []
    for index, source in enumerate(sources):
        data = copy.deepcopy(load_workflow(source))
        label = _label(index, source)
        if is_ui_format(data):
            formats.append("editor")
        elif is_api_format(data):
            formats.append("API")
        else:
            raise WorkflowError(f"{label} is not a ComfyUI workflow: expected an editor workflow "
                                "(nodes and links) or an API prompt ({id: {class_type, inputs}})")
        parts.append(data)
        labels.append(label)
    if len(set(formats)) > 1:
        listing = ", ".join(f"{label}: {kind}" for label, kind in zip(labels, formats, strict=True))
        raise WorkflowError(f"cannot stitch editor workflows with API prompts ({listing}): "
                            "export them all in one format")
    _warn_about_order(parts, labels)
    if formats[0] == "API" and object_info is None:
        warnings.warn("stitching API prompts without object_info: their ports are typed '*', so "
                      "no join's types were checked; pass object_info=await "
                      "discomfort.Worker.object_info() to check them", DiscomfortWarning,
                      stacklevel=2)
    if formats[0] == "editor":
        stitched = _UIStitcher(parts, labels).stitch(delete_input_ports, delete_output_ports)
    else:
        stitched = _stitch_api(parts, labels, delete_input_ports, delete_output_ports, object_info)
    return {"stitched_workflow": stitched, **discover_port_nodes(stitched, object_info, rules)}


def _warn_about_order(parts: list[dict], labels: list[str]) -> None:
    """An input joins only an *earlier* output of its unique_id: one written only by a later
    part is left unjoined, which is rarely what was meant."""
    ports = [discover_port_nodes(part) for part in parts]
    for index, found in enumerate(ports):
        for uid in found["inputs"]:
            earlier = any(uid in p["outputs"] for p in ports[:index])
            later = [labels[j] for j in range(index + 1, len(parts)) if uid in ports[j]["outputs"]]
            if later and not earlier and uid not in found["outputs"]:
                warnings.warn(f"input {uid!r} of {labels[index]} is written only by {later[0]}, "
                              "which comes after it: parts join in the order given, so this "
                              "input stays unjoined; put the part that writes it first",
                              DiscomfortWarning, stacklevel=3)


# --- API format -----------------------------------------------------------------------------

_NUMERIC_ID = re.compile(r"(\d+)((?::\d+)*)")


def _api_id_map(part: dict, offset: int, taken: set) -> dict[str, str]:
    """New ids: numeric ids (and flattened ``"7:3"`` ones, by their first number) shifted by
    ``offset``; any other id gets a fresh number."""
    mapping: dict[str, str] = {}
    top = offset
    for old in part:
        match = _NUMERIC_ID.fullmatch(str(old))
        if match:
            first = int(match.group(1)) + offset
            mapping[str(old)] = f"{first}{match.group(2)}"
            top = max(top, first)
    for old in part:
        if str(old) not in mapping:
            top += 1
            mapping[str(old)] = str(top)
    clash = set(mapping.values()) & taken
    if clash or len(set(mapping.values())) < len(mapping):
        raise WorkflowError(f"cannot renumber node ids {sorted(part)} without a collision")
    return mapping


def _first_number(node_id: str) -> int:
    match = _NUMERIC_ID.fullmatch(node_id)
    return int(match.group(1)) if match else 0


def _api_source_type(prompt: dict, source: list, object_info: dict | None) -> str:
    origin = prompt.get(str(source[0]))
    if origin is None:
        return "*"
    return output_spec(object_info, origin.get("class_type"), source[1])[0]


def _api_input_type(prompt: dict, node_id: str, object_info: dict | None) -> str:
    return merge_types(input_type(object_info, prompt[c]["class_type"], name)
                       for c, name in consumers(prompt, node_id))


def _stitch_api(parts: list[dict], labels: list[str], delete_inputs: bool, delete_outputs: bool,
                object_info: dict | None) -> dict:
    result: dict[str, dict] = {}
    writers: dict[str, _Writer] = {}
    joined_in: set[str] = set()
    joined_out: set[str] = set()
    superseded: set[str] = set()
    offset = 0
    for part, label in zip(parts, labels, strict=True):
        in_ports, out_ports = find_ports(part, object_info)  # one writer per key in each part
        ids = _api_id_map(part, offset, set(result))
        for old, node in part.items():
            inputs = {}
            for name, value in (node.get("inputs") or {}).items():
                if is_link(value):
                    if str(value[0]) not in ids:
                        raise WorkflowError(f"input {name!r} of node {old} in {label} links to "
                                            f"node {value[0]}, which is not in that workflow")
                    value = [ids[str(value[0])], value[1]]
                inputs[name] = value
            result[ids[str(old)]] = {**node, "inputs": inputs}
        offset = max([offset, *map(_first_number, result)])
        for port in in_ports:
            writer = writers.get(port.unique_id)
            if writer is None:
                continue
            new_id = ids[port.node_id]
            out_desc = _describe("output", port.unique_id, writer.original_id, writer.node_id,
                                 writer.label)
            in_desc = _describe("input", port.unique_id, port.node_id, new_id, label)
            source = result[writer.node_id]["inputs"].get("value")
            if not is_link(source):
                raise _no_source(port.unique_id, out_desc, in_desc)
            _check_join(port.unique_id, out_desc, _api_source_type(result, source, object_info),
                        in_desc, _api_input_type(result, new_id, object_info))
            result = rewire(result, new_id, source, drop=False)
            joined_in.add(new_id)
            joined_out.add(writer.node_id)
        for port in out_ports:
            if port.unique_id in writers:
                superseded.add(writers[port.unique_id].node_id)
            writers[port.unique_id] = _Writer(ids[port.node_id], port.node_id, label)
    removed = superseded | (joined_in if delete_inputs else set()) \
        | (joined_out if delete_outputs else set())
    return {node_id: node for node_id, node in result.items() if node_id not in removed}


# --- editor format --------------------------------------------------------------------------

def _shift(value: Any, offset: int) -> Any:
    """An id plus ``offset``, keeping its JSON type (numbers, or numeric strings)."""
    if offset == 0 or value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + offset
    if isinstance(value, str) and value.isdigit():
        return str(int(value) + offset)
    return value


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _x(pos: Any) -> float | None:
    if isinstance(pos, (list, tuple)) and pos and isinstance(pos[0], (int, float)):
        return pos[0]
    if isinstance(pos, dict) and isinstance(pos.get("0"), (int, float)):
        return pos["0"]
    return None


def _move_x(holder: dict, key: str, dx: float) -> None:
    pos = holder.get(key)
    if isinstance(pos, list) and pos and isinstance(pos[0], (int, float)):
        pos[0] = pos[0] + dx
    elif isinstance(pos, dict) and isinstance(pos.get("0"), (int, float)):
        pos["0"] = pos["0"] + dx


def _extent(part: dict) -> tuple[float, float] | None:
    """Leftmost and rightmost x of a part's nodes, groups and reroutes."""
    spans = []
    for node in part.get("nodes") or []:
        x = _x(node.get("pos"))
        if x is not None:
            width = _x(node.get("size"))
            spans.append((x, x + (width or 0)))
    for group in part.get("groups") or []:
        box = group.get("bounding") if isinstance(group, dict) else None
        if isinstance(box, list) and len(box) >= 3 \
                and all(isinstance(v, (int, float)) for v in box[:3]):
            spans.append((box[0], box[0] + box[2]))
    for reroute in (part.get("extra") or {}).get("reroutes") or []:
        x = _x(reroute.get("pos")) if isinstance(reroute, dict) else None
        if x is not None:
            spans.append((x, x))
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _normalise_ui(part: dict) -> None:
    """Links as ``[id, origin, slot, target, slot, type]``; a version-1 workflow's ``state``,
    top-level reroutes and link parents moved where a version-0.4 workflow keeps them."""
    extra = part.setdefault("extra", {})
    if not isinstance(extra, dict):
        part["extra"] = extra = {}
    links = []
    for raw in part.get("links") or []:
        link = parse_link(raw)
        if link is None:
            continue
        if isinstance(raw, dict) and raw.get("parentId") is not None:
            extra.setdefault("linkExtensions", []).append({"id": link.id,
                                                           "parentId": raw["parentId"]})
        links.append(link.as_list())
    part["links"] = links
    if isinstance(part.get("reroutes"), list):
        extra.setdefault("reroutes", []).extend(part.pop("reroutes"))
    state = part.pop("state", None)
    if isinstance(state, dict):
        part.setdefault("last_node_id", state.get("lastNodeId", 0))
        part.setdefault("last_link_id", state.get("lastLinkId", 0))
    for node in part.get("nodes") or []:
        if not isinstance(node, dict):
            raise WorkflowError(f"a workflow node is a {type(node).__name__}, not an object")


def _subgraph_definitions(workflow: dict) -> list[dict]:
    return [d for d in ((workflow.get("definitions") or {}).get("subgraphs") or [])
            if isinstance(d, dict)]


def _rename_types(nodes: Iterable[dict], renames: Mapping[Any, str]) -> None:
    for node in nodes:
        if isinstance(node, dict) and node.get("type") in renames:
            node["type"] = renames[node["type"]]


class _UIStitcher:
    def __init__(self, parts: list[dict], labels: list[str]):
        self.parts, self.labels = parts, labels
        self.out: dict = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [],
                          "groups": [], "config": {}, "extra": {}, "version": 0.4}
        self.definitions: dict[Any, dict] = {}  # by id as saved (a uuid string, unchecked)
        self.max_node = self.max_link = self.max_group = self.max_reroute = 0
        self.right_edge: float | None = None
        # per part: (role, original id, new id, unique_id)
        self.ports: list[list[tuple[str, Any, Any, str]]] = []

    # -- assembling the parts -------------------------------------------------------------

    def stitch(self, delete_inputs: bool, delete_outputs: bool) -> dict:
        for index, (part, label) in enumerate(zip(self.parts, self.labels, strict=True)):
            self.add_part(index, part, label)
        graph = UIGraph(self.out)
        removed_nodes = self.join(graph, delete_inputs, delete_outputs)
        removed_links = set()
        for node_id in removed_nodes:
            removed_links |= self.remove_node(graph, graph.nodes[node_id])
        self.out["nodes"] = [n for n in self.out["nodes"] if str(n.get("id")) not in removed_nodes]
        self.out["links"] = [graph.links[i].as_list() for i in sorted(graph.links, key=_as_int)]
        self.drop_link_metadata(removed_links)
        self.out["last_node_id"] = max([self.max_node] + [_as_int(n.get("id"))
                                                          for n in self.out["nodes"]])
        self.out["last_link_id"] = max([self.max_link] + [_as_int(link[0]) for link in self.out["links"]])
        if self.definitions:
            self.out["definitions"] = {"subgraphs": list(self.definitions.values())}
        for key in ("reroutes", "linkExtensions"):
            if not self.out["extra"].get(key):
                self.out["extra"].pop(key, None)
        return self.out

    def add_part(self, index: int, part: dict, label: str) -> None:
        _normalise_ui(part)
        graph = UIGraph(part)
        ports = ui_ports(graph)
        check_single_writers((uid, node.get("id")) for role, node, uid in ports if role == "output")
        self.merge_definitions(part, label)
        noff, loff, goff, roff = (0, 0, 0, 0) if index == 0 else \
            (self.max_node, self.max_link, self.max_group, self.max_reroute)
        extent = _extent(part)
        dx = 0 if index == 0 or extent is None or self.right_edge is None \
            else self.right_edge + MARGIN - extent[0]
        self.ports.append([(role, node.get("id"), _shift(node.get("id"), noff), uid)
                           for role, node, uid in ports])
        for node in part.get("nodes") or []:
            node["id"] = _shift(node.get("id"), noff)
            for slot in node.get("inputs") or []:
                if isinstance(slot, dict) and slot.get("link") is not None:
                    slot["link"] = _shift(slot["link"], loff)
            for slot in node.get("outputs") or []:
                if isinstance(slot, dict) and slot.get("links"):
                    slot["links"] = [_shift(i, loff) for i in slot["links"]]
            _move_x(node, "pos", dx)
        for link in part["links"]:
            link[0], link[1], link[3] = (_shift(link[0], loff), _shift(link[1], noff),
                                         _shift(link[3], noff))
        for group in part.get("groups") or []:
            if isinstance(group, dict):
                if "id" in group:
                    group["id"] = _shift(group["id"], goff)
                _move_x(group, "bounding", dx)
                _move_x(group, "pos", dx)
        extra = part.get("extra") or {}
        for reroute in extra.get("reroutes") or []:
            if isinstance(reroute, dict):
                reroute["id"] = _shift(reroute.get("id"), roff)
                if reroute.get("parentId") is not None:
                    reroute["parentId"] = _shift(reroute["parentId"], roff)
                reroute["linkIds"] = [_shift(i, loff) for i in reroute.get("linkIds") or []]
                _move_x(reroute, "pos", dx)
        for ext in extra.get("linkExtensions") or []:
            if isinstance(ext, dict):
                ext["id"] = _shift(ext.get("id"), loff)
                if ext.get("parentId") is not None:
                    ext["parentId"] = _shift(ext["parentId"], roff)

        self.out["nodes"].extend(part.get("nodes") or [])
        self.out["links"].extend(part["links"])
        self.out["groups"].extend(g for g in part.get("groups") or [] if isinstance(g, dict))
        self.merge_extra(extra, label)
        if index == 0 and isinstance(part.get("config"), dict):
            self.out["config"] = part["config"]
        for key, value in part.items():  # other top-level data: first one seen
            if key not in self.out and key not in ("id", "revision", "definitions", "state",
                                                   "floatingLinks"):
                self.out[key] = value

        self.max_node = max([self.max_node, noff + _as_int(part.get("last_node_id"))]
                            + [_as_int(n.get("id")) for n in part.get("nodes") or []])
        self.max_link = max([self.max_link, loff + _as_int(part.get("last_link_id"))]
                            + [_as_int(link[0]) for link in part["links"]])
        self.max_group = max([self.max_group] + [_as_int(g.get("id")) for g in
                                                 part.get("groups") or [] if isinstance(g, dict)])
        self.max_reroute = max([self.max_reroute] + [
            _as_int(r.get("id")) for r in extra.get("reroutes") or [] if isinstance(r, dict)])
        if extent is not None:
            right = extent[1] + dx
            self.right_edge = right if self.right_edge is None else max(self.right_edge, right)

    def merge_definitions(self, part: dict, label: str) -> None:
        """Identical subgraph definitions become one; a definition whose id is taken by a
        different one gets a new id (and the part's instances follow)."""
        definitions = _subgraph_definitions(part)
        for _ in range(len(definitions) + 2):  # each round settles one more level of nesting
            renames: dict[Any, str] = {}  # saved id -> new id
            for definition in definitions:
                sg_id = definition.get("id")
                existing = self.definitions.get(sg_id)
                if existing is not None and _canonical(existing) != _canonical(definition):
                    renames[sg_id] = str(uuid.uuid5(_NAMESPACE, _canonical(definition)))
            if not renames:
                break
            for definition in definitions:
                if definition.get("id") in renames:
                    definition["id"] = renames[definition["id"]]
                _rename_types(definition.get("nodes") or [], renames)
            _rename_types(part.get("nodes") or [], renames)
        else:
            raise WorkflowError(f"the subgraph definitions of {label} refer to each other in "
                                "a cycle")
        for definition in definitions:
            self.definitions.setdefault(definition.get("id"), definition)

    def merge_extra(self, extra: dict, label: str) -> None:
        out = self.out["extra"]
        for key, value in extra.items():
            if key in ("reroutes", "linkExtensions") and isinstance(value, list):
                out.setdefault(key, []).extend(value)
            elif key == "groupNodes" and isinstance(value, dict):
                merged = out.setdefault(key, {})
                for name, group_node in value.items():
                    if name in merged and _canonical(merged[name]) != _canonical(group_node):
                        raise WorkflowError(f"{label} defines group node {name!r} differently "
                                            "from an earlier workflow: rename one of them")
                    merged.setdefault(name, group_node)
            elif key not in out:
                out[key] = value

    # -- joining ports --------------------------------------------------------------------

    def join(self, graph: UIGraph, delete_inputs: bool, delete_outputs: bool) -> set[str]:
        """Rewire every joined input port's consumers; the ids of the nodes to remove."""
        writers: dict[str, _Writer] = {}
        joined_in, joined_out, superseded = set(), set(), set()
        for ports, label in zip(self.ports, self.labels, strict=True):  # one per part
            for role, original, new_id, uid in ports:
                writer = writers.get(uid)
                if role != "input" or writer is None:
                    continue
                port, source = graph.node(new_id), graph.node(writer.node_id)
                # both were added by add_part, and nothing is removed before the joins are made
                assert port is not None and source is not None, (new_id, writer.node_id)
                out_desc = _describe("output", uid, writer.original_id, writer.node_id,
                                     writer.label)
                in_desc = _describe("input", uid, original, new_id, label)
                link = graph.in_link(source, "value")
                if link is None:
                    raise _no_source(uid, out_desc, in_desc)
                out_type = output_port_type(graph, source)
                _check_join(uid, out_desc, out_type, in_desc, input_port_type(graph, port))
                self.rewire(graph, port, link, out_type)
                joined_in.add(str(new_id))
                joined_out.add(str(writer.node_id))
            for role, original, new_id, uid in ports:
                if role == "output":
                    if uid in writers:
                        superseded.add(str(writers[uid].node_id))
                    writers[uid] = _Writer(new_id, original, label)
        return superseded | (joined_in if delete_inputs else set()) \
            | (joined_out if delete_outputs else set())

    @staticmethod
    def rewire(graph: UIGraph, port: dict, source: Link, kind: str) -> None:
        """The links leaving ``port`` leave ``source``'s origin slot instead."""
        origin_id, origin_slot = source.origin_id, source.origin_slot
        origin = graph.node(origin_id)
        outputs = (origin or {}).get("outputs") or []
        if not (isinstance(origin_slot, int) and 0 <= origin_slot < len(outputs)
                and isinstance(outputs[origin_slot], dict)):
            raise WorkflowError(f"link {source.id} comes from output {origin_slot} of node "
                                f"{origin_id}, which has no such output")
        slot = outputs[origin_slot]
        slot["links"] = list(slot.get("links") or [])
        for link_id in UIGraph.out_links(port, 0):
            link = graph.links.get(link_id)
            if link is None:
                continue
            link.origin_id, link.origin_slot = origin_id, origin_slot
            if not concrete(link.type) and concrete(kind):
                link.type = kind
            if link_id not in slot["links"]:
                slot["links"].append(link_id)
        if port.get("outputs"):
            port["outputs"][0]["links"] = []

    @staticmethod
    def remove_node(graph: UIGraph, node: dict) -> set:
        """Remove a node's links from both ends; the ids of the links removed."""
        removed = set()
        for slot in node.get("inputs") or []:
            link = graph.links.pop(slot.get("link"), None) if isinstance(slot, dict) else None
            if link is None:
                continue
            removed.add(link.id)
            origin = graph.node(link.origin_id)
            outputs = (origin or {}).get("outputs") or []
            slot = link.origin_slot
            if isinstance(slot, int) and 0 <= slot < len(outputs):
                outputs[slot]["links"] = [i for i in outputs[slot].get("links") or []
                                          if i != link.id]
        for slot in node.get("outputs") or []:
            for link_id in (slot.get("links") or []) if isinstance(slot, dict) else []:
                link = graph.links.pop(link_id, None)
                if link is None:
                    continue
                removed.add(link_id)
                for target_slot in (graph.node(link.target_id) or {}).get("inputs") or []:
                    if isinstance(target_slot, dict) and target_slot.get("link") == link_id:
                        target_slot["link"] = None
        return removed

    def drop_link_metadata(self, removed: set) -> None:
        extra = self.out["extra"]
        if not removed:
            return
        kept = []
        for reroute in extra.get("reroutes") or []:
            if isinstance(reroute, dict) and reroute.get("linkIds"):
                reroute["linkIds"] = [i for i in reroute["linkIds"] if i not in removed]
                if not reroute["linkIds"]:
                    continue  # it only carried links that are gone
            kept.append(reroute)
        if "reroutes" in extra:
            extra["reroutes"] = kept
        if extra.get("linkExtensions"):
            extra["linkExtensions"] = [e for e in extra["linkExtensions"]
                                       if not (isinstance(e, dict) and e.get("id") in removed)]
