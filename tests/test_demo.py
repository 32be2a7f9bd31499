"""`make demo` runs `python -m discomfort.demo`: it must work as the README says."""

import subprocess
import sys

import pytest


@pytest.mark.server
def test_make_demo_loops_until_python_decides_to_stop(tmp_path):
    done = subprocess.run([sys.executable, "-m", "discomfort.demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "four-fold symmetric: True" in done.stdout
    pictures = sorted(p.name for p in tmp_path.glob("step_*.png"))
    assert pictures[0] == "step_00.png" and 5 < len(pictures) < 31
