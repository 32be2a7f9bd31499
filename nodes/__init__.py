"""Kept for code that imports the nodes by this path (``custom_nodes.discomfort.nodes``):
they live in the library, ``discomfort/comfy_nodes/``."""

from ..discomfort.comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from ..discomfort.comfy_nodes.ports import DiscomfortInput, DiscomfortOutput

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "DiscomfortInput", "DiscomfortOutput"]
