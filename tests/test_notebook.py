"""Jupyter: a notebook's view of Discomfort, under a real kernel (nbclient + ipykernel).

- ``image_grid`` (``Tools.image_grid``): IMAGE tensors and PIL images as one PIL image, which
  Jupyter shows inline as a cell's last expression.
- The stop button (an interrupt of the kernel) during ``await discomfort.run(...)`` stops the
  prompt on the server, and the context stays usable in the next cell. ipykernel turns the
  SIGINT of an awaiting cell into a cancellation of the cell's task (CancelledError in the
  coroutine, not KeyboardInterrupt), which ``run`` answers by interrupting its prompt.
- Progress bars come from ``tqdm.auto``: text without ipywidgets (checked here), a widget with
  it (checked on the example notebook, tests/test_docs.py).

``jupyter()`` is the kernel both use: this venv's Python, from a kernel spec written into a
temporary folder, never a user's or the system's ``python3`` spec.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import api, ported_sleeper
from discomfort import WorkflowTools
from discomfort.images import image_grid

CELL_TIMEOUT = 120  # seconds, for each cell
WIDGET = "application/vnd.jupyter.widget-view+json"


# --- a kernel of this venv ----------------------------------------------------------------

def venv_kernel_manager(root: Path):
    """An AsyncKernelManager whose only kernel spec, ``python3``, runs ``sys.executable``
    (the kernel.json ``ipython kernel install --prefix`` writes, in ``root``; written here so
    that this process never imports IPython, which makes ~/.ipython). IPython's own files go
    under ``root`` too."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (this venv)", "language": "python",
        "env": {"IPYTHONDIR": str(root / "ipython")}}))
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)
    assert manager.kernel_spec.argv[0] == sys.executable, manager.kernel_spec.argv
    return manager


def notebook_client(notebook, root: Path, cwd: Path):
    """An nbclient NotebookClient for ``notebook`` on a venv kernel started in ``cwd``."""
    from nbclient import NotebookClient

    return NotebookClient(notebook, km=venv_kernel_manager(root), kernel_name="python3",
                          timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}})


@asynccontextmanager
async def jupyter(notebook, root: Path, cwd: Path):
    """A started kernel for ``notebook``'s cells (``client.async_execute_cell``), shut down
    on the way out."""
    client = notebook_client(notebook, root, cwd)
    async with client.async_setup_kernel(cleanup_kc=True):
        yield client


def outputs(cell, output_type: str) -> list:
    return [o for o in cell.outputs if o.output_type == output_type]


def stream(cell, name: str) -> str:
    return "".join(o.text for o in outputs(cell, "stream") if o.name == name)


def shown_png(cell) -> Image.Image:
    """The image/png a cell's last expression displayed."""
    [result] = outputs(cell, "execute_result")
    assert "image/png" in result.data, list(result.data)
    return Image.open(io.BytesIO(base64.b64decode(result.data["image/png"])))


# --- the stop button ------------------------------------------------------------------------

SLEEPER = ported_sleeper(300, 0.1)  # 30 s, unless stopped
INVERT = api(("DiscomfortInput", {"unique_id": "img"}),
             ("ImageInvert", {"image": ["1", 0]}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "img"}))


def _busy(comfy) -> list:
    queue = comfy.get("/queue")
    return queue["queue_running"] + queue["queue_pending"]


async def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.05)
    return await asyncio.to_thread(predicate)


@pytest.mark.server
async def test_the_stop_button_stops_the_prompt_and_the_context_stays_usable(comfy, tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        # A Jupyter without ipywidgets (the test extra has it): progress bars are text.
        f"""import sys
sys.modules["ipywidgets"] = None
import torch
from discomfort import Discomfort
discomfort = await Discomfort.create(url={comfy.url!r}, token={comfy.server.token!r})
context = discomfort.Context()
context.save("img", torch.rand(1, 4, 4, 3))""",
        f"await discomfort.run([{SLEEPER!r}], context=context)",
        f"""before = context.load("img")
result = await discomfort.run([{INVERT!r}], context=context, progress=False)
assert torch.allclose(result["img"], 1 - before) and "slept" not in context.list_keys()
print("the context is usable")""",
        "context.shutdown()\nawait discomfort.shutdown()",
    ]
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    setup, sleeper, after, cleanup = notebook.cells
    sleeper.metadata["tags"] = ["raises-exception"]  # nbclient records its error and goes on

    try:
        async with jupyter(notebook, tmp_path / "jupyter", tmp_path) as client:
            await client.async_execute_cell(setup, 0)
            running = asyncio.create_task(client.async_execute_cell(sleeper, 1))
            assert await _until(lambda: _busy(comfy), 30), "the prompt never started"
            await asyncio.sleep(0.5)  # well into the sleeper
            await client.km.interrupt_kernel()  # the stop button: SIGINT to the kernel
            interrupted = time.monotonic()
            await asyncio.wait_for(running, 20)
            assert await _until(lambda: not _busy(comfy), 5), "the prompt goes on after the stop"
            stopped_in = time.monotonic() - interrupted
            await client.async_execute_cell(after, 2)
            await client.async_execute_cell(cleanup, 3)
    finally:
        if _busy(comfy):  # a failed stop must not leave the session's server asleep
            comfy.post("/interrupt", {})

    [error] = outputs(sleeper, "error")
    # ipykernel cancels an awaiting cell's task: CancelledError (a KeyboardInterrupt from
    # another kernel would do too, if it stopped the prompt, which the queue check proves).
    assert error.ename in ("CancelledError", "KeyboardInterrupt"), error.ename
    assert stopped_in < 5 and not outputs(after, "error") and not outputs(cleanup, "error")
    assert stream(after, "stdout").strip() == "the context is usable"
    # tqdm.auto without ipywidgets: a text bar over the prompt's nodes, on stderr.
    assert not any(WIDGET in o.get("data", {}) for o in sleeper.outputs)
    assert re.search(r"prompt [0-9a-f]{8}: .*node", stream(sleeper, "stderr")), sleeper.outputs


# --- image_grid ---------------------------------------------------------------------------

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def solid(rgb, height=4, width=4) -> torch.Tensor:
    """A one-image IMAGE batch of one colour."""
    return torch.tensor(rgb, dtype=torch.float32).div(255).expand(1, height, width, 3).clone()


def test_images_are_laid_out_row_by_row_with_gaps():
    sheet = image_grid([solid(RED), solid(GREEN), solid(BLUE)], columns=2, gap=2)
    assert isinstance(sheet, Image.Image) and sheet.mode == "RGB"
    assert sheet.size == (4 + 2 + 4, 4 + 2 + 4)
    assert sheet.getpixel((1, 1)) == RED and sheet.getpixel((7, 1)) == GREEN
    assert sheet.getpixel((1, 7)) == BLUE
    assert sheet.getpixel((5, 1)) == WHITE and sheet.getpixel((7, 7)) == WHITE  # gap, empty cell


def test_every_image_of_a_batch_gets_a_cell_and_inputs_mix():
    batch = torch.cat([solid(RED), solid(GREEN)])                  # [2, H, W, 3]
    pil = Image.new("RGB", (4, 4), BLUE)
    array = solid(WHITE)[0].numpy()                                 # [H, W, C] numpy
    sheet = image_grid([batch, pil, array], gap=0)
    assert sheet.size == (8, 8)  # 4 images: ceil(sqrt(4)) = 2 columns
    assert [sheet.getpixel(xy) for xy in ((0, 0), (4, 0), (0, 4), (4, 4))] == [RED, GREEN, BLUE, WHITE]
    assert image_grid(batch, gap=0).size == (8, 4)   # a batch alone
    assert image_grid(pil).size == (4, 4)            # one PIL image alone
    assert image_grid({"a": pil, "b": pil}.values(), gap=0).size == (8, 4)  # any iterable


@pytest.mark.parametrize("count, columns, size", [
    (1, None, (1, 1)), (2, None, (2, 1)), (5, None, (3, 2)), (9, None, (3, 3)), (10, None, (4, 3)),
    (3, 1, (1, 3)), (3, 7, (3, 1)),  # never more columns than images
])
def test_default_columns_make_it_square_and_columns_are_capped(count, columns, size):
    sheet = image_grid([solid(RED, 1, 1)] * count, columns, gap=0)
    assert sheet.size == size


def test_scale_keeps_pixels_sharp_and_smaller_images_are_centred():
    checker = torch.tensor([[[0.0] * 3, [1.0] * 3], [[1.0] * 3, [0.0] * 3]])[None]  # 2x2
    sheet = image_grid(checker, scale=3)
    assert sheet.size == (6, 6)
    pixels = np.asarray(sheet)[..., 0]
    assert (pixels[:3, :3] == 0).all() and (pixels[:3, 3:] == 255).all()
    assert (pixels[3:, :3] == 255).all() and (pixels[3:, 3:] == 0).all()
    sheet = image_grid([solid(RED, 6, 6), solid(BLUE, 2, 2)], gap=0, background="black")
    assert sheet.size == (12, 6)
    assert sheet.getpixel((8, 2)) == BLUE and sheet.getpixel((9, 3)) == BLUE   # centred
    assert sheet.getpixel((7, 1)) == (0, 0, 0) and sheet.getpixel((10, 4)) == (0, 0, 0)


def test_transparency_shows_the_background_and_16_bit_keeps_its_range():
    rgba = torch.zeros(1, 2, 2, 4)
    rgba[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 1.0])     # one opaque red pixel
    sheet = image_grid(rgba, background="blue")
    assert sheet.getpixel((0, 0)) == RED and sheet.getpixel((1, 1)) == BLUE
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 1
    assert np.asarray(image_grid(palette, background="black")).tolist() == [[list(GREEN), [0, 0, 0]]]
    sixteen = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(image_grid(sixteen))[0, :, 0].tolist() == [0, 128, 255]


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="at least one image"):
        image_grid([])
    for bad in ({"columns": 0}, {"columns": True}, {"columns": 1.5}, {"scale": 0}, {"gap": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            image_grid(solid(RED), **bad)
    with pytest.raises(TypeError, match="PIL images, IMAGE tensors"):
        image_grid("picture.png")
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        image_grid(torch.rand(1, 8, 8))  # a MASK [B, H, W], not an IMAGE
    with pytest.raises(TypeError, match="float"):
        image_grid(torch.zeros(1, 2, 2, 3, dtype=torch.uint8))


def test_it_is_a_tool_and_jupyter_can_show_it():
    assert WorkflowTools.image_grid is image_grid
    png = image_grid(solid(RED))._repr_png_()  # what Jupyter calls for a cell's last expression
    assert Image.open(io.BytesIO(png)).size == (4, 4)
