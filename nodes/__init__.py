"""The ComfyUI side of Discomfort: the two port nodes and the server hooks."""

from .ports import DiscomfortInput, DiscomfortOutput

NODE_CLASS_MAPPINGS = {
    "DiscomfortInput": DiscomfortInput,
    "DiscomfortOutput": DiscomfortOutput,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DiscomfortInput": "Discomfort Input",
    "DiscomfortOutput": "Discomfort Output",
}
