"""``make demo``: a headless ComfyUI with the port nodes; a value goes in from Python, through
a workflow, and comes back out.

The workflow is ``workflows/invert.json``: DiscomfortInput "image" -> ImageInvert ->
DiscomfortOutput "inverted".
"""

from __future__ import annotations

import json
import time

import torch

from .binding import bind_prompt
from .locate import PACKAGE_ROOT
from .server import ComfyServer
from .store import WorkflowContext

WORKFLOW = PACKAGE_ROOT / "workflows" / "invert.json"


def gradient(size: int = 64) -> torch.Tensor:
    """A [1, H, W, 3] image: red rises left to right, green top to bottom."""
    ramp = torch.linspace(0, 1, size)
    image = torch.zeros(1, size, size, 3)
    image[0, :, :, 0] = ramp[None, :]
    image[0, :, :, 1] = ramp[:, None]
    return image


def main() -> None:
    prompt = json.loads(WORKFLOW.read_text())
    print("Starting a headless ComfyUI with the Discomfort nodes loaded...", flush=True)
    started = time.monotonic()
    with ComfyServer() as server, WorkflowContext() as context:
        print(f"  ready at {server.url} in {time.monotonic() - started:.1f} s")
        image = gradient()
        context.save("image", image)
        bound, extra, _ = bind_prompt(prompt, context)
        entry = server.run_prompt(bound, extra)
        status = entry["status"]["messages"][-1][0]
        if status != "execution_success":
            raise SystemExit(f"the workflow failed: {entry['status']['messages'][-1][1]}")
        inverted = context.load("inverted")
        print(f"  sent 'image' {tuple(image.shape)}, mean {image.mean():.3f}")
        print(f"  got 'inverted' {tuple(inverted.shape)}, mean {inverted.mean():.3f}")
        print(f"  inverted == 1 - image: {torch.allclose(inverted, 1 - image)}")
        print(f"  stored in the run: {context.list_keys()}")


if __name__ == "__main__":
    main()
