"""The graph core: pure functions on workflow JSON (no server, no ComfyUI imports)."""

from .convert import ui_to_api
from .load import check_node_types, is_api_format, is_ui_format, load_workflow
from .seeds import advance_controlled_widgets

__all__ = ["check_node_types", "ui_to_api", "load_workflow", "is_api_format", "is_ui_format"]
