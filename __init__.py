"""ComfyUI entry point of the Discomfort node package: this checkout in custom_nodes/.

The nodes, the server hooks and the editor extension are the library's own
(``discomfort/comfy_nodes/``, so that a wheel carries them too); this re-exports them. ComfyUI
imports this folder under its absolute path as the module name, so the library is reached
relatively: the copy beside this file, never another ``discomfort`` on sys.path.
"""

from .discomfort.comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
