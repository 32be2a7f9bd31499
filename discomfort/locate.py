"""Where ComfyUI and this package's node folder are on this machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ComfyInstallError

COMFYUI_VERSION = "0.3.75"
# The checkout (or custom_nodes folder) that holds this library: root __init__.py + nodes/.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where the project's own installer puts ComfyUI (mirrored by scripts/install_comfyui.py)."""
    if os.environ.get("DISCOMFORT_CACHE"):
        return Path(os.environ["DISCOMFORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "discomfort"


def node_package_root() -> Path:
    """The folder ComfyUI must load as a custom-node package to get the port nodes."""
    if (PACKAGE_ROOT / "nodes" / "ports.py").is_file() and (PACKAGE_ROOT / "__init__.py").is_file():
        return PACKAGE_ROOT
    raise ComfyInstallError(
        f"the port nodes are not beside this library ({PACKAGE_ROOT}): install Discomfort from "
        "its checkout (pip install -e .) or put the checkout in ComfyUI/custom_nodes/discomfort")


def find_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    """The ComfyUI root: ``explicit``, else $COMFYUI_PATH, else the ComfyUI this package is
    installed in (``<root>/custom_nodes/discomfort``), else the project's own install."""
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("the comfyui_path setting", Path(explicit)))
    elif os.environ.get("COMFYUI_PATH"):
        candidates.append(("$COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"])))
    else:
        if PACKAGE_ROOT.parent.name == "custom_nodes":
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
