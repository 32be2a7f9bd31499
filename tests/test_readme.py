"""Every example in the README runs, as written, and prints what its comments say."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
CLI_LINES = [line for block in re.findall(r"```bash\n(.*?)```", README, re.S)
             for line in block.splitlines() if line.startswith("python -m discomfort")]


def expected_output(code: str) -> list[str]:
    """The `# value` comments on print lines."""
    return [m.group(1).strip() for line in code.splitlines()
            if line.strip().startswith("print(") and (m := re.search(r"\)\s+#\s*(.+)$", line))]


@pytest.fixture
def scratch(tmp_path: Path, model_dir: Path) -> Path:
    """A working directory where the README's relative paths resolve: workflows/, tests/,
    and models/ with the tiny generated upscale model."""
    for name in ("workflows", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "models").symlink_to(model_dir)
    return tmp_path


@pytest.mark.server
@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"python{i}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_python_example(code, scratch):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=scratch, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [line.strip() for line in done.stdout.splitlines()]
    for expected in expected_output(code):
        assert expected in printed, (expected, printed)


@pytest.mark.server
@pytest.mark.parametrize("line", CLI_LINES, ids=[f"cli{i}" for i in range(len(CLI_LINES))])
def test_readme_command(line, scratch):
    argv = [sys.executable] + shlex.split(line)[1:]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=scratch, timeout=300)
    assert done.returncode == 0, done.stderr
    if "--out" in argv:
        out = scratch / argv[argv.index("--out") + 1]
        assert any(out.iterdir()), f"{line} wrote nothing to {out}"


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 5 and len(CLI_LINES) >= 2
    assert all("asyncio.run(" in code for code in PYTHON_BLOCKS if "async def" in code), \
        "an async example that is never run proves nothing"
