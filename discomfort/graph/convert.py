"""Editor (UI-format) workflow -> API prompt, as the ComfyUI frontend's ``graphToPrompt()`` does.

The steps follow the frontend, so that the same workflow gives the same prompt. Two editors
are matched (``editor=``): 1.32.9, the one ComfyUI 0.3.75 pins, and 1.58.1, today's. Where
1.58 differs (each checked against the real editor, tests/fixtures/conversion): ``_meta``
carries ``cnr_id``/``aux_id``/``ver``; its own default titles; a muted or bypassed root
subgraph instance sends none of its nodes; subgraph node ids that collide are renumbered;
legacy group nodes become subgraphs with fresh ids; no old-type renames; PreviewAny's
``preview`` is not sent; a dangling link drops the input; ``widgets_values`` saved as an
object are read by name; promoted text areas are not shared between instances. Both ignore
``widgets_values_named`` (1.58 reads it only with an experimental setting, off by default).
A value a subgraph instance gives an inner widget that does not fit it is refused. The steps:

1. load-time fix-ups of old workflows (renamed node types and values);
2. each node gets the widgets the editor would build from ``/object_info``, filled from its
   saved ``widgets_values`` by position;
3. PrimitiveNodes write their value into the widgets they feed;
4. subgraphs are flattened into nodes with ids ``"<outer>:<inner>"``;
5. every input is resolved to the node that really produces it, through Reroutes, bypassed
   nodes and subgraph boundaries;
6. virtual, muted and bypassed nodes are left out, and so are inputs that point at them.
"""

from __future__ import annotations

import copy
import datetime as _dt
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError, UnknownNodeTypesError, WorkflowError
from .discover import check_port_links
from .editor_titles import EDITOR_TITLES, EDITOR_TITLES_1_58
from .group_nodes import expand_group_nodes
from .load import is_api_format, is_ui_format
from .nodedefs import NodeDef, NodeDefs, WidgetSpec, migrate_widgets_values
from .text import apply_text_replacements, js_string, resolve_dynamic_prompt
from .workflow import BYPASS, MUTED, Link, UIGraph, parse_link, types_compatible

EDITORS = ("1.32", "1.58")
# Today's editor: what people who save workflows run (see ui_to_api).
DEFAULT_EDITOR = "1.58"
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
# Node types that exist only in the editor: never sent to the server.
VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
# Renamed node types the editor 1.32 patches when it loads a workflow (1.58 does not: to it
# they are unknown types).
RENAMED_TYPES = {
    "T2IAdapterLoader": "ControlNetLoader",
    "ConditioningAverage ": "ConditioningAverage",
    "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
    "Load3DAnimation": "Load3D",
    "Preview3DAnimation": "Preview3D",
}
# Nodes whose filename_prefix gets %date:..% / %Node.widget% replacements.
SAVE_TYPES = frozenset({
    "SaveImage", "SaveVideo", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB",
    "SaveAnimatedPNG", "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLatent",
})
_UNSET = object()  # a JavaScript `undefined`: the input is left out of the prompt
REPLACE_PROPERTY = "Run widget replace on values"
SR_PROPERTY = "Node name for S&R"


# --- the graph as the editor holds it -------------------------------------------------------

@dataclass
class Slot:
    name: Any                   # as saved or defined: a string in any valid workflow
    type: Any
    link: int | None = None
    widget: str | None = None


class Widget:
    """One widget. A text-area widget holds its value as text, and a subgraph instance that
    promotes one shares it with the inner widget (the editor keeps one DOM element)."""

    def __init__(self, name: Any, value: Any, sent: bool = True, dynamic_prompts: bool = False,
                 saved: bool = True, textarea: bool = False, shared: Widget | None = None,
                 spec: WidgetSpec | None = None):
        self.name, self.sent, self.saved, self.spec = name, sent, saved, spec
        self.dynamic_prompts, self.textarea, self.shared = dynamic_prompts, textarea, shared
        self._value: Any = None
        if shared is None:
            self.value = value

    @property
    def value(self) -> Any:
        return self.shared.value if self.shared is not None else self._value

    @value.setter
    def value(self, value: Any) -> None:
        if self.shared is not None:
            self.shared.value = value
        elif self.textarea:
            self._value = "" if value is None else js_string(value)
        else:
            self._value = value


@dataclass(eq=False)
class Node:
    graph: Graph
    data: dict
    id: str
    type: Any                                   # as saved: a class, editor or subgraph id
    kind: str                                   # comfy | primitive | reroute | note | subgraph
    mode: int = 0
    title: str = ""
    inputs: list[Slot] = field(default_factory=list)
    widgets: list[Widget] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)     # output slot types
    subgraph: Graph | None = None               # for subgraph instances: the definition

    def widget(self, name: Any) -> Widget | None:
        return next((w for w in self.widgets if w.name == name), None)

    def target_slot(self, link: Link) -> int:
        """The input a link feeds: the one holding its id (the editor re-indexes on load)."""
        for index, slot in enumerate(self.inputs):
            if slot.link == link.id and link.id:
                return index
        return link.target_slot if isinstance(link.target_slot, int) else -1

    def input_link(self, slot: int) -> Link | None:
        """The link into input ``slot`` (None when unconnected or not in the links table)."""
        link_id = self.inputs[slot].link if slot < len(self.inputs) else None
        return None if link_id is None else self.graph.links.get(link_id)


class Graph:
    """One graph level: the root workflow or a subgraph definition."""

    def __init__(self, data: dict, *, definition: dict | None = None, editor: str = DEFAULT_EDITOR):
        self.data = data
        self.definition = definition
        self.editor = editor
        # The editor 1.58 drops an input whose link id is not in the links table; 1.32 throws.
        self.drops_dangling_links = editor == "1.58"
        self.links: dict[int, Link] = {}
        for raw in data.get("links") or []:
            link = parse_link(raw)
            if link is not None:
                self.links[link.id] = link
        self.nodes: list[Node] = []
        self.by_id: dict[str, Node] = {}

    @property
    def input_slots(self) -> list[dict]:
        return (self.definition or {}).get("inputs") or []

    @property
    def output_slots(self) -> list[dict]:
        return (self.definition or {}).get("outputs") or []

    def add(self, node: Node) -> None:
        self.nodes.append(node)
        self.by_id[node.id] = node


# --- building the graph ---------------------------------------------------------------------

class _Builder:
    """Turns the workflow JSON into :class:`Graph` objects with the editor's widgets."""

    def __init__(self, workflow: dict, defs: NodeDefs, editor: str = DEFAULT_EDITOR):
        self.defs, self.editor = defs, editor
        # By id as saved (a uuid string, unchecked), as node types name them.
        self.definitions: dict[Any, dict] = {
            d.get("id"): d for d in ((workflow.get("definitions") or {}).get("subgraphs") or [])
            if isinstance(d, dict)}
        self.subgraphs: dict[Any, Graph] = {}
        for sg_id in self.definitions:
            self.subgraph(sg_id)
        self.root = self.graph(workflow)

    def subgraph(self, sg_id: Any) -> Graph:
        if sg_id not in self.subgraphs:
            definition = self.definitions[sg_id]
            self.subgraphs[sg_id] = Graph(definition, definition=definition, editor=self.editor)
            self.fill(self.subgraphs[sg_id])
        return self.subgraphs[sg_id]

    def graph(self, data: dict) -> Graph:
        graph = Graph(data, editor=self.editor)
        self.fill(graph)
        return graph

    def fill(self, graph: Graph) -> None:
        for raw in graph.data.get("nodes") or []:
            if not isinstance(raw, dict):
                raise WorkflowError(f"a workflow node is a {type(raw).__name__}, not an object")
            graph.add(self.node(graph, raw))

    def node(self, graph: Graph, raw: dict) -> Node:
        type_ = renames(self.editor).get(raw.get("type"), raw.get("type"))
        node = Node(graph, raw, str(raw.get("id")), type_, kind="comfy",
                    mode=raw.get("mode") or 0, properties=dict(raw.get("properties") or {}))
        if type_ in self.definitions:
            node.kind = "subgraph"
            node.subgraph = self.subgraph(type_)
            self.subgraph_instance(node)
        elif type_ in VIRTUAL_TYPES:
            node.kind = {"Reroute": "reroute", "PrimitiveNode": "primitive"}.get(type_, "note")
            node.inputs = [_slot(s) for s in raw.get("inputs") or []]
            values = raw.get("widgets_values")
            if node.kind == "primitive" and isinstance(values, list) and values:
                node.widgets = [Widget("value", values[0])]
        else:  # a server class: _check_node_types found it among /object_info's (string) keys
            assert isinstance(type_, str), type_
            self.comfy_node(node, self.defs.get(type_))
        saved_outputs = [o.get("type") if isinstance(o, dict) else None
                         for o in raw.get("outputs") or []]
        node.outputs = node.outputs + saved_outputs[len(node.outputs):]
        node.title = raw.get("title") or self.default_title(node)
        return node

    def default_title(self, node: Node) -> str:
        if node.kind == "comfy":
            titles = EDITOR_TITLES_1_58 if self.editor == "1.58" else EDITOR_TITLES
            return titles.get(node.type) or self.defs.get(node.type).display_name
        if node.kind == "subgraph" and node.subgraph is not None:  # set with the kind
            return (node.subgraph.definition or {}).get("name") or node.type
        return node.type

    def comfy_node(self, node: Node, node_def: NodeDef) -> None:
        """Inputs in the definition's order (then extra saved ones); widgets from the values."""
        saved = {s.get("name"): s for s in node.data.get("inputs") or [] if isinstance(s, dict)}
        defined = {slot.name for slot in node_def.slots}
        node.inputs = [Slot(s.name, s.type, (saved.get(s.name) or {}).get("link"), s.widget)
                       for s in node_def.slots]
        node.inputs += [_slot(s) for name, s in saved.items() if name not in defined]
        node.widgets = [Widget(w.name, w.default, w.sent, w.dynamic_prompts, w.saved, w.textarea,
                               spec=w) for w in node_def.widgets]
        node.outputs = list(node_def.outputs)
        if node.type not in SAVE_TYPES:  # the editor names nodes for %Node.widget% by type
            node.properties.setdefault(SR_PROPERTY, node.type)
        values = node.data.get("widgets_values")
        if isinstance(values, list):
            saved_widgets = [w for w in node.widgets if w.saved]
            for widget, value in zip(saved_widgets, migrate_widgets_values(node_def, values),
                                     strict=False):
                widget.value = value
        elif isinstance(values, dict) and self.editor == "1.58":
            # Values saved by name (an object, not a list): the editor 1.58 restores them by
            # widget name; 1.32 ignores them and keeps the defaults.
            for widget in node.widgets:
                if widget.saved and widget.name in values:
                    widget.value = values[widget.name]

    def subgraph_instance(self, node: Node) -> None:
        """A subgraph node's inputs, and the widgets it promotes from inner nodes.

        Like a server node, its inputs follow the definition (the subgraph's inputs), each
        taking its link from the saved input of the same name.
        """
        graph = node.subgraph
        assert graph is not None, node.id  # set with the kind "subgraph"
        saved = {s.get("name"): s for s in node.data.get("inputs") or [] if isinstance(s, dict)}
        defined = [s.get("name") for s in graph.input_slots]
        node.inputs = [Slot(s.get("name"), s.get("type"), (saved.get(s.get("name")) or {})
                            .get("link")) for s in graph.input_slots]
        node.inputs += [_slot(s) for name, s in saved.items() if name not in defined]
        for slot in node.inputs:
            sg_input = next((s for s in graph.input_slots if s.get("name") == slot.name), None)
            if sg_input is None:
                continue
            widget, claimed = self.promoted_widget(graph, sg_input)
            if widget is not None:
                node.widgets.append(Widget(sg_input.get("name"), widget.value, widget.sent,
                                           widget.dynamic_prompts, widget.saved, widget.textarea,
                                           shared=widget if widget.textarea
                                           and self.editor == "1.32" else None,
                                           spec=widget.spec))
                slot.widget = sg_input.get("name")
            elif claimed and self.editor == "1.32":
                # The inner input is a widget this server's node lacks (a newer node), but the
                # link's slot number lands on a widget of the node as this server defines it:
                # the editor 1.32 then gives the input a place among the instance's values
                # (whose value goes nowhere); 1.58 does not.
                node.widgets.append(Widget(sg_input.get("name"), None, sent=False))
        values = node.data.get("widgets_values")
        if isinstance(values, list):
            for widget, value in zip(node.widgets, values, strict=False):
                widget.value = value
            self.apply_proxy_widget_values(node, values)

    def promoted_widget(self, graph: Graph, sg_input: dict) -> tuple[Widget | None, bool]:
        """The first inner widget this subgraph input feeds, which the instance shows; and,
        when there is none, whether a link's slot number names a widget input of the node as
        this server defines it (what the editor 1.32 looks at)."""
        claimed = False
        for link_id in sg_input.get("linkIds") or []:
            link = graph.links.get(link_id)
            target = graph.by_id.get(str(link.target_id)) if link is not None else None
            if link is None or target is None:
                continue
            index = target.target_slot(link)
            if not 0 <= index < len(target.inputs):
                continue
            slot = target.inputs[index]
            widget = target.widget(slot.widget) if slot.widget else None
            if widget is not None:
                return widget, True
            index = link.target_slot
            if target.kind == "comfy" and isinstance(index, int) and \
                    0 <= index < len(self.defs.get(target.type).slots):
                claimed = claimed or self.defs.get(target.type).slots[index].widget is not None
        return None, claimed

    @staticmethod
    def apply_proxy_widget_values(node: Node, values: list) -> None:
        """Values saved under ``properties.proxyWidgets`` entries ``["-1", name]`` win."""
        proxies = node.properties.get("proxyWidgets")
        if not isinstance(proxies, list):
            return
        for index, value in enumerate(values):
            entry = proxies[index] if index < len(proxies) else None
            if not (isinstance(entry, list) and len(entry) == 2 and str(entry[0]) == "-1"):
                continue
            widget = node.widget(entry[1])
            if value is not None and widget is not None:
                widget.value = value


def renumber_colliding_inner_ids(workflow: dict) -> dict:
    """A copy in which subgraph-definition nodes whose id a root node (or an earlier definition
    node) already has get fresh ids, as the editor 1.58 does on load; execution ids
    (``"<instance>:<inner>"``) and the links in the prompt then name the new ids.

    Fresh ids count up from the workflow's ``last_node_id`` (or ``state.lastNodeId``), skipping
    ids in use; a definition's links and promoted-widget references follow the new ids.
    """
    definitions = [d for d in (workflow.get("definitions") or {}).get("subgraphs") or []
                   if isinstance(d, dict)]
    if not definitions:
        return workflow
    roots = [n for n in workflow.get("nodes") or [] if isinstance(n, dict)]
    reserved = {str(n.get("id")) for n in roots}
    numeric = {int(i) for i in reserved if _int_id(i) is not None}
    last = _last_node_id(workflow)
    remaps: dict[Any, dict[str, int]] = {}
    for definition in definitions:
        remap: dict[str, int] = {}
        for node in definition.get("nodes") or []:
            if not isinstance(node, dict):
                continue
            key = str(node.get("id"))
            if key in reserved:
                last = _next_free_id(last, numeric)
                remap[key] = last
                numeric.add(last)
                reserved.add(str(last))
            else:
                reserved.add(key)
                number = _int_id(key)
                if number is not None:
                    numeric.add(number)
                    last = max(last, number) if isinstance(last, int) else number
        if remap:
            remaps[definition.get("id")] = remap
    if not remaps:
        return workflow
    workflow = copy.deepcopy(workflow)
    definitions = [d for d in workflow["definitions"]["subgraphs"] if isinstance(d, dict)]
    for definition in definitions:
        new_ids = remaps.get(definition.get("id"))
        if not new_ids:
            continue
        for node in definition.get("nodes") or []:  # each end is mapped once, old -> new
            if isinstance(node, dict) and str(node.get("id")) in new_ids:
                node["id"] = new_ids[str(node.get("id"))]
        for link in (definition.get("links") or []) + (definition.get("floatingLinks") or []):
            _patch_link_ends(link, new_ids)
        for widget in definition.get("widgets") or []:
            if isinstance(widget, dict) and str(widget.get("id")) in new_ids:
                widget["id"] = new_ids[str(widget.get("id"))]
    hosts = list(workflow.get("nodes") or []) + [n for d in definitions for n in d.get("nodes") or []]
    for node in hosts:
        new_ids = remaps.get(node.get("type")) if isinstance(node, dict) else None
        if not new_ids:
            continue
        proxies = (node.get("properties") or {}).get("proxyWidgets")
        for entry in proxies if isinstance(proxies, list) else []:
            if isinstance(entry, list) and entry and str(entry[0]) in new_ids:
                entry[0] = str(new_ids[str(entry[0])])
    return workflow


def _int_id(value: Any) -> int | None:
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() and str(int(text)) == text else None


def _last_node_id(workflow: dict) -> Any:
    """The id counter the editor starts from: ``state.lastNodeId`` (newer files), then
    ``last_node_id`` when present (it is assigned as it is, even below the largest id)."""
    last: Any = 0
    state = workflow.get("state")
    if workflow.get("version") != 0.4 and isinstance(state, dict):
        value = state.get("lastNodeId")
        if isinstance(value, int) and not isinstance(value, bool) and value > last:
            last = value
    if "last_node_id" in workflow:
        last = workflow["last_node_id"]
    return last


def _next_free_id(last: Any, used: set[int]) -> int:
    """``last + 1`` unless taken, else the first free id above ``last`` (from 1 if no count)."""
    start = last + 1 if isinstance(last, int) and not isinstance(last, bool) and last >= 0 else 1
    while start in used:
        start += 1
    return start


def _patch_link_ends(link: Any, remap: dict[str, int]) -> None:
    """A definition link (a dict, or the list ``[id, origin, slot, target, slot, type]``)."""
    if isinstance(link, dict):
        for key in ("origin_id", "target_id"):
            if str(link.get(key)) in remap:
                link[key] = remap[str(link.get(key))]
    elif isinstance(link, list) and len(link) >= 5:
        for index in (1, 3):
            if str(link[index]) in remap:
                link[index] = remap[str(link[index])]


def _slot(raw: dict) -> Slot:
    widget = raw.get("widget")
    return Slot(raw.get("name"), raw.get("type"), raw.get("link"),
                widget.get("name") if isinstance(widget, dict) else None)


# --- checks ---------------------------------------------------------------------------------

def renames(editor: str) -> dict:
    """The old node types the editor loads under their new names."""
    return RENAMED_TYPES if editor == "1.32" else {}


def _check_node_types(workflow: dict, defs: NodeDefs, editor: str = DEFAULT_EDITOR) -> None:
    """One error listing every node type that is neither a server class nor an editor one."""
    subgraph_ids = {d.get("id") for d in ((workflow.get("definitions") or {}).get("subgraphs")
                                          or []) if isinstance(d, dict)}
    missing = set()
    node_lists = [workflow.get("nodes") or []]
    node_lists += [d.get("nodes") or [] for d in ((workflow.get("definitions") or {})
                                                   .get("subgraphs") or []) if isinstance(d, dict)]
    for nodes in node_lists:
        for raw in nodes:
            if not isinstance(raw, dict):
                raise WorkflowError("a workflow node is not an object")
            type_ = renames(editor).get(raw.get("type"), raw.get("type"))
            if type_ not in defs and type_ not in VIRTUAL_TYPES and type_ not in subgraph_ids:
                missing.add(str(type_))
    if missing:
        raise UnknownNodeTypesError(sorted(missing))


# --- resolving links (the frontend's ExecutableNodeDTO) -------------------------------------

@dataclass
class _Resolved:
    origin_id: str = ""
    origin_slot: int = -1
    widget_value: Any = _UNSET
    is_widget: bool = False
    instance: Any = None          # the subgraph instance (a _Dto) whose widget gave the value


class _Dto:
    """A node at one place in the flattened graph: its execution id is the subgraph path + id."""

    def __init__(self, node: Node, path: tuple[str, ...], dtos: dict[str, _Dto],
                 instance: Node | None = None):
        self.node, self.path, self.dtos, self.instance = node, path, dtos, instance
        self.id = ":".join(path + (node.id,))

    def _where(self, slot: int) -> str:
        return f"input {slot} of node {self.id} ({self.node.type})"

    def resolve_input(self, slot: int, visited: set, type_: Any = None) -> _Resolved | None:
        key = (id(self.instance), self.node.id, "I", slot)
        if key in visited:
            raise WorkflowError(f"circular link while resolving {self._where(slot)}")
        visited.add(key)
        if slot >= len(self.node.inputs):
            raise WorkflowError(f"no {self._where(slot)}")
        slot_info = self.node.inputs[slot]
        if slot_info.link is None:
            return None
        link = self.node.graph.links.get(slot_info.link)
        if link is None and self.node.graph.drops_dangling_links:
            return None
        if link is None:
            raise WorkflowError(f"link {slot_info.link} into {self._where(slot)} "
                                "is not in the workflow's links")
        if self.instance is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            return self._resolve_from_instance(self.instance, link, visited)
        origin = self.node.graph.by_id.get(str(link.origin_id))
        if origin is None:
            raise WorkflowError(f"link {link.id} into {self._where(slot)} comes from node "
                                f"{link.origin_id}, which is not in the workflow")
        dto = self.dtos[":".join(self.path + (origin.id,))]
        return dto.resolve_output(link.origin_slot, type_ if type_ is not None else slot_info.type,
                                  visited)

    def _resolve_from_instance(self, instance: Node, link: Link, visited: set) -> _Resolved | None:
        """A link from a subgraph's input: follow it out to what feeds ``instance``."""
        if link.origin_slot >= len(instance.inputs):
            raise WorkflowError(f"subgraph instance {instance.id} has no input {link.origin_slot}")
        outer_slot = instance.inputs[link.origin_slot]
        if outer_slot.link is None:
            widget = instance.widget(outer_slot.widget) if outer_slot.widget else None
            if widget is None:
                return None
            return _Resolved(self.id, -1, widget.value, is_widget=True,
                             instance=self.dtos.get(":".join(self.path)))
        outer = instance.graph.links.get(outer_slot.link)
        if outer is None:
            raise WorkflowError(f"link {outer_slot.link} into subgraph instance {instance.id} "
                                "is not in the workflow's links")
        return self.dtos[":".join(self.path)].resolve_input(instance.target_slot(outer), visited)

    def resolve_output(self, slot: int, type_: Any, visited: set) -> _Resolved | None:
        key = (id(self.instance), self.node.id, "O", slot)
        if key in visited:
            raise WorkflowError(f"circular link while resolving output {slot} of node {self.id}")
        visited.add(key)
        node = self.node
        if node.mode == MUTED and node.graph.editor == "1.58":
            return None  # 1.58: a muted node (a muted subgraph too) gives nothing
        if node.mode == BYPASS:
            index = self._bypass_slot(slot, type_)
            return None if index == -1 else self.resolve_input(index, visited)
        if node.kind == "subgraph":
            return self._resolve_subgraph_output(slot, type_, visited)
        if node.kind != "comfy":
            link = node.input_link(slot)
            if link is None:
                return None
            target = node.graph.by_id.get(str(link.target_id))
            if target is None:
                raise WorkflowError(f"virtual node {self.id} has a link to a missing node")
            dto = self.dtos[":".join(self.path + (target.id,))]
            return dto.resolve_input(target.target_slot(link), visited, type_)
        return _Resolved(self.id, slot)

    def _bypass_slot(self, slot: int, type_: Any) -> int:
        """The input a bypassed node passes through to output ``slot`` (-1: none)."""
        inputs = self.node.inputs
        if type_ in ("*", ""):
            return slot if len(inputs) > slot else 0
        output_type = self.node.outputs[slot] if slot < len(self.node.outputs) else None
        if slot < len(inputs) and types_compatible(inputs[slot].type, output_type) \
                and types_compatible(inputs[slot].type, type_):
            return slot
        for i, slot_info in enumerate(inputs):
            if slot_info.type == type_:
                return i
        for i, slot_info in enumerate(inputs):
            if types_compatible(slot_info.type, output_type) and types_compatible(slot_info.type, type_):
                return i
        return -1

    def _resolve_subgraph_output(self, slot: int, type_: Any, visited: set) -> _Resolved | None:
        graph = self.node.subgraph
        assert graph is not None, self.id  # set with the kind "subgraph"
        outputs = graph.output_slots
        if slot >= len(outputs):
            raise WorkflowError(f"subgraph instance {self.id} has no output {slot}")
        link = next((graph.links[i] for i in outputs[slot].get("linkIds") or []
                     if i in graph.links), None)
        if link is None:
            return None
        inner = graph.by_id.get(str(link.origin_id))
        if inner is None:
            raise WorkflowError(f"output {slot} of subgraph instance {self.id} comes from "
                                f"node {link.origin_id}, which is not in the subgraph")
        dto = self.dtos[":".join(self.path + (self.node.id, inner.id))]
        return dto.resolve_output(link.origin_slot, type_, visited)


def _flatten(root: Graph, editor: str = DEFAULT_EDITOR) -> dict[str, _Dto]:
    """Every node at its execution id, subgraph instances expanded (the instance DTO too).

    The editor 1.58 does not expand a muted or bypassed subgraph instance of the root graph:
    its inner nodes are not sent (1.32 sent them). Nested instances are expanded by both."""
    dtos: dict[str, _Dto] = {}

    def expand(instance: Node, path: tuple[str, ...], parent: Node | None, seen: tuple) -> None:
        graph = instance.subgraph
        # Both are set with the kind "subgraph" (from the definition the instance names).
        assert graph is not None and graph.definition is not None, instance.id
        if graph.definition.get("id") in seen:
            raise WorkflowError(f"subgraph {instance.type} contains itself")
        dto = _Dto(instance, path, dtos, parent)
        dtos[dto.id] = dto
        inner_path = path + (instance.id,)
        for node in graph.nodes:
            if node.kind == "subgraph":
                expand(node, inner_path, instance, seen + (instance.type,))
            else:
                inner = _Dto(node, inner_path, dtos, instance)
                dtos[inner.id] = inner

    for node in root.nodes:
        if node.kind == "subgraph" and editor == "1.58" and node.mode in (MUTED, BYPASS):
            dtos[node.id] = _Dto(node, (), dtos)
        elif node.kind == "subgraph":
            expand(node, (), None, ())
        else:
            dtos[node.id] = _Dto(node, (), dtos)
    return dtos


# --- the conversion -------------------------------------------------------------------------

class _Converter:
    def __init__(self, workflow: dict, object_info: dict, rng: random.Random,
                 now: _dt.datetime, choices: list | None, editor: str = DEFAULT_EDITOR):
        self.editor = editor
        self.defs = NodeDefs(object_info, editor)
        workflow = expand_group_nodes(workflow, self.saved_widget_count, editor)
        _check_node_types(workflow, self.defs, editor)
        if editor == "1.58":
            workflow = renumber_colliding_inner_ids(workflow)
        self.builder = _Builder(workflow, self.defs, editor)
        self.root = self.builder.root
        self.rng, self.now, self.choices = rng, now, choices

    def saved_widget_count(self, node_type: str) -> int:
        if node_type not in self.defs:
            return 0
        return sum(1 for w in self.defs.get(node_type).widgets if w.saved)

    def all_nodes(self, graph: Graph | None = None) -> list[Node]:
        """Every node the editor can see, inner nodes before their subgraph instance."""
        out: list[Node] = []
        for node in (graph or self.root).nodes:
            if node.kind == "subgraph":
                out += self.all_nodes(node.subgraph)
            out.append(node)
        return out

    def find_widget(self, node_name: str, widget_name: str) -> tuple[bool, Any]:
        """``%Node.widget%``: by the S&R name property first, then by title."""
        nodes = self.all_nodes()
        matches = [n for n in nodes if n.properties.get(SR_PROPERTY) == node_name] or \
                  [n for n in nodes if n.title == node_name]
        if not matches:
            return False, None
        widget = matches[0].widget(widget_name)
        return (True, widget.value) if widget is not None else (False, None)

    def fix_old_values(self) -> None:
        """Load-time patches of values the backend renamed (root graph only, as the editor)."""
        for node in self.root.nodes:
            if node.type in ("KSampler", "KSamplerAdvanced"):
                widget = node.widget("sampler_name")
                if widget and isinstance(widget.value, str) and widget.value.startswith("sample_"):
                    widget.value = widget.value[7:]

    def apply_primitives(self) -> None:
        """Each connected PrimitiveNode overwrites the widget of every input it feeds."""
        for graph in [self.root, *self.builder.subgraphs.values()]:
            for node in graph.nodes:
                if node.kind == "primitive" and node.widgets:
                    self.apply_primitive(node)

    def apply_primitive(self, node: Node) -> None:
        outputs = node.data.get("outputs") or []
        link_ids = (outputs[0].get("links") or []) if outputs and isinstance(outputs[0], dict) \
            else []
        if not link_ids:
            return
        value = node.widgets[0].value
        if value and node.properties.get(REPLACE_PROPERTY):
            value = apply_text_replacements(value, self.find_widget, self.now)
        for link_id in link_ids:
            link = node.graph.links.get(link_id)
            target = node.graph.by_id.get(str(link.target_id)) if link is not None else None
            if link is None or target is None:
                continue
            index = target.target_slot(link)
            if not 0 <= index < len(target.inputs):
                continue
            widget = target.widget(target.inputs[index].widget)
            if widget is not None:
                widget.value = value

    def widget_value(self, dto: _Dto, widget: Widget) -> Any:
        """A widget's value as the editor serialises it for the prompt."""
        value = widget.value
        if dto.node.type in SAVE_TYPES and widget.name == "filename_prefix":
            return apply_text_replacements(value, self.find_widget, self.now) \
                if isinstance(value, str) else value
        if widget.dynamic_prompts and isinstance(value, str):
            resolved = resolve_dynamic_prompt(value, self.rng)
            if self.choices is not None and resolved != value:
                self.choices.append({"node": dto.id, "input": widget.name,
                                     "text": value, "value": resolved})
            return resolved
        return value

    def convert(self) -> dict:
        self.fix_old_values()
        self.apply_primitives()
        dtos = _flatten(self.root, self.editor)
        output: dict[str, dict] = {}
        for dto in list(dtos.values()):
            node = dto.node
            if node.kind != "comfy" or node.mode in (MUTED, BYPASS):
                continue
            output[dto.id] = {"inputs": self.node_inputs(dto), "class_type": node.type,
                              "_meta": self.meta(node)}
        for entry in output.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del entry["inputs"][name]
        return output

    def meta(self, node: Node) -> dict:
        """The title; the editor 1.58 adds the node pack and version the node was saved with
        (``properties.cnr_id``, ``aux_id``, ``ver``), when they are non-empty strings."""
        meta = {"title": node.title}
        if self.editor == "1.58":
            for key in ("cnr_id", "aux_id", "ver"):
                value = node.properties.get(key)
                if isinstance(value, str) and value:
                    meta[key] = value
        return meta

    def node_inputs(self, dto: _Dto) -> dict:
        inputs: dict[str, Any] = {}
        for widget in dto.node.widgets:
            if not widget.name or not widget.sent:
                continue
            inputs[widget.name] = _wrap(self.widget_value(dto, widget))
        for slot, slot_info in enumerate(dto.node.inputs):
            resolved = dto.resolve_input(slot, set())
            if resolved is None:
                continue
            if resolved.is_widget:
                if resolved.instance is not None:
                    _check_promoted_value(dto, slot_info, resolved)
                inputs[slot_info.name] = _wrap(resolved.widget_value)
            else:
                inputs[slot_info.name] = [str(resolved.origin_id), int(resolved.origin_slot)]
        return {k: v for k, v in inputs.items() if v is not _UNSET}


def widget_value_problem(spec: WidgetSpec | None, value: Any) -> str | None:
    """What a value should have been for this widget, or None when it fits (or is unchecked).

    INT and FLOAT: a number within min/max; BOOLEAN: true/false; COMBO: text, or one of the
    options when they are numbers. A text that is not among the options is left to the server
    to report: the options are often file lists, and the files may be on the server that runs
    the prompt but not in the ``/object_info`` converted against.
    """
    if spec is None or spec.kind is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind in ("INT", "FLOAT"):
        whole = spec.kind == "INT"
        kind = "a whole number" if whole else "a number"
        bounds = [f">= {spec.minimum:g}"] if spec.minimum is not None else []
        bounds += [f"<= {spec.maximum:g}"] if spec.maximum is not None else []
        expected = f"{spec.kind}: {kind}" + (f" {' and '.join(bounds)}" if bounds else "")
        if not number or (whole and float(value) != int(value)):
            return expected
        if (spec.minimum is not None and value < spec.minimum) or \
                (spec.maximum is not None and value > spec.maximum):
            return expected
        return None
    if spec.kind == "BOOLEAN":
        return None if isinstance(value, bool) else "BOOLEAN: true or false"
    if spec.kind == "COMBO":
        choices = list(spec.choices or ())
        numeric = bool(choices) and all(isinstance(c, (int, float)) for c in choices)
        shown = ", ".join(repr(c) for c in choices[:8]) + (", ..." if len(choices) > 8 else "")
        if numeric:
            return None if number and value in choices else f"COMBO: one of {shown}"
        if not isinstance(value, str):
            return "COMBO: text" + (f", one of {shown}" if choices else "")
    return None


def _check_promoted_value(dto: _Dto, slot: Slot, resolved: _Resolved) -> None:
    """A value a subgraph instance hands to an inner widget must fit that widget: a value that
    does not is the mark of widgets_values read against the wrong layout (a workflow saved by
    a newer editor or with newer nodes), which the editor itself would pass on shifted."""
    widget = dto.node.widget(slot.widget) if slot.widget else None
    problem = widget_value_problem(widget.spec if widget else None, resolved.widget_value)
    if problem is None:
        return
    host = resolved.instance.node
    values = host.data.get("widgets_values")
    raise WorkflowError(
        f"node {dto.id} ({dto.node.type}, title {dto.node.title!r}): widget "
        f"{slot.widget!r} gets {resolved.widget_value!r} from subgraph instance "
        f"{resolved.instance.id} (title {host.title!r}), but it takes {problem}. The "
        f"instance's widgets_values {values!r} do not line up with the inputs it promotes "
        "(saved by a newer editor, or by nodes newer than this server's?): set the subgraph's "
        "values in the editor and save the workflow again, or fix that node's widgets_values")


def _wrap(value: Any) -> Any:
    """Lists mean links in a prompt: a list value travels as ``{"__value__": [...]}``."""
    return {"__value__": value} if isinstance(value, list) else value


# --- public ---------------------------------------------------------------------------------

def ui_to_api(workflow: dict, object_info: dict, *, seed: int | None = None,
              rng: random.Random | None = None, choices: list | None = None,
              now: _dt.datetime | None = None, editor: str = DEFAULT_EDITOR) -> dict:
    """Convert an editor workflow to an API prompt, as the editor's ``graphToPrompt()`` would.

    ``object_info`` is the server's ``GET /object_info``. An API-format prompt is returned
    unchanged. Dynamic prompts (``{a|b}`` in CLIPTextEncode-like text) are drawn from ``rng``,
    else from ``random.Random(seed)``; pass a list as ``choices`` to get one record per resolved
    text (``node``, ``input``, ``text``, ``value``). ``now`` (local time) fills ``%date:..%``.

    ``editor`` chooses whose ``graphToPrompt()`` to match: ``"1.58"`` (default: today's editor,
    which saves the workflows people bring, and which leaves a bypassed subgraph's nodes out)
    or ``"1.32"`` (the editor ComfyUI 0.3.75 serves). Both prompts run the same on the server
    except for a bypassed or muted subgraph, whose inner nodes only 1.32 sends.

    Raises ``UnknownNodeTypesError`` listing every node type the server lacks, and
    ``WorkflowError`` for a malformed workflow (a link that is not in the links table...) or a
    saved widget value that does not fit its widget (naming the node, widget and value).
    """
    if editor not in EDITORS:
        raise InvalidArgumentError(f"editor={editor!r}: choose one of {', '.join(EDITORS)}")
    if is_api_format(workflow):
        return workflow
    if not is_ui_format(workflow):
        raise WorkflowError("not a ComfyUI workflow: expected an editor workflow (nodes and "
                            "links) or an API prompt ({id: {class_type, inputs}})")
    check_port_links(UIGraph(workflow))
    converter = _Converter(workflow, object_info, rng or random.Random(seed),
                           now or _dt.datetime.now(), choices, editor)
    return converter.convert()
