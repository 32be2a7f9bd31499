"""`make demo` runs `python -m discomfort.demo`: it must work as the README says."""

import subprocess
import sys

import pytest


@pytest.mark.server
def test_make_demo_sends_a_value_through_comfyui_and_back():
    done = subprocess.run([sys.executable, "-m", "discomfort.demo"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inverted == 1 - image: True" in done.stdout
