"""`pip install discomfort` as a user gets it: a plain wheel, in a fresh venv, not editable.

The wheel carries the port nodes and the editor extension, so a managed server started from
that venv loads them from the wheel (not from this checkout), and a workflow runs. Also the
ComfyUI-Manager way: requirements.txt installed into a ComfyUI's own Python never touches its
torch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from wheel_support import REPO, build_wheel, fresh_venv  # tests/ is on sys.path (pytest.ini)

TORCH = {"torch", "torchvision", "torchaudio"}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path]:
    """(python, site-packages) of a fresh venv with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    return fresh_venv(work / "venv", build_wheel(work))


def run_in(python: Path, code: str, cwd: Path, timeout: float = 120) -> dict:
    """Run ``code`` with ``python`` in ``cwd`` (never the checkout: nothing of it on sys.path);
    its last stdout line, as JSON."""
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([str(python), str(script)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_wheel_installs_the_library_and_its_nodes_not_the_checkout(venv, tmp_path):
    python, site = venv
    found = run_in(python, """
        import json, importlib.metadata, importlib.util, os, sys
        import discomfort, discomfort.comfy_nodes as nodes
        from discomfort.errors import ComfyInstallError
        from discomfort.locate import is_checkout, node_package_root
        try:
            node_package_root()
            bare = "made a folder"
        except ComfyInstallError as exc:
            bare = str(exc)
        made = node_package_root(build_in="made")
        direct = json.loads(importlib.metadata.distribution("discomfort").read_text("direct_url.json"))
        print(json.dumps({
            "file": discomfort.__file__, "checkout": is_checkout(), "bare": bare,
            "made": sorted(os.listdir(made)), "link": os.path.realpath(os.path.join(made, "discomfort")),
            "web": sorted(os.listdir(nodes.WEB_DIRECTORY)), "nodes": sorted(nodes.NODE_CLASS_MAPPINGS),
            "editable": direct.get("dir_info", {}).get("editable", False),
            "top_level_nodes": importlib.util.find_spec("nodes") is not None,
            "versions": [discomfort.__version__, importlib.metadata.version("discomfort")],
        }))
    """, tmp_path)
    assert found["file"] == str(site / "discomfort" / "__init__.py")
    assert not found["checkout"] and not found["editable"] and not found["top_level_nodes"]
    assert "installed package" in found["bare"]
    assert found["made"] == ["__init__.py", "discomfort"]
    assert found["link"] == str((site / "discomfort").resolve())
    assert found["web"] == ["discomfort.js"]
    assert found["nodes"] == ["DiscomfortInput", "DiscomfortOutput"]
    assert found["versions"][0] == found["versions"][1]  # one version source
    # PEP 561: the marker that tells a type checker to read the installed library's annotations
    assert (site / "discomfort" / "py.typed").is_file()


@pytest.mark.server
def test_a_managed_server_from_the_wheel_runs_a_workflow_with_the_wheels_nodes(venv, tmp_path):
    python, site = venv
    found = run_in(python, """
        import asyncio, json, urllib.request
        from discomfort import Discomfort
        from discomfort.auth import TOKEN_HEADER

        PROMPT = {
            "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "text"}},
            "2": {"class_type": "StringConcatenate",
                  "inputs": {"string_a": ["1", 0], "string_b": "world", "delimiter": ", "}},
            "3": {"class_type": "DiscomfortOutput",
                  "inputs": {"value": ["2", 0], "unique_id": "joined"}},
        }

        async def main():
            async with await Discomfort.create() as discomfort:
                outputs = await discomfort.run([PROMPT], inputs={"text": "hello"}, progress=False)
                server = discomfort.Worker.server
                js = urllib.request.Request(server.url + "/extensions/discomfort/discomfort.js",
                                            headers={TOKEN_HEADER: server.token})
                with urllib.request.urlopen(js, timeout=10) as response:
                    script = response.read().decode()
                return {"outputs": outputs, "info": server.request("/discomfort/info"),
                        "extensions": server.request("/extensions"), "js": script,
                        "log": server.log_path.read_text()}

        print(json.dumps(asyncio.run(main())))
    """, tmp_path)
    assert found["outputs"] == {"joined": "hello, world"}
    assert found["info"]["library"] == str((site / "discomfort").resolve())  # the wheel's, not ours
    extensions = [e for e in found["extensions"] if "discomfort" in e]
    assert extensions == ["/extensions/discomfort/discomfort.js"]
    assert found["js"] == (REPO / "discomfort" / "comfy_nodes" / "js" / "discomfort.js").read_text()
    # Exactly one copy of the node package loaded, and it loaded.
    imports = [line for line in found["log"].splitlines()
               if "seconds" in line and line.rstrip().endswith("/discomfort")]
    assert len(imports) == 1 and "IMPORT FAILED" not in imports[0], found["log"][-3000:]


def requirement_names(lines) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_requirements_txt_never_changes_the_comfyui_pythons_torch():
    """What ComfyUI-Manager does with requirements.txt, dry-run against the Python a managed
    server would use for this ComfyUI: nothing of torch's is to be installed or replaced."""
    from discomfort.locate import default_python, find_comfyui

    requirements = REPO / "requirements.txt"
    listed = requirement_names(requirements.read_text().splitlines())
    assert not listed & TORCH
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == requirement_names(declared), "requirements.txt and pyproject.toml disagree"
    comfy_python = default_python(find_comfyui())
    done = subprocess.run([sys.executable, "-m", "pip", "--python", comfy_python, "install",
                           "--dry-run", "--report", "-", "-q", "-r", str(requirements)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    to_install = {item["metadata"]["name"].lower() for item in report["install"]}
    assert not to_install & TORCH, to_install
