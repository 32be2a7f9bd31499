"""Every Python example in the README runs, as written, and prints what its comments say."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def expected_output(code: str) -> list[str]:
    """The `# value` comments on print lines."""
    return [m.group(1).strip() for line in code.splitlines()
            if line.strip().startswith("print(") and (m := re.search(r"\)\s+#\s*(.+)$", line))]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [line.strip() for line in done.stdout.splitlines()]
    for expected in expected_output(code):
        assert expected in printed, (expected, printed)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
