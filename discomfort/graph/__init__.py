"""The graph core: pure functions on workflow JSON (no server, no ComfyUI imports)."""

from .convert import ui_to_api
from .load import is_api_format, is_ui_format, load_workflow

__all__ = ["ui_to_api", "load_workflow", "is_api_format", "is_ui_format"]
