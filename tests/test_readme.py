"""Every example in the README runs, as written, and prints what its comments say."""

from pathlib import Path

import pytest

from conftest import cli_lines, python_blocks, run_command, run_example

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PYTHON_BLOCKS = python_blocks(README)
CLI_LINES = cli_lines(README)


@pytest.mark.server
@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"python{i}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_python_example(code, scratch):
    run_example(code, scratch)


@pytest.mark.server
@pytest.mark.parametrize("line", CLI_LINES, ids=[f"cli{i}" for i in range(len(CLI_LINES))])
def test_readme_command(line, scratch):
    run_command(line, scratch)


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 5 and len(CLI_LINES) >= 2
    assert all("asyncio.run(" in code for code in PYTHON_BLOCKS if "async def" in code), \
        "an async example that is never run proves nothing"
