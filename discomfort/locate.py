"""Where ComfyUI and this package's node folder are on this machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ComfyInstallError

COMFYUI_VERSION = "0.3.75"
# This library (the ``discomfort`` package), and the folder that holds it: a checkout (which is
# itself a ComfyUI node package, maybe inside a custom_nodes/), or an installed wheel's
# site-packages.
LIBRARY_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = LIBRARY_DIR.parent
# The __init__.py of a node-package folder made for an installed wheel: like the checkout
# root's, it re-exports the library's ComfyUI side from the ``discomfort/`` beside it.
NODE_PACKAGE_INIT = '''"""Discomfort's port nodes: the library linked beside this file (discomfort.locate)."""

from .discomfort.comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY
'''


def cache_dir() -> Path:
    """Where the project's own installer puts ComfyUI (mirrored by scripts/install_comfyui.py)."""
    if os.environ.get("DISCOMFORT_CACHE"):
        return Path(os.environ["DISCOMFORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "discomfort"


def is_checkout() -> bool:
    """Whether this library sits in its checkout (editable install, or custom_nodes/discomfort),
    whose root is the node package; else it is an installed wheel."""
    return (PACKAGE_ROOT / "__init__.py").is_file() and (PACKAGE_ROOT / "pyproject.toml").is_file()


def node_package_root(build_in: str | os.PathLike | None = None) -> Path:
    """The folder ComfyUI must load as a custom-node package to get the port nodes.

    In a checkout, its root. An installed wheel has no such folder (its nodes are
    ``discomfort/comfy_nodes``, which must be imported inside the library), so one is made in
    ``build_in`` (a managed server's state dir): an ``__init__.py`` re-exporting them and a
    link to this library. Both ways ComfyUI loads exactly this copy of the library.
    """
    if is_checkout():
        return PACKAGE_ROOT
    if build_in is None:
        raise ComfyInstallError(
            f"this Discomfort is an installed package ({LIBRARY_DIR}), with no node-package "
            "folder of its own: pass a directory to make one in")
    return make_node_package(Path(build_in) / "node-package")


def make_node_package(folder: str | os.PathLike, library: str | os.PathLike = LIBRARY_DIR) -> Path:
    """Make ``folder`` a node package ComfyUI can load: ``__init__.py`` + ``discomfort`` (a link
    to ``library``). The folder must not exist yet."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "discomfort").symlink_to(Path(library).resolve(), target_is_directory=True)
    (folder / "__init__.py").write_text(NODE_PACKAGE_INIT)
    return folder


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    """The ComfyUI root: ``explicit``, else $COMFYUI_PATH, else the ComfyUI this package is
    installed in (``<root>/custom_nodes/discomfort``), else the project's own install."""
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("the comfyui_path setting", Path(explicit)))
    elif os.environ.get("COMFYUI_PATH"):
        candidates.append(("$COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"])))
    else:
        if is_checkout() and PACKAGE_ROOT.parent.name == "custom_nodes":
            candidates.append(("the enclosing ComfyUI", PACKAGE_ROOT.parent.parent))
        candidates.append(("the project's install", cache_dir() / f"comfyui-{COMFYUI_VERSION}"))
    for source, path in candidates:
        if (path / "main.py").is_file():
            return path.expanduser().resolve()
        if source != "the project's install" and source != "the enclosing ComfyUI":
            raise ComfyInstallError(f"{source} ({path}) has no main.py: point it at a ComfyUI root")
    raise ComfyInstallError(
        f"no ComfyUI found (looked in: {', '.join(str(p) for _, p in candidates)}); "
        "run `make setup` in the Discomfort checkout, or set COMFYUI_PATH")


def default_python(comfyui: Path) -> str:
    """The interpreter for a ComfyUI: its own venv if it has one, else ours."""
    for venv in ("venv", ".venv", "../python_embeded"):
        exe = comfyui / venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        if exe.is_file():
            return str(exe)
    return sys.executable
