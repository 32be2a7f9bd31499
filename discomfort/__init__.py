"""Discomfort: drive ComfyUI workflows from Python.

Inside the library every import is relative: in a checkout that sits in
``ComfyUI/custom_nodes/discomfort`` this package is also reachable as
``custom_nodes.discomfort.discomfort``, and ComfyUI imports the checkout under its absolute path.
"""

from . import errors
from .store import WorkflowContext

__version__ = "0.1.0"
__all__ = ["Discomfort", "DiscomfortPool", "ComfyConnector", "WorkflowContext", "WorkflowTools",
           "Event", "Port", "RunReport", "PromptReport", "OutputFile", "errors", "__version__"]

# Loaded on first use: the port nodes inside ComfyUI import this package too, and need none
# of the client side (aiohttp sessions, websockets, progress bars).
_LAZY = {"Discomfort": ".orchestrator", "DiscomfortPool": ".pool", "ComfyConnector": ".connector",
         "WorkflowTools": ".tools", "Event": ".protocol", "RunReport": ".report", "PromptReport": ".report",
         "OutputFile": ".report", "Port": ".graph.ports"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
