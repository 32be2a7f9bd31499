"""Discomfort: drive ComfyUI workflows from Python.

Inside the library every import is relative: in a checkout that sits in
``ComfyUI/custom_nodes/discomfort`` this package is also reachable as
``custom_nodes.discomfort.discomfort``, and ComfyUI imports the checkout under its absolute path.
"""

from . import errors
from .store import WorkflowContext

__version__ = "0.1.0"
__all__ = ["WorkflowContext", "errors", "__version__"]
