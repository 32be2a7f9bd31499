"""Pass-by-reference on the real server: a model loaded once, reused across runs and workflows."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import torch

from discomfort import Discomfort, WorkflowContext
from discomfort.errors import ExecutionError
from discomfort.graph.refs import is_recipe
from refs_support import LoaderCount, ref_workflow as workflow

pytestmark = pytest.mark.server


async def fresh_model(app, model_dir: Path, tmp_path: Path) -> str:
    """A copy of the tiny model under a new name: nothing of it is in the server's cache yet."""
    name = f"tiny-{uuid.uuid4().hex[:8]}.safetensors"
    shutil.copyfile(model_dir / "upscale_models" / "tiny-compact-x2.safetensors", tmp_path / name)
    await app.Worker.upload_data(tmp_path / name, folder_type="upscale_models")
    return name


async def test_a_model_loads_once_across_a_loop_of_runs(app, model_dir, tmp_path):
    model = await fresh_model(app, model_dir, tmp_path)
    count = LoaderCount()
    count.loader_ids.add("1")  # the loader's id in load_model.json
    with WorkflowContext() as ctx:
        await app.run(workflow("load_model", model), context=ctx, on_event=count, progress=False)
        recipe = ctx.load("upscaler")
        assert is_recipe(recipe) and ctx.get_storage_info("upscaler")["pass_by"] == "ref"
        count.loader_ids.add(recipe["output"][0])  # its id wherever the recipe is spliced
        for i in range(10):
            image = torch.rand(1, 8 + i, 8, 3)
            upscaled = (await app.run(workflow("upscale"), inputs={"image": image}, context=ctx,
                                      on_event=count, progress=False))["upscaled"]
            whole = (await app.run(workflow("whole", model), inputs={"image": image},
                                   progress=False))["upscaled"]
            assert upscaled.shape == (1, 2 * (8 + i), 16, 3) and torch.equal(upscaled, whole)
    with WorkflowContext() as new_context:  # a new run loads "the model" again: from the cache
        await app.run(workflow("load_model", model), context=new_context, on_event=count, progress=False)
        await app.run(workflow("upscale"), inputs={"image": torch.rand(1, 4, 4, 3)},
                      context=new_context, on_event=count, progress=False)
    assert count.count == 1


async def test_a_recipe_passed_in_inputs_goes_by_reference(app, model_dir, tmp_path):
    model = await fresh_model(app, model_dir, tmp_path)
    with WorkflowContext() as ctx:
        await app.run(workflow("load_model", model), context=ctx, progress=False)
        recipe = ctx.load("upscaler")
    image = torch.rand(1, 6, 6, 3)
    with WorkflowContext() as other:  # a new run, given the recipe as a plain input
        upscaled = (await app.run(workflow("upscale"), inputs={"image": image, "upscaler": recipe},
                                  context=other, progress=False))["upscaled"]
        assert other.get_storage_info("upscaler")["pass_by"] == "ref"
    whole = (await app.run(workflow("whole", model), inputs={"image": image}, progress=False))["upscaled"]
    assert torch.equal(upscaled, whole)


async def test_alternating_workflows_keep_the_model_loaded(app, model_dir, tmp_path):
    model = await fresh_model(app, model_dir, tmp_path)
    count = LoaderCount()
    count.loader_ids.add("1")
    with WorkflowContext() as ctx:
        await app.run(workflow("load_model", model), context=ctx, on_event=count, progress=False)
        count.loader_ids.add(ctx.load("upscaler")["output"][0])
        for _ in range(5):
            ctx.save("image", torch.rand(1, 8, 8, 3))
            plain = await app.run(workflow("upscale"), context=ctx, on_event=count, progress=False)
            inverted = await app.run(workflow("upscale_inverted"), context=ctx, on_event=count,
                                     progress=False)
            assert torch.allclose(inverted["inverted"], 1 - plain["upscaled"])
    assert count.count == 1


async def test_a_ref_key_loads_as_its_recipe_and_cannot_be_exported(app, model_dir, tmp_path):
    model = await fresh_model(app, model_dir, tmp_path)
    with WorkflowContext() as ctx:
        result = await app.run(workflow("load_model", model), context=ctx, progress=False)
        recipe = result["upscaler"]
        assert is_recipe(recipe) and recipe == ctx.load("upscaler")
        assert [n["class_type"] for n in recipe["nodes"].values()] == ["UpscaleModelLoader"]
        with pytest.raises(TypeError):
            ctx.export_data("upscaler", tmp_path / "model.pkl")


async def test_refs_nested_two_deep_and_saved_by_the_user(app, model_dir, tmp_path):
    model = await fresh_model(app, model_dir, tmp_path)

    def passing(src: str, dst: str) -> dict:
        return {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": src}},
                "2": {"class_type": "DiscomfortOutput", "inputs": {"value": ["1", 0], "unique_id": dst}}}

    with WorkflowContext() as ctx:
        await app.run(workflow("load_model", model), context=ctx, progress=False)
        ctx.save("middle", passing("upscaler", "middle"), pass_by="ref")
        ctx.save("outer", passing("middle", "outer"), pass_by="ref")
        prompt = workflow("upscale")
        prompt["1"]["inputs"]["unique_id"] = "outer"
        image = torch.rand(1, 4, 4, 3)
        nested = (await app.run(prompt, inputs={"image": image}, context=ctx, progress=False))["upscaled"]
        direct = (await app.run(workflow("upscale"), context=ctx, progress=False))["upscaled"]
        assert nested.shape == (1, 8, 8, 3) and torch.equal(nested, direct)


async def test_a_recipe_replays_the_values_it_was_made_from(app):
    make = {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "seed_image"}},
            "2": {"class_type": "DiscomfortTestWrap", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "box"}}}
    use = {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "box"}},
           "2": {"class_type": "DiscomfortTestUnwrap", "inputs": {"box": ["1", 0]}},
           "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "out"}}}
    with WorkflowContext() as ctx:
        first = torch.rand(1, 4, 4, 3)
        await app.run(make, inputs={"seed_image": first}, context=ctx, progress=False)
        ctx.save("seed_image", torch.zeros(1, 4, 4, 3))  # today's value differs...
        out = (await app.run(use, context=ctx, progress=False))["out"]
        assert torch.equal(out, first)                   # ...the recipe uses its own


async def test_a_val_port_fed_a_model_fails_before_any_pickle(app, model_dir, tmp_path):
    model = await fresh_model(app, model_dir, tmp_path)
    by_value = Discomfort(app.Worker, dict(app.pass_by_rules, UPSCALE_MODEL="val"))
    with pytest.raises(ExecutionError, match="not data.*\"ref\""):
        await by_value.run(workflow("load_model", model), progress=False)
