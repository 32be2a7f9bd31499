"""How the package is laid out and imported: as a library, as a ComfyUI custom-node folder, as a wheel.

One source: the nodes, the server hooks and the editor extension are the library's own
(discomfort/comfy_nodes/); the checkout root (__init__.py, nodes/) only re-exports them. The
wheel itself, installed into a fresh venv and running a workflow, is tests/test_wheel.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from discomfort.locate import LIBRARY_DIR, NODE_PACKAGE_INIT, make_node_package, node_package_root
from wheel_support import build_wheel  # tests/ is on sys.path (pytest.ini)

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "discomfort" / "comfy_nodes" / "js" / "discomfort.js"


def test_importable_from_a_comfyui_root_as_custom_nodes_discomfort(tmp_path):
    comfy_root = tmp_path / "ComfyUI"
    (comfy_root / "custom_nodes").mkdir(parents=True)
    (comfy_root / "custom_nodes" / "discomfort").symlink_to(REPO, target_is_directory=True)
    code = (
        "import sys\n"
        "from custom_nodes.discomfort.discomfort import WorkflowContext\n"
        "from custom_nodes.discomfort import NODE_CLASS_MAPPINGS, WEB_DIRECTORY\n"
        "from custom_nodes.discomfort.nodes import DiscomfortInput\n"
        "import custom_nodes.discomfort.discomfort as lib\n"
        "print(lib.__file__)\n"
        "print(sorted(NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS['DiscomfortInput'].__module__)\n"
        "print(WEB_DIRECTORY)\n"
        "assert DiscomfortInput is NODE_CLASS_MAPPINGS['DiscomfortInput']\n"
        "assert 'discomfort' not in sys.modules  # only the copy under custom_nodes\n"
        "assert 'comfy' not in sys.modules and 'server' not in sys.modules\n"
        "assert not any(t.name.startswith('discomfort') for t in __import__('threading').enumerate())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=comfy_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lib_file, names, web = done.stdout.splitlines()
    here = comfy_root / "custom_nodes" / "discomfort"
    assert lib_file == str(here / "discomfort" / "__init__.py")
    assert names == ("['DiscomfortInput', 'DiscomfortOutput'] "
                     "custom_nodes.discomfort.discomfort.comfy_nodes.ports")
    assert web == str(here / "discomfort" / "comfy_nodes" / "js")


# ComfyUI's own way (nodes.load_custom_node): the folder is imported under its absolute path as
# the module name, and WEB_DIRECTORY is joined to that folder. A decoy `discomfort` first on
# sys.path stands for another copy (a pip-installed one, say): the nodes must never reach it.
LOAD_LIKE_COMFYUI = textwrap.dedent("""
    import importlib.util, json, os, sys
    folder = sys.argv[1]
    sys.path.insert(0, sys.argv[2])
    name = folder.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    web = os.path.abspath(os.path.join(folder, module.WEB_DIRECTORY))
    print(json.dumps({
        "modules": sorted({c.__module__ for c in module.NODE_CLASS_MAPPINGS.values()}),
        "prefix": name,
        "library": sys.modules[name + ".discomfort"].__file__,
        "web": sorted(os.listdir(web)),
        "decoy": "discomfort" in sys.modules,
    }))
""")


@pytest.mark.parametrize("kind", ["checkout root", "node package made for a wheel"])
def test_loaded_the_way_comfyui_loads_it_the_nodes_use_the_library_beside_them(tmp_path, kind):
    decoy = tmp_path / "decoy"
    (decoy / "discomfort").mkdir(parents=True)
    (decoy / "discomfort" / "__init__.py").write_text("raise ImportError('the decoy discomfort')\n")
    if kind == "checkout root":
        folder = tmp_path / "custom_nodes" / "discomfort"
        folder.parent.mkdir()
        folder.symlink_to(REPO, target_is_directory=True)
    else:
        folder = make_node_package(tmp_path / "custom_nodes" / "discomfort", LIBRARY_DIR)
    done = subprocess.run([sys.executable, "-c", LOAD_LIKE_COMFYUI, str(folder), str(decoy)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded["modules"] == [loaded["prefix"] + ".discomfort.comfy_nodes.ports"]
    assert Path(loaded["library"]).resolve() == LIBRARY_DIR / "__init__.py"
    assert loaded["web"] == ["discomfort.js"] and not loaded["decoy"]


def test_the_root_and_a_made_node_package_export_the_same(tmp_path):
    def imports(text):
        return [line for line in text.splitlines() if line.startswith("from ")]

    assert imports((REPO / "__init__.py").read_text()) == imports(NODE_PACKAGE_INIT) == [
        "from .discomfort.comfy_nodes import "
        "NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY"]
    # Nothing of the nodes' is left to duplicate outside the library.
    assert sorted(p.name for p in (REPO / "nodes").iterdir() if p.suffix == ".py") == ["__init__.py"]
    # The design card's top-level js/ stays, as a link to the one source in the library.
    assert (REPO / "js").is_symlink() and (REPO / "js").resolve() == JS.parent.resolve()


def test_node_package_root_is_the_checkout_here(tmp_path):
    assert node_package_root() == REPO
    assert node_package_root(build_in=tmp_path) == REPO and not list(tmp_path.iterdir())


def fake_comfyui(where: Path, holds: str) -> Path:
    (where / "custom_nodes").mkdir(parents=True)
    (where / "main.py").write_text("")
    if holds == "this checkout":  # linked into its custom_nodes, the usual development set-up
        (where / "custom_nodes" / "discomfort").symlink_to(REPO, target_is_directory=True)
    elif holds == "another copy":  # e.g. installed by ComfyUI-Manager, beside a pip-installed one
        other = where / "custom_nodes" / "Discomfort-main"
        (other / "discomfort").mkdir(parents=True)
        (other / "__init__.py").write_text("")
        (other / "discomfort" / "__init__.py").write_text("")
    return where


@pytest.mark.parametrize("holds", ["nothing", "this checkout", "another copy"])
def test_a_managed_server_loads_exactly_one_copy_of_the_nodes(tmp_path, holds):
    from discomfort.server import ComfyServer

    comfyui = fake_comfyui(tmp_path / "ComfyUI", holds)
    server = ComfyServer(comfyui_path=comfyui, python=sys.executable)
    server.state_dir = tmp_path / "state"
    server.state_dir.mkdir()
    server._write_paths_config()
    ours = server.state_dir / "custom_nodes" / "discomfort"
    if holds == "nothing":
        assert ours.resolve() == REPO
    else:  # ComfyUI loads its own
        assert not ours.exists() and not ours.is_symlink()


def test_a_wheel_installs_the_library_with_its_nodes_and_never_a_top_level_nodes(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("discomfort-")}
    assert top_level == {"discomfort"}
    packages = {init.parent.relative_to(REPO).as_posix()
                for init in (REPO / "discomfort").rglob("__init__.py")}
    assert {p + "/__init__.py" for p in packages} <= set(names), "a package is missing from the wheel"
    assert {"discomfort/comfy_nodes/ports.py", "discomfort/comfy_nodes/server_hooks.py",
            "discomfort/comfy_nodes/js/discomfort.js"} <= set(names)
    assert zipfile.ZipFile(wheel).read("discomfort/comfy_nodes/js/discomfort.js") == JS.read_bytes()
    metadata = next(n for n in names if n.endswith("METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert not any(line.split()[1].startswith("torch") and "extra" not in line for line in requires)


def test_errors_py_lists_every_exception_class_and_each_is_discomforts():
    import inspect

    from discomfort import errors

    defined = [name for name, obj in vars(errors).items()
               if inspect.isclass(obj) and obj.__module__ == errors.__name__]
    assert errors.__all__ == defined  # in the order they are defined
    for name in defined:
        assert issubclass(getattr(errors, name), (errors.DiscomfortError, errors.DiscomfortWarning))
    # the ones that take the place of a built-in still are one: `except ValueError` keeps working
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.WrongTypeError, TypeError)
    assert issubclass(errors.ImageFileError, ValueError)
    assert issubclass(errors.ServeStateError, ValueError)
