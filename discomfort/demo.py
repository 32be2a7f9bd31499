"""``make demo``: a loop with state, driven from Python through a headless ComfyUI.

``workflows/kaleidoscope.json`` is an editor-format workflow: DiscomfortInput "canvas" ->
(blend with itself rotated 90 degrees) -> DiscomfortOutput "canvas". Because the output and the
input share a unique_id, each run feeds the next. Python decides when to stop: once the
picture no longer changes, it has become four-fold symmetric.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .locate import PACKAGE_ROOT
from .orchestrator import Discomfort

WORKFLOW = PACKAGE_ROOT / "workflows" / "kaleidoscope.json"


def starting_canvas(size: int = 128) -> torch.Tensor:
    """A [1, H, W, 3] image with no symmetry: colour ramps and an off-centre disc."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = (((x - 0.3) ** 2 + (y - 0.35) ** 2) < 0.04).float()
    return torch.stack([x, y * (1 - disc), disc], dim=-1)[None]


async def main(out_dir: Path, max_iterations: int = 30, still: float = 0.002) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    print("Starting a headless ComfyUI with the Discomfort nodes loaded...", flush=True)
    started = time.monotonic()
    async with await Discomfort.create() as discomfort:
        print(f"  ready at {discomfort.Worker.url} in {time.monotonic() - started:.1f} s")
        save = discomfort.Tools.save_comfy_image_to_disk
        with discomfort.Context() as context:
            canvas = starting_canvas()
            context.save("canvas", canvas)
            save(canvas, out_dir / "step_00.png")
            steps = tqdm(range(1, max_iterations + 1), desc="kaleidoscope", unit="run")
            for step in steps:
                result = await discomfort.run([WORKFLOW], context=context, progress=False)
                change = (result["canvas"] - canvas).abs().mean().item()
                canvas = result["canvas"]
                save(canvas, out_dir / f"step_{step:02d}.png")
                steps.set_postfix(change=f"{change:.4f}")
                if change < still:  # a plain Python conditional decides the loop
                    break
            steps.close()
    symmetric = torch.allclose(canvas, torch.rot90(canvas, 1, dims=(1, 2)), atol=0.01)
    print(f"  {step} runs; last change {change:.4f}; four-fold symmetric: {symmetric}")
    print(f"  pictures of every step in {out_dir}/")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    asyncio.run(main(parser.parse_args().out))


if __name__ == "__main__":
    cli()
