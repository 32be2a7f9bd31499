"""What the pool tests and the Ray tests both run: the shipped sampler workflows, a job that
fails on purpose, and small pictures to tell jobs apart."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import api

REPO = Path(__file__).resolve().parents[1]
LOAD = str(REPO / "workflows" / "load_checkpoint.json")
SAMPLE = str(REPO / "workflows" / "sample.json")
FAILER = api(("DiscomfortInput", {"unique_id": "img"}),
             ("DiscomfortInput", {"unique_id": "fail"}),
             ("DiscomfortTestFail", {"image": ["1", 0], "fail": ["2", 0],
                                     "message": "this job fails on purpose"}),
             ("DiscomfortOutput", {"value": ["3", 0], "unique_id": "out"}))


def picture(value: float) -> torch.Tensor:
    return torch.full((1, 8, 8, 3), value)
