"""What the pass-by-reference tests and ``benchmarks/ref_bench.py`` share: a generated
upscale model, the ref fixture workflows, and a count of the loader's executions.
(Import-safe: no side effects, unlike conftest.py.)"""

from __future__ import annotations

import json
from pathlib import Path

REFS = Path(__file__).resolve().parent / "fixtures" / "refs"


def make_compact_upscaler(path: Path, feats: int = 4, convs: int = 1, scale: int = 2) -> Path:
    """A random-weight Real-ESRGAN Compact model; the defaults give the 3.4 kB test model."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    sd = {"body.0.weight": rand(feats, 3, 3, 3), "body.0.bias": torch.zeros(feats),
          "body.1.weight": torch.full((feats,), 0.25)}
    for i in range(convs):
        sd[f"body.{2 + 2 * i}.weight"] = rand(feats, feats, 3, 3)
        sd[f"body.{2 + 2 * i}.bias"] = torch.zeros(feats)
        sd[f"body.{3 + 2 * i}.weight"] = torch.full((feats,), 0.25)
    sd[f"body.{2 + 2 * convs}.weight"] = rand(3 * scale * scale, feats, 3, 3)
    sd[f"body.{2 + 2 * convs}.bias"] = torch.zeros(3 * scale * scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def ref_workflow(name: str, model: str | None = None) -> dict:
    """``tests/fixtures/refs/<name>.json``, its UpscaleModelLoader set to ``model``."""
    prompt = json.loads((REFS / f"{name}.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "UpscaleModelLoader" and model:
            node["inputs"]["model_name"] = model
    return prompt


class LoaderCount:
    """Counts the loader's executions across prompts, from the server's events."""

    def __init__(self, *loader_ids: str):
        self.loader_ids: set[str] = set(loader_ids)
        self.count = 0

    def __call__(self, event) -> None:
        if event.type == "executing" and event.data.get("node") in self.loader_ids:
            self.count += 1
