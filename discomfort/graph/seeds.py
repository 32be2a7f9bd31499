"""``control_after_generate``: what the editor does to widget values after each queue.

``graphToPrompt()`` sends the saved values; the editor then runs every control widget
("fixed", "increment", "decrement", "randomize", and "increment-wrap" for combos), so pressing
Queue N times sends N different seeds. :func:`advance_controlled_widgets` is one such step,
reproducing the frontend's (1.32.9) ``addValueControlWidgets`` in the default "after" mode:

- every node is advanced, muted and bypassed ones too (the editor walks the whole serialised
  graph), and so is every node of every subgraph definition, once per definition;
- numbers are kept within the widget's min/max, which the editor first caps at +-2**50 (what
  JavaScript handles): even a "fixed" seed above 2**50 becomes 2**50;
- "randomize" draws ``floor(random() * (max - min) / step) * step + min``;
- then the widget's own rounding runs (to a multiple of its step, offset by min).

A promoted widget on a subgraph instance has no control of its own and is left alone.
"""

from __future__ import annotations

import copy
import math
import random
import re
from typing import Any

from .convert import RENAMED_TYPES
from .nodedefs import NodeDefs, migrate_widgets_values
from .workflow import UIGraph, input_spec

JS_LIMIT = 1125899906842624  # 2**50: the editor's cap on min/max before it applies a control
CONTROL = "control_after_generate"


def advance_controlled_widgets(workflow: dict, object_info: dict,
                               rng: random.Random) -> tuple[dict, list[dict]]:
    """Return a copy of the editor ``workflow`` as the editor leaves it after one queue.

    Also returns one record per controlled widget, changed or not: ``node``, ``subgraph``
    (the definition id, None at the top level), ``widget``, ``mode``, ``old`` (the value the
    queued prompt used) and ``new``, plus ``linked`` when the widget's input is connected, so
    that whatever feeds it (a PrimitiveNode, a subgraph input) decides the value instead.
    ``rng`` replaces the editor's ``Math.random()``; the input is not modified.
    """
    new = copy.deepcopy(workflow)
    defs = NodeDefs(object_info)
    changes: list[dict] = []
    graphs = [(None, new)] + [(d.get("id"), d) for d in
                              ((new.get("definitions") or {}).get("subgraphs") or [])
                              if isinstance(d, dict)]
    for sg_id, graph in graphs:
        for node in graph.get("nodes") or []:
            if isinstance(node, dict):
                for change in _advance_node(node, graph, defs, object_info, rng):
                    changes.append({"node": node.get("id"), "subgraph": sg_id, **change})
    return new, changes


def _advance_node(node: dict, graph: dict, defs: NodeDefs, object_info: dict,
                  rng: random.Random) -> list[dict]:
    values = node.get("widgets_values")
    if not isinstance(values, list):
        return []
    type_ = _server_type(node)
    if type_ == "PrimitiveNode":
        return _advance_primitive(node, graph, defs, object_info, rng)
    if type_ is None or type_ not in defs:  # subgraph instances, Reroutes, notes, unknown classes
        return []
    node_def = defs.get(type_)
    values = migrate_widgets_values(node_def, values)
    saved = [w for w in node_def.widgets if w.saved]
    changes = []
    for i, widget in enumerate(saved):
        if widget.name != CONTROL or i == 0 or i >= len(values):
            continue
        target = saved[i - 1].name
        kind, opts = input_spec(object_info, type_, target) or (None, {})
        filter_ = values[i + 1] if kind == "COMBO" and i + 1 < len(values) else ""
        old = values[i - 1]
        values[i - 1] = _apply(kind, opts, old, values[i], filter_, rng)
        change = {"widget": target, "mode": values[i], "old": old, "new": values[i - 1]}
        if _is_linked(node, target):
            change["linked"] = True
        changes.append(change)
    if changes:
        node["widgets_values"] = values  # in the current layout, as the editor saves it
    return changes


def _advance_primitive(node: dict, graph: dict, defs: NodeDefs, object_info: dict,
                       rng: random.Random) -> list[dict]:
    """A PrimitiveNode saves ``[value, control, filter]``; its widget copies its targets'.

    The editor gives it a control only while connected, for a number widget (not a slider or
    knob) or a combo; its default mode is "fixed", or "randomize" when the target input asks
    for a control. Several numeric targets share the narrowest min/max and a common step.
    The new value is also written into the targets' widgets, as the editor's callback does.
    """
    targets = _primitive_targets(node, graph, object_info)
    specs = [spec for spec, _, _ in targets]
    if not specs:
        return []
    kind, opts = specs[0]
    if kind in ("INT", "FLOAT"):
        opts = dict(opts)
        for other_kind, other in specs[1:]:
            if other_kind == kind:
                opts["min"] = max(opts.get("min", -math.inf), other.get("min", -math.inf))
                opts["max"] = min(opts.get("max", math.inf), other.get("max", math.inf))
                steps = (opts.get("step", 1), other.get("step", 1))
                if all(isinstance(s, int) for s in steps):
                    opts["step"] = math.lcm(*steps)
        opts = {k: v for k, v in opts.items() if not (isinstance(v, float) and math.isinf(v))}
    has_own = bool(opts.get(CONTROL))
    if kind not in ("INT", "FLOAT", "COMBO") or (
            kind != "COMBO" and not has_own and opts.get("display") in ("slider", "knob")):
        return []
    values = node["widgets_values"]
    if not values:
        return []
    default = "randomize" if has_own else "fixed"
    mode = (values[1] if len(values) > 1 else None) or default
    filter_ = values[2] if kind == "COMBO" and len(values) > 2 else ""
    old = values[0]
    values[0] = _apply(kind, opts, old, mode, filter_, rng)
    values[1:] = [mode] + ([filter_] if kind == "COMBO" else []) + values[3:]
    for _, target, name in targets:
        _set_widget(target, name, values[0], defs)
    return [{"widget": "value", "mode": mode, "old": old, "new": values[0]}]


def _set_widget(node: dict, name: str, value: Any, defs: NodeDefs) -> None:
    type_ = _server_type(node)
    values = node.get("widgets_values")
    if type_ is None or type_ not in defs or not isinstance(values, list):
        return
    saved = [w.name for w in defs.get(type_).widgets if w.saved]
    if name in saved and saved.index(name) < len(values):
        values[saved.index(name)] = value


def _primitive_targets(node: dict, graph: dict,
                       object_info: dict) -> list[tuple[tuple[str, dict], dict, str]]:
    """((type, options), node, widget name) of each server-node input the PrimitiveNode feeds."""
    level = UIGraph({"nodes": [n for n in graph.get("nodes") or [] if isinstance(n, dict)],
                     "links": graph.get("links")})
    specs = []
    for link in level.links_from(node):
        target = level.node(link.target_id)
        if target is None:
            continue
        type_ = _server_type(target)
        widget = (level.target_input(link) or {}).get("widget") if type_ in object_info else None
        name = widget.get("name") if isinstance(widget, dict) else None
        if not isinstance(name, str) or not name:  # object_info names inputs by strings
            continue
        spec = input_spec(object_info, type_, name)
        if spec:
            specs.append((spec, target, name))
    return specs


def _server_type(node: dict) -> str | None:
    """A saved node's class as ``/object_info`` names it (renamed classes followed); None for a
    ``type`` that is not a string, which no server class is."""
    type_ = node.get("type")
    return RENAMED_TYPES.get(type_, type_) if isinstance(type_, str) else None


def _is_linked(node: dict, widget: str) -> bool:
    return any(isinstance(s, dict) and s.get("link") is not None
               and (s.get("widget") or {}).get("name") == widget
               for s in node.get("inputs") or [])


# --- one control step, as the editor's applyWidgetControl -----------------------------------

def _apply(kind: str | None, opts: dict, value: Any, mode: Any, filter_: Any,
           rng: random.Random) -> Any:
    if kind == "COMBO" and mode != "fixed":
        return _apply_combo(list(opts.get("options") or []), value, mode, filter_, rng)
    if kind == "COMBO":  # the editor runs its number code on a fixed combo: min 0, max 1
        return _clamp_js(value, 0, 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # JavaScript would make NaN or a string of it: leave it be
    if kind == "INT":
        lo, hi, step = opts.get("min", 0), opts.get("max", 2048), opts.get("step", 1)
    else:
        lo, hi, step = opts.get("min", 0), opts.get("max", 2048), opts.get("step", 0.5)
    lo_cap, hi_cap = max(-JS_LIMIT, lo), min(JS_LIMIT, hi)
    if mode == "increment":
        value = value + step
    elif mode == "decrement":
        value = value - step
    elif mode == "randomize":
        value = math.floor(rng.random() * ((hi_cap - lo_cap) / step)) * step + lo_cap
    value = _clamp_js(value, lo_cap, hi_cap)
    return _round_int(value, step, lo) if kind == "INT" else _round_float(value, opts, step)


def _apply_combo(options: list, value: Any, mode: Any, filter_: Any,
                 rng: random.Random) -> Any:
    """Move through the (filtered) options; an unknown value or mode lands on the first."""
    if filter_:
        options = [o for o in options if _matches(str(o), str(filter_))]
    index = options.index(value) if value in options else -1
    if mode in ("increment", "increment-wrap"):
        index += 1
        if mode == "increment-wrap" and index >= len(options):
            index = 0
    elif mode == "decrement":
        index -= 1
    elif mode == "randomize":
        index = math.floor(rng.random() * len(options))
    index = min(len(options) - 1, max(0, index))
    return options[index] if index >= 0 else value


def _matches(item: str, filter_: str) -> bool:
    """The filter box: ``/regex/`` (searched), else a case-insensitive substring."""
    if len(filter_) > 1 and filter_.startswith("/") and filter_.endswith("/"):
        try:
            return re.search(filter_[1:-1], item) is not None
        except re.error:
            pass
    return filter_.lower() in item.lower()


def _clamp_js(value: Any, lo: float, hi: float) -> Any:
    """``if (v < min) v = min; if (v > max) v = max`` with JavaScript's loose comparison."""
    number = _js_number(value)
    if number is None:
        return value
    if number < lo:
        return lo
    if number > hi:
        return hi
    return value


def _js_number(value: Any) -> float | None:
    """What JavaScript compares when a value meets a number (None: NaN)."""
    if isinstance(value, (bool, int, float)):
        return None if isinstance(value, float) and math.isnan(value) else value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0
        try:
            number = float(text)
        except ValueError:
            return None
        return None if math.isnan(number) or "_" in text else number
    return None


def _js_round(x: float) -> int:
    """JavaScript's Math.round: halves go up."""
    return math.floor(x + 0.5)


def _round_int(value: Any, step: Any, lo: Any) -> Any:
    """The INT widget's callback: round to the step, offset by min (``min % step``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    step = step or 1
    if step == 1:
        return value if isinstance(value, int) else _js_round(value)
    offset = math.fmod(lo, step)
    result = _js_round((value - offset) / step) * step + offset
    return int(result) if float(result).is_integer() else result


def _round_float(value: Any, opts: dict, step: float) -> Any:
    """The FLOAT widget's callback: round to ``round`` (from the step), keep within min/max."""
    precision = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    round_ = 10 ** -precision if precision and not opts.get("round") else opts.get("round")
    if not round_:
        return value
    rounded = _js_round(value / round_) * round_
    return min(max(float(f"{rounded:.{precision}f}"), opts.get("min", 0)), opts.get("max", 2048))
