"""Real generation on the real server, with the tiny SD checkpoint: a model loaded once, loops
over prompts and seeds, LoRA, img2img, stitching, the CLI, and the files output nodes write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_CHECKPOINT, TINY_LORA, app_settings
from discomfort import Discomfort, WorkflowTools as Tools

pytestmark = pytest.mark.server
WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SMALL = {"steps": 4, "width": 64, "height": 64}  # 64x64, 4 steps: ~0.3 s a sample on CPU
PROMPTS = ["a lighthouse at dusk", "a fox in the snow"]
NEGATIVE = "text, watermark"


def wf(name: str) -> str:
    return str(WORKFLOWS / f"{name}.json")


def executions(app, class_type: str) -> int:
    return app.last_run.executions(class_type)


async def txt2img(app, checkpoint: str, prompt: str, seed: int) -> torch.Tensor:
    """The same graph as one whole prompt: the reference every split run must equal."""
    result = await app.run([wf("txt2img")], progress=False, inputs={
        "checkpoint": checkpoint, "prompt": prompt, "negative": NEGATIVE, "seed": seed, **SMALL})
    return result["image"]


async def test_a_checkpoint_loaded_once_then_a_prompt_and_seed_loop(app, fresh_checkpoint):
    loads = texts = 0
    with app.Context() as context:
        await app.run([wf("load_checkpoint")], inputs={"checkpoint": fresh_checkpoint},
                      context=context, progress=False)
        loads += executions(app, "CheckpointLoaderSimple")
        assert context.load("model")["format"] == "discomfort-recipe/1"  # a recipe, never a model
        source = context.get_storage_info("model")["source"]
        assert source == {"class_type": "CheckpointLoaderSimple", "slot": 0,
                          "inputs": {"ckpt_name": fresh_checkpoint}}
        images = {}
        for seed in range(10):
            prompt = PROMPTS[seed % 2]
            result = await app.run([wf("sample")], context=context, progress=False, inputs={
                "prompt": prompt, "negative": NEGATIVE, "seed": seed, **SMALL})
            loads += executions(app, "CheckpointLoaderSimple")
            texts += executions(app, "CLIPTextEncode")
            images[seed] = result["image"]
    assert loads == 1          # the loader ran in load_checkpoint only
    assert texts == 3          # once per distinct text: two prompts and the negative
    assert len({images[s].sum().item() for s in images}) == 10  # every seed its own image
    for seed in (0, 1, 7):
        assert torch.equal(images[seed], await txt2img(app, fresh_checkpoint, PROMPTS[seed % 2], seed))

    with app.Context() as fresh:  # a new context: the same recipe, still loaded
        await app.run([wf("load_checkpoint"), wf("sample")], context=fresh, progress=False,
                      inputs={"checkpoint": fresh_checkpoint, "prompt": PROMPTS[0],
                              "negative": NEGATIVE, "seed": 0, **SMALL})
        assert executions(app, "CheckpointLoaderSimple") == 0
        assert torch.equal(fresh.load("image"), images[0])


async def test_a_lora_strength_sweep_loads_the_checkpoint_once(app, fresh_checkpoint):
    sample = {"prompt": PROMPTS[0], "negative": NEGATIVE, "seed": 5, **SMALL}
    with app.Context() as context:
        await app.run([wf("load_checkpoint"), wf("sample")], context=context, progress=False,
                      inputs={"checkpoint": fresh_checkpoint, **sample})
        loads = executions(app, "CheckpointLoaderSimple")
        base_image = context.load("image")
        base = {key: context.load(key) for key in ("model", "clip")}
        lora_runs, images = 0, {}
        for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
            for key, recipe in base.items():  # each strength on the plain model, not stacked
                context.save(key, recipe, pass_by="ref")
            result = await app.run([wf("lora"), wf("sample")], context=context, progress=False,
                                   inputs={"lora": TINY_LORA, "strength": strength, **sample})
            loads += executions(app, "CheckpointLoaderSimple")
            lora_runs += executions(app, "LoraLoader")
            images[strength] = result["image"]
    assert loads == 1
    assert lora_runs == 5
    assert torch.equal(images[0.0], base_image)      # strength 0 is no LoRA at all
    assert not torch.equal(images[1.0], base_image)  # the LoRA does something


async def test_img2img_feedback_and_alternating_workflows_on_one_model(app, fresh_checkpoint):
    edit = {"prompt": PROMPTS[1], "denoise": 0.6, "seed": 2, "steps": 4}
    with app.Context() as context:
        start = (await app.run([wf("load_checkpoint"), wf("sample")], context=context,
                               progress=False, inputs={"checkpoint": fresh_checkpoint,
                                                       "prompt": PROMPTS[0], "negative": NEGATIVE,
                                                       "seed": 1, **SMALL}))["image"]
        loads = executions(app, "CheckpointLoaderSimple")
        # the output port "image" feeds the input port "image": 5 edits, each on the last
        looped = await app.run([wf("img2img")], context=context, iterations=5, progress=False,
                               inputs={"image": start, **edit})
        loads += executions(app, "CheckpointLoaderSimple")
        assert len(app.last_run.prompts) == 5
        # txt2img-style and img2img, alternating on the same model: never reloaded
        for seed in range(2):
            await app.run([wf("sample")], context=context, progress=False,
                          inputs={"prompt": PROMPTS[0], "negative": NEGATIVE, "seed": seed, **SMALL})
            loads += executions(app, "CheckpointLoaderSimple")
            await app.run([wf("img2img")], context=context, progress=False, inputs=edit)
            loads += executions(app, "CheckpointLoaderSimple")
        assert loads == 1
    with app.Context() as by_hand:  # the same five edits, one run() each
        await app.run([wf("load_checkpoint")], context=by_hand, progress=False,
                      inputs={"checkpoint": fresh_checkpoint})
        image = start
        for _ in range(5):
            image = (await app.run([wf("img2img")], context=by_hand, progress=False,
                                   inputs={"image": image, **edit}))["image"]
    assert torch.equal(looped["image"], image)
    assert not torch.equal(image, start)


async def test_load_checkpoint_and_sample_stitched_give_the_same_image(app, fresh_checkpoint):
    joined = Tools.stitch_workflows([wf("load_checkpoint"), wf("sample")],
                                    delete_input_ports=True, delete_output_ports=True)
    assert sorted(joined["outputs"]) == ["image"]
    inputs = {"checkpoint": fresh_checkpoint, "prompt": PROMPTS[0], "negative": NEGATIVE,
              "seed": 4, **SMALL}
    result = await app.run([joined["stitched_workflow"]], inputs=inputs, progress=False)
    assert len(app.last_run.prompts) == 1
    assert torch.equal(result["image"], await txt2img(app, fresh_checkpoint, PROMPTS[0], 4))


def default_graph(checkpoint: str, seed: int) -> dict:
    """ComfyUI's default txt2img graph in API format, with no port at all."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPTS[0], "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 4, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "gen/default", "images": ["8", 0]}},
    }


async def check_saved_images_come_back(discomfort) -> None:
    result = await discomfort.run([default_graph(TINY_CHECKPOINT, 8)], progress=False)
    assert result == {}  # no output port: the workflow's own SaveImage is the output
    [saved] = discomfort.last_run.images
    assert (saved.class_type, saved.type, saved.subfolder) == ("SaveImage", "output", "gen")
    [tensor] = await discomfort.load_images()
    [picture] = await discomfort.load_images([saved], as_pil=True)
    assert tensor.shape == (1, 64, 64, 3) and picture.size == (64, 64)
    reference = await txt2img(discomfort, TINY_CHECKPOINT, PROMPTS[0], 8)
    assert torch.equal(tensor, torch.floor(reference * 255).clamp(0, 255) / 255)  # SaveImage truncates


async def test_saved_images_come_back_from_a_workflow_without_output_ports(app):
    await check_saved_images_come_back(app)


async def test_saved_images_come_back_from_an_attached_server(comfy):
    async with await Discomfort.create(url=comfy.url, token=comfy.server.token) as attached:
        await check_saved_images_come_back(attached)


def test_the_cli_writes_the_image(tmp_path, model_dir):
    config = tmp_path / "server.json"
    config.write_text(json.dumps(app_settings(model_dir)))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "discomfort", "--config", str(config), "run", wf("txt2img"),
         "--set", "prompt=a lighthouse at dusk", "--set", "seed=3",
         "--set", f"checkpoint={TINY_CHECKPOINT}", "--set", "steps=4", "--set", "width=64",
         "--set", "height=64", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "image: Tensor [1, 64, 64, 3] torch.float32" in done.stdout
    from discomfort.images import open_image_as_tensor

    assert open_image_as_tensor(out / "image.png").shape == (1, 64, 64, 3)


def test_cache_modes_read_from_a_command_line():
    from discomfort.connector import cache_mode

    assert cache_mode(["main.py", "--cache-lru", "32"]) == "lru 32"
    assert cache_mode(["main.py", "--cache-lru=0"]) == "classic"
    assert cache_mode(["main.py", "--cache-ram", "6"]) == "ram"
    assert cache_mode(["main.py", "--listen"]) == "default"


async def test_an_attached_server_that_may_evict_models_is_named_once(comfy, app, caplog):
    assert app.Worker.cache_mode == "lru 32"  # a managed server keeps models loaded
    async with await Discomfort.create(url=comfy.url, token=comfy.server.token) as attached:
        assert attached.Worker.cache_mode == "default"  # started without a --cache flag
    warnings = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(warnings) == 1 and "can be evicted" in warnings[0] and comfy.url in warnings[0]
