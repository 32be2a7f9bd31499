"""ComfyUI entry point of the Discomfort node package.

ComfyUI imports this folder under its absolute path as the module name, so everything here is
reached relatively; no ComfyUI module is imported at import time.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.server_hooks import install_token_check, register_routes, start_owner_watchdog

WEB_DIRECTORY = "./js"

install_token_check()
register_routes()
start_owner_watchdog()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
