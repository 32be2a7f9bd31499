"""Build the project's wheel as a user would get it, and install it into a fresh venv.

The wheel is built from a copy of what the checkout ships (git's tracked and not-ignored files),
so that neither a stale ``build/`` in the checkout nor the build itself touches the checkout.
(Import-safe: no side effects, unlike conftest.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def source_copy(dest: Path) -> Path:
    """The checkout's shipped files (tracked or new, not ignored; deleted ones left out) in ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def build_wheel(work: Path) -> Path:
    """A plain (non-editable) wheel of the checkout, built in ``work``; its path."""
    source = source_copy(work / "src")
    out = work / "dist"
    # No build isolation and no index: the build backend (setuptools) is this venv's own.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    (wheel,) = out.glob("discomfort-*.whl")
    return wheel


def fresh_venv(where: Path, wheel: Path) -> tuple[Path, Path]:
    """A new venv with ``wheel`` installed into it (not editable, no dependencies): its python
    and its site-packages.

    The dependencies (and torch, for the server) are this venv's: a .pth file appends this
    venv's site-packages to the new one's path. A path added that way has its own .pth files
    left unread, so this venv's editable install of the checkout is not active there.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, text=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(python), "-c", purelib], check=True, capture_output=True,
                               text=True).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz-discomfort-test-deps.pth").write_text("".join(f"{path}\n" for path in ours))
    return python, site
