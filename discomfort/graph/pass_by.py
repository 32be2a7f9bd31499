"""Which port types go by value and which by reference.

By value goes only what is known to be data (tensors, scalars, strings): a heavy object
(a model, a CLIP, a VAE, conditioning...) is never serialised, it goes by reference (a recipe
that rebuilds it inside the next prompt). A type the rules do not name goes by reference.

The rules are a small JSON object ``{"TYPE": "val" | "ref"}`` the user can edit; a file given
to :func:`load_rules` is merged over :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from ..jsonfile import read_json_object

VAL, REF = "val", "ref"
DEFAULT_RULES: dict[str, str] = {
    "MODEL": REF, "CLIP": REF, "VAE": REF, "CONDITIONING": REF, "CONTROL_NET": REF,
    "CLIP_VISION": REF, "CLIP_VISION_OUTPUT": REF, "STYLE_MODEL": REF, "GLIGEN": REF,
    "UPSCALE_MODEL": REF, "LORA_MODEL": REF,
    "IMAGE": VAL, "MASK": VAL, "LATENT": VAL, "INT": VAL, "FLOAT": VAL, "STRING": VAL,
    "BOOLEAN": VAL, "COMBO": VAL, "*": VAL,
}


def check_rules(rules: object, where: str = "pass_by rules") -> dict[str, str]:
    """``rules`` as a ``{type: "val"|"ref"}`` dict, or ``ConfigError`` naming what is wrong."""
    if not isinstance(rules, dict):
        raise ConfigError(f"{where} must be a JSON object {{\"TYPE\": \"val\" | \"ref\"}}, "
                          f"not a {type(rules).__name__}")
    for kind, mode in rules.items():
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{where}: a type name must be a non-empty string, got {kind!r}")
        if mode not in (VAL, REF):
            raise ConfigError(f"{where}: type {kind!r} has pass_by {mode!r}; "
                              "expected \"val\" or \"ref\"")
    return dict(rules)


def load_rules(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The default rules, with the JSON file at ``path`` (if any) merged over them."""
    rules = dict(DEFAULT_RULES)
    if path is None:
        return rules
    where = os.fspath(path)
    user = read_json_object(where, "pass_by rules", ConfigError)
    rules.update(check_rules(user, f"pass_by rules {where}"))
    return rules


def pass_by_for(kind: str | None, rules: dict[str, str] | None = None) -> str:
    """``"val"`` or ``"ref"`` for a port type. Unknown types go by reference (only what is
    known to be data goes by value); a LiteGraph type list ``"A,B"`` goes by value only when
    every one of its types does."""
    rules = DEFAULT_RULES if rules is None else rules
    kind = "*" if kind in (None, "") else str(kind)
    if kind in rules:
        return rules[kind]
    parts = [p.strip() for p in kind.split(",")] if "," in kind else []
    if parts and all(rules.get(p or "*", REF) == VAL for p in parts):
        return VAL
    return REF
