"""How the package is laid out and imported: as a library, as a ComfyUI custom-node folder, as a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_importable_from_a_comfyui_root_as_custom_nodes_discomfort(tmp_path):
    comfy_root = tmp_path / "ComfyUI"
    (comfy_root / "custom_nodes").mkdir(parents=True)
    (comfy_root / "custom_nodes" / "discomfort").symlink_to(REPO, target_is_directory=True)
    code = (
        "import sys\n"
        "from custom_nodes.discomfort.discomfort import WorkflowContext\n"
        "from custom_nodes.discomfort import NODE_CLASS_MAPPINGS, WEB_DIRECTORY\n"
        "import custom_nodes.discomfort.discomfort as lib\n"
        "print(lib.__file__)\n"
        "print(sorted(NODE_CLASS_MAPPINGS), WEB_DIRECTORY)\n"
        "assert 'comfy' not in sys.modules and 'server' not in sys.modules\n"
        "assert not any(t.name.startswith('discomfort') for t in __import__('threading').enumerate())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=comfy_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lib_file, names = done.stdout.splitlines()
    assert lib_file == str(comfy_root / "custom_nodes" / "discomfort" / "discomfort" / "__init__.py")
    assert names == "['DiscomfortInput', 'DiscomfortOutput'] ./js"


def test_a_wheel_installs_the_library_and_never_a_top_level_nodes(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("discomfort-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("discomfort-")}
    assert top_level == {"discomfort"}
    packages = {str(init.parent.relative_to(REPO)) for init in (REPO / "discomfort").rglob("__init__.py")}
    assert {p + "/__init__.py" for p in packages} <= set(names), "a package is missing from pyproject"
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert not any(line.split()[1].startswith("torch") and "extra" not in line for line in requires)
