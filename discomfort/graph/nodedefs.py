"""What the editor builds for a node class from ``/object_info``: its input slots and widgets.

The editor gives a node one widget per input that has a widget type, in ``input_order``
(required, then optional, then the rest), plus companion widgets that take a slot in the saved
``widgets_values`` but are never sent (``control_after_generate`` and the combo filter, the
image-upload button). Its input slots are the socket-only inputs first, then one per widget
input. Both orders decide how a saved workflow is read, so they are reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .workflow import spec_parts

# Input types the editor draws as widgets (its own and its core extensions').
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "COLOR",
    "IMAGECOMPARE", "CHART", "GALLERIA", "TEXTAREA", "WEBCAM", "LOAD_3D", "PREVIEW_3D",
    "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD",
})
# Inputs the editor's extensions add to some node classes (a 3D viewer widget).
EXTRA_REQUIRED = {"SaveGLB": {"image": ["PREVIEW_3D"]}, "Preview3D": {"image": ["PREVIEW_3D"]}}
# Combo inputs that get an upload button widget ("upload", never sent) after them.
_UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")


@dataclass(frozen=True)
class WidgetSpec:
    name: str
    default: Any = None
    sent: bool = True                # False: takes a widgets_values slot, not in the prompt
    dynamic_prompts: bool = False
    saved: bool = True               # False: in the prompt, but no slot in widgets_values
    textarea: bool = False           # a DOM text area: its value is always text
    # What a saved value must be, checked for values the editor would mis-map
    # (see discomfort.graph.convert): INT | FLOAT | BOOLEAN | COMBO, else None (unchecked).
    kind: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None     # COMBO options


# Widgets extensions add after the others: PreviewAny's read-only text, sent empty by the
# editor 1.32 (1.58 no longer sends it).
EXTRA_WIDGETS = {"1.32": {"PreviewAny": (WidgetSpec("preview", "", saved=False,
                                                     textarea=True),)}}


@dataclass(frozen=True)
class InputSlot:
    name: str
    type: str
    widget: str | None = None        # the widget this slot can replace, if any


@dataclass(frozen=True)
class NodeDef:
    name: str
    display_name: str
    widgets: tuple[WidgetSpec, ...]
    slots: tuple[InputSlot, ...]
    outputs: tuple[str, ...]
    # (input name, takes two widgets_values slots) for migrateWidgetsValues, in V2 dict order.
    legacy_count: tuple[tuple[str, int, bool], ...] = field(default=())


def _inputs_v2(info: dict) -> dict[str, tuple[str, dict, bool]]:
    """name -> (type, options, optional): required then optional, as the editor's V2 dict.

    A required media combo (``image_upload``...) gets an ``upload`` input appended to the
    required ones, as the editor's upload extension does.
    """
    section = info.get("input") or {}
    out: dict[str, tuple[str, dict, bool]] = {}
    for optional, key in ((False, "required"), (True, "optional")):
        entries = dict(section.get(key) or {})
        if not optional:
            entries.update(EXTRA_REQUIRED.get(str(info.get("name")), {}))
        if not optional and "upload" not in entries:
            for spec in entries.values():
                if isinstance(spec, list) and spec and _is_upload_combo(spec, spec_parts(spec)[1]):
                    entries["upload"] = ["IMAGEUPLOAD", spec_parts(spec)[1]]
                    break
        for name, spec in entries.items():
            spec = spec if isinstance(spec, list) else [spec]
            type_, opts = spec_parts(spec)
            if optional and opts.get("defaultInput"):
                opts["forceInput"] = True
            out[name] = (type_, opts, optional)
    return out


def _is_upload_combo(spec: list, opts: dict) -> bool:
    return any(opts.get(flag) is True for flag in _UPLOAD_FLAGS) and (
        isinstance(spec[0], list) or spec[0] == "COMBO")


def _ordered(info: dict, inputs: dict[str, tuple[str, dict, bool]]) -> list[str]:
    """Input names in ``input_order`` (required, then optional), then any others."""
    order = info.get("input_order")
    if not order:
        return list(inputs)
    names = [n for n in order.get("required") or [] if n in inputs and not inputs[n][2]]
    names += [n for n in order.get("optional") or [] if n in inputs and inputs[n][2]]
    names += [n for n in inputs if n not in names]
    return names


def _has_widget(type_: str, opts: dict) -> bool:
    return type_ in WIDGET_TYPES and not opts.get("forceInput")


def _widgets_for(name: str, type_: str, opts: dict) -> list[WidgetSpec]:
    """The widget of one input and its unsent companions."""
    if type_ == "IMAGEUPLOAD":
        return [WidgetSpec("upload", "image", sent=False)]
    if type_ == "INT":
        main = WidgetSpec(name, opts.get("default", 0), kind="INT", minimum=_number(opts, "min"),
                          maximum=_number(opts, "max"))
        control = opts.get("control_after_generate")
        if control is None:
            control = name in ("seed", "noise_seed")
        return [main] + ([WidgetSpec("control_after_generate", "randomize", sent=False)]
                         if control else [])
    if type_ == "FLOAT":
        return [WidgetSpec(name, opts.get("default", 0), kind="FLOAT",
                           minimum=_number(opts, "min"), maximum=_number(opts, "max"))]
    if type_ == "BOOLEAN":
        return [WidgetSpec(name, opts.get("default", False), kind="BOOLEAN")]
    if type_ == "STRING":
        return [WidgetSpec(name, opts.get("default", ""),
                           dynamic_prompts=opts.get("dynamicPrompts") is True,
                           textarea=bool(opts.get("multiline")))]
    if type_ == "COMBO":
        main = WidgetSpec(name, _combo_default(opts), kind="COMBO",
                          choices=tuple(opts.get("__options__") or ()) or None)
        if opts.get("control_after_generate"):
            return [main, WidgetSpec("control_after_generate", "randomize", sent=False),
                    WidgetSpec("control_filter_list", "", sent=False)]
        return [main]
    if type_ == "PREVIEW_3D":
        return [WidgetSpec(name, "")]
    return [WidgetSpec(name, opts.get("default"))]


def _number(opts: dict, key: str) -> float | None:
    value = opts.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _combo_default(opts: dict) -> Any:
    return opts.get("default") or (opts.get("__options__") or [None])[0]


def build_node_def(class_name: str, info: dict, editor: str = "1.58") -> NodeDef:
    inputs = _inputs_v2(info)
    for name, (type_, opts, _optional) in inputs.items():
        if type_ == "COMBO":
            opts.setdefault("__options__", _combo_options(info, name))
    names = _ordered(info, inputs)
    sockets, widget_slots, widgets = [], [], []
    for name in names:
        type_, opts, _ = inputs[name]
        if not _has_widget(type_, opts):
            sockets.append(InputSlot(name, type_))
    for name in names:
        type_, opts, _ = inputs[name]
        if _has_widget(type_, opts):
            widgets.extend(_widgets_for(name, type_, opts))
            widget_slots.append(InputSlot(name, type_, widget=name))
    widgets.extend(EXTRA_WIDGETS.get(editor, {}).get(class_name, ()))
    widget_names = {w.name for w in widgets}
    legacy = tuple(
        (name, 2 if (opts.get("control_after_generate") or name in ("seed", "noise_seed")) else 1,
         bool(opts.get("forceInput")))
        for name, (type_, opts, _) in inputs.items()
        if name in widget_names or opts.get("forceInput"))
    outputs = tuple("COMBO" if isinstance(t, list) else str(t) for t in info.get("output") or [])
    return NodeDef(class_name, info.get("display_name") or class_name, tuple(widgets),
                   tuple(sockets + widget_slots), outputs, legacy)


def _combo_options(info: dict, name: str) -> list:
    section = info.get("input") or {}
    for key in ("required", "optional"):
        spec = (section.get(key) or {}).get(name)
        if spec:
            return list(spec_parts(spec)[1].get("options") or [])
    return []


def migrate_widgets_values(node_def: NodeDef, values: list) -> list:
    """Drop the slots old workflows kept for inputs that are now socket-only (forceInput).

    Applied only when the number of values matches the old layout exactly. Like the editor,
    the i-th value is dropped when the i-th such input is forced (the pairing is by index even
    where an input took two slots).
    """
    if sum(n for _, n, _ in node_def.legacy_count) != len(values):
        return values
    forced = [f for _, _, f in node_def.legacy_count]
    return [v for i, v in enumerate(values) if not (i < len(forced) and forced[i])]


class NodeDefs:
    """Lazily built :class:`NodeDef` for each class of an ``/object_info`` dict."""

    def __init__(self, object_info: dict, editor: str = "1.58"):
        self.object_info = object_info
        self.editor = editor
        self._cache: dict[str, NodeDef] = {}

    def __contains__(self, class_name: object) -> bool:
        return class_name in self.object_info

    def get(self, class_name: str) -> NodeDef:
        node_def = self._cache.get(class_name)
        if node_def is None:
            node_def = build_node_def(class_name, self.object_info[class_name], self.editor)
            self._cache[class_name] = node_def
        return node_def
