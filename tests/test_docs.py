"""docs/ and examples/: every example runs as written, and the pages link to what exists.

Each ```python block of docs/*.md runs in a fresh interpreter in the same scratch directory as
the README's examples (workflows/, tests/ and models/ with the tiny generated upscale model),
and must print what its `# value` comments say. `python -m discomfort` lines of ```bash blocks
run too. The notebook examples/discomfort.ipynb runs in a real Jupyter kernel (nbclient and
ipykernel, this venv's Python), top-level await included, and must show its pictures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import cli_lines, python_blocks, run_command, run_example

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
NOTEBOOK = REPO / "examples" / "discomfort.ipynb"
PAGES = sorted(DOCS.glob("*.md"))


def _needs_server(code: str) -> bool:
    return "Discomfort.create(" in code or "ComfyConnector.create(" in code


def _python_params():
    for page in PAGES:
        for i, code in enumerate(python_blocks(page.read_text())):
            marks = [pytest.mark.server] if _needs_server(code) else []
            yield pytest.param(code, id=f"{page.stem}-python{i}", marks=marks)


def _cli_params():
    for page in PAGES:
        for i, line in enumerate(cli_lines(page.read_text())):
            # Editor-format ports/convert and `run` need a server; --object-info does not.
            marks = [] if "--object-info" in line else [pytest.mark.server]
            yield pytest.param(line, id=f"{page.stem}-cli{i}", marks=marks)


@pytest.mark.parametrize("code", list(_python_params()))
def test_docs_python_example(code, scratch):
    run_example(code, scratch)


@pytest.mark.parametrize("line", list(_cli_params()))
def test_docs_command(line, scratch):
    run_command(line, scratch)


def test_docs_examples_are_real():
    blocks = [code for page in PAGES for code in python_blocks(page.read_text())]
    assert len(blocks) >= 10
    assert all("asyncio.run(" in code for code in blocks if "async def" in code), \
        "an async example that is never run proves nothing"
    assert sum(map(_needs_server, blocks)) <= 4, "each server example costs a server start"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def test_docs_links_resolve():
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not list {page.name}"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: broken link {target}"
            if anchor and resolved.suffix == ".md":
                assert anchor in _anchors(resolved), f"{page.name}: no anchor {target}"


# --- the notebook -------------------------------------------------------------------------

def _load_notebook() -> dict:
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4 and isinstance(notebook["nbformat_minor"], int)
    assert isinstance(notebook["metadata"], dict)
    ids = [cell.get("id") for cell in notebook["cells"]]
    if notebook["nbformat_minor"] >= 5:  # cell ids: required from 4.5 on, unique
        assert all(isinstance(i, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
        assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("code", "markdown") and isinstance(cell["metadata"], dict)
        assert isinstance(cell["source"], (str, list))
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    return notebook


def test_notebook_is_valid_nbformat_4():
    notebook = _load_notebook()
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert kinds.count("code") >= 4 and kinds.count("markdown") >= 4
    sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert any(re.search(r"^\s*await ", s, re.M) for s in sources), "top-level await"
    assert not any("asyncio.run(" in s for s in sources)


@pytest.mark.server
async def test_notebook_runs_in_a_jupyter_kernel(scratch, tmp_path_factory):
    import nbformat
    from test_notebook import WIDGET, notebook_client, outputs, shown_png, stream

    _load_notebook()
    notebook = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    client = notebook_client(notebook, tmp_path_factory.mktemp("jupyter"), scratch)
    await client.async_execute(cleanup_kc=True)  # raises on a cell's error, or its timeout
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in cells for o in outputs(cell, "error")]
    by_last_line = {cell.source.strip().splitlines()[-1]: cell for cell in cells}
    # The grid of 2 prompts x 3 seeds, 64 px enlarged 3x, 4 px apart; the img2img strip.
    assert shown_png(by_last_line["sheet"]).size == (3 * 196 - 4, 2 * 196 - 4)
    strip = shown_png(by_last_line["strip"])
    assert strip.height == 192 and (strip.width + 4) % 196 == 0 and strip.width > 196
    # run() with its progress bar on: ipywidgets is in the test extra, so tqdm.auto's widget.
    [loader] = [cell for cell in cells if "load_checkpoint.json" in cell.source]
    assert any(WIDGET in o.data for o in outputs(loader, "display_data")), loader.outputs
    assert "Traceback" not in "".join(stream(cell, "stderr") for cell in cells)
    assert stream(cells[-1], "stdout").splitlines()[-1] == "notebook checks passed"
