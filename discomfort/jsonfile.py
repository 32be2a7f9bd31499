"""Reading the JSON files users hand us (workflows, settings, rules), with errors that name
the file and say what is wrong with it."""

from __future__ import annotations

import json
import os


def read_json_object(path: str | os.PathLike, what: str, error: type[Exception]) -> dict:
    """The JSON object in ``path``; else ``error`` naming ``what`` and the file."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise error(f"{what} {where} does not exist") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} {where} is not valid JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {where}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {where} holds a JSON {type(data).__name__}, not an object")
    return data
