"""The graph core: pure functions on workflow JSON (no server, no ComfyUI imports)."""

from .convert import ui_to_api
from .discover import discover_port_nodes
from .edit import add_input_port, add_output_port
from .load import check_node_types, is_api_format, is_ui_format, load_workflow
from .pass_by import DEFAULT_RULES, load_rules, pass_by_for
from .refs import capture_recipe, prune_to_output
from .seeds import advance_controlled_widgets
from .stitch import stitch_workflows

__all__ = [
    "add_input_port", "add_output_port", "advance_controlled_widgets", "capture_recipe",
    "check_node_types", "discover_port_nodes", "DEFAULT_RULES", "is_api_format", "is_ui_format",
    "load_rules", "load_workflow", "pass_by_for", "prune_to_output", "stitch_workflows", "ui_to_api",
]
