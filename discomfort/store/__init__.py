"""The run-scoped store shared by the user's process and the ComfyUI server process."""

from .context import WorkflowContext
from .entry import Entry
from .root import default_root

__all__ = ["Entry", "WorkflowContext", "default_root"]
