"""`python -m discomfort`: run, ports, convert, and errors that say what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OBJECT_INFO = str(FIXTURES / "object_info.json")
INVERT_UI = str(FIXTURES / "run" / "invert_ui.json")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "discomfort", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_ports_lists_inputs_and_outputs_with_types():
    done = cli("ports", INVERT_UI, "--object-info", OBJECT_INFO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["input", "'img'", "IMAGE", "node", "1",
                                   "output", "'inverted'", "IMAGE", "node", "3"]


def test_convert_prints_the_api_prompt():
    done = cli("convert", INVERT_UI, "--object-info", OBJECT_INFO)
    prompt = json.loads(done.stdout)
    assert [prompt[k]["class_type"] for k in sorted(prompt)] == ["DiscomfortInput", "ImageInvert", "DiscomfortOutput"]


def test_errors_exit_1_with_a_message(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    done = cli("ports", str(broken))
    assert done.returncode == 1 and "broken.json" in done.stderr and "Traceback" not in done.stderr
    done = cli("run", INVERT_UI, "--set", "no-equals-sign")
    assert done.returncode == 2 and "key=value" in done.stderr


@pytest.mark.server
def test_run_sets_inputs_loops_and_writes_outputs(tmp_path):
    from discomfort.images import save_comfy_image_to_disk
    import torch

    picture = tmp_path / "in.png"
    save_comfy_image_to_disk(torch.zeros(1, 4, 4, 3), picture)
    workflow = tmp_path / "loop.json"
    workflow.write_text(json.dumps({
        "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "img"}},
        "4": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "label"}},
        "5": {"class_type": "DiscomfortOutput", "inputs": {"value": ["4", 0], "unique_id": "echo"}},
    }))
    out = tmp_path / "out"
    done = cli("run", str(workflow), "--set", f"img=@{picture}", "--set", 'label={"a": 1}',
               "--iterations", "3", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "img: Tensor [1, 4, 4, 3] torch.float32" in done.stdout
    assert json.loads((out / "echo.json").read_text()) == {"a": 1}
    from discomfort.images import open_image_as_tensor

    assert open_image_as_tensor(out / "img.png").min() == 1.0  # inverted 3 times: white


def test_a_reader_that_stops_early_is_no_error():
    """`python -m discomfort convert ... | head`: the pipe closes before we write."""
    proc = subprocess.Popen([sys.executable, "-m", "discomfort", "convert", INVERT_UI,
                             "--object-info", OBJECT_INFO],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # long before the interpreter has started and written anything
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
