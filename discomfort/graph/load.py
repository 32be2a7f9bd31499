"""Read a workflow file and tell which of ComfyUI's two formats it is in."""

from __future__ import annotations

import os
from typing import Any

from ..errors import UnknownNodeTypesError, WorkflowError
from ..jsonfile import read_json_object


def load_workflow(source: str | os.PathLike | dict) -> dict:
    """Return the workflow as a dict: a dict is returned as is, a path is read as JSON.

    A file that is not JSON, or whose top level is not an object, raises ``WorkflowError``
    naming the file (and, for bad JSON, the line and column the parser stopped at).
    """
    if isinstance(source, dict):
        return source
    return read_json_object(source, "workflow", WorkflowError)

def is_ui_format(workflow: Any) -> bool:
    """An editor workflow: a ``nodes`` list beside a ``links`` list."""
    return (isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list)
            and isinstance(workflow.get("links"), list))


def is_api_format(workflow: Any) -> bool:
    """An API prompt: ``{node_id: {"class_type": ..., "inputs": {...}}}`` (an empty dict too)."""
    if not isinstance(workflow, dict) or is_ui_format(workflow):
        return False
    return all(isinstance(node, dict) and isinstance(node.get("class_type"), str)
               for node in workflow.values())


def check_node_types(prompt: dict, object_info: dict) -> None:
    """One error listing every node type of an API prompt the server does not have."""
    missing = {node.get("class_type") for node in prompt.values()} - set(object_info)
    if missing:
        raise UnknownNodeTypesError(sorted(map(str, missing)))
