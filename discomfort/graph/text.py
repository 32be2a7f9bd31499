"""The editor's text rewrites at queue time: dynamic prompts and ``filename_prefix`` patterns.

Both mirror what the ComfyUI frontend (1.32.9) does when it serialises a widget, so that a
prompt converted in Python matches the one the editor would queue.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import re
from collections.abc import Callable
from typing import Any

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n\r\u2028\u2029]*", re.S)
_UNESCAPE = re.compile(r"\\([{}|])")


def strip_comments(text: str) -> str:
    """Drop ``/* ... */`` blocks and ``// ...`` to the end of the line, as the editor does."""
    return _COMMENTS.sub("", text)


def resolve_dynamic_prompt(text: str, rng: random.Random) -> str:
    """Strip comments, then replace each ``{a|b|c}`` (nestable, ``\\`` escapes) by one option.

    The frontend draws each choice with ``Math.random()``; here ``rng`` draws it, so a seeded
    ``random.Random`` makes the result reproducible.
    """
    return _UNESCAPE.sub(r"\1", _expand(strip_comments(text), rng))


def _expand(text: str, rng: random.Random) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        i += 1
        if char == "\\":
            out.append("\\" + text[i:i + 1])
            i += 1
        elif char == "{":
            options, i = _choice_block(text, i)
            out.append(_expand(options[math.floor(rng.random() * len(options))], rng))
        else:
            out.append(char)
    return "".join(out)


def _choice_block(text: str, i: int) -> tuple[list[str], int]:
    """Split the inside of one ``{...}`` at its top-level ``|``; return options and end index."""
    options, choice, depth = [], [], 0
    while i < len(text):
        char = text[i]
        i += 1
        if char == "\\":
            choice.append("\\" + text[i:i + 1])
            i += 1
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if not depth:
                break
            depth -= 1
        elif char == "|" and not depth:
            options.append("".join(choice))
            choice = []
            continue
        choice.append(char)
    options.append("".join(choice))
    return options, i


_DATE_TOKENS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")
_UNSAFE_FILENAME = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')
_PATTERN = re.compile(r"%([^%]+)%")


def format_date(fmt: str, now: _dt.datetime) -> str:
    """The editor's ``%date:FMT%``: yyyy, yy, MM/M, dd/d, hh/h, mm/m, ss/s (local time)."""
    parts = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def token(match: re.Match) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        if text[0] in parts:
            return str(parts[text[0]]).rjust(len(text), "0")
        return text

    return _DATE_TOKENS.sub(token, fmt)


def js_string(value: Any) -> str:
    """``String(value)`` as JavaScript writes it (``1.0`` is ``"1"``, ``True`` is ``"true"``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return ",".join(js_string(v) for v in value)
    return str(value)


def apply_text_replacements(text: str, find_widget: Callable[[str, str], tuple[bool, Any]],
                            now: _dt.datetime) -> str:
    """Expand ``%date:FMT%`` and ``%Node.widget%`` in a Save node's ``filename_prefix``.

    ``find_widget(node_name, widget_name)`` returns ``(found, value)``; a pattern that names no
    node or widget is left as it is, like in the editor.
    """
    def replace(match: re.Match) -> str:
        inner = match.group(1)
        split = inner.split(".")
        if len(split) != 2:
            if split[0].startswith("date:"):
                return format_date(split[0][5:], now)
            return match.group(0)
        found, value = find_widget(split[0], split[1])
        if not found:
            return match.group(0)
        return _UNSAFE_FILENAME.sub("_", js_string("" if value is None else value))

    return _PATTERN.sub(replace, text)
