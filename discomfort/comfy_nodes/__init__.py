"""The ComfyUI side of Discomfort: the two port nodes, the server hooks, the editor extension.

They live in the library so that a wheel carries them. ComfyUI never loads this folder itself
(from here, the library is ``..``, which a top-level package cannot reach): it loads a
node-package folder whose ``__init__.py`` re-exports this package from its ``discomfort/``
beside it — the checkout root, or for an installed wheel the folder a managed server makes
(``discomfort.locate.node_package_root``). Either way the nodes import the very library copy
they ship in, relatively, never whatever ``discomfort`` the server's sys.path would find.

Importing this outside a ComfyUI server has no side effects (the hooks find no server).
"""

import os

from .ports import DiscomfortInput, DiscomfortOutput
from .server_hooks import install_token_check, register_routes, start_owner_watchdog

NODE_CLASS_MAPPINGS = {
    "DiscomfortInput": DiscomfortInput,
    "DiscomfortOutput": DiscomfortOutput,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DiscomfortInput": "Discomfort Input",
    "DiscomfortOutput": "Discomfort Output",
}
# Absolute: ComfyUI joins it to the folder it loaded, which is not this one.
WEB_DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")

install_token_check()
register_routes()
start_owner_watchdog()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
