"""Stitched partial workflows run as one prompt on the real server, with the whole's result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from discomfort import WorkflowContext
from discomfort.graph import stitch_workflows

pytestmark = pytest.mark.server
STITCH = Path(__file__).parent / "fixtures" / "stitch"


def part(name: str) -> str:
    return str(STITCH / f"{name}.json")


@pytest.mark.parametrize("delete_ports", [False, True])
async def test_two_and_three_stitched_parts_give_the_whole_workflows_output(app, delete_ports):
    whole = (await app.run(part("whole_ui"), progress=False))["out"]
    three = stitch_workflows([part("part_a_ui"), part("part_b_ui"), part("part_c_ui")],
                             delete_input_ports=delete_ports, delete_output_ports=delete_ports)
    stitched = await app.run(three["stitched_workflow"], progress=False)
    assert torch.equal(stitched["out"], whole)
    with WorkflowContext() as ctx:  # the parts one by one, handing values through the context
        for name in ("part_a_ui", "part_b_ui"):
            await app.run(part(name), context=ctx, progress=False)
        two = stitch_workflows([part("part_a_ui"), part("part_b_ui")],
                               delete_input_ports=delete_ports, delete_output_ports=delete_ports)
        stitched_two = await app.run(two["stitched_workflow"], progress=False)
        assert torch.equal(stitched_two["inv"], ctx.load("inv"))
        assert torch.equal(ctx.load("inv"), 1 - ctx.load("img"))
