"""Recipes as pure functions: capture, content-addressed ids, splicing, pruning."""

import pytest

from discomfort.errors import WorkflowError
from discomfort.graph.refs import (
    capture_recipe,
    expand_refs,
    freeze_inputs,
    frozen_key,
    is_recipe,
    prune_to_output,
    splice,
)

CHECKPOINT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
    "2": {"class_type": "DiscomfortOutput", "inputs": {"value": ["1", 0], "unique_id": "model"}},
    "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["1", 1], "unique_id": "clip"}},
    "4": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
    "5": {"class_type": "DiscomfortOutput", "inputs": {"value": ["4", 0], "unique_id": "image"}},
}
USER = {
    "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "model"}},
    "2": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "clip"}},
    "3": {"class_type": "SomeSampler", "inputs": {"model": ["1", 0], "clip": ["2", 0], "steps": 4}},
    "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
}


def test_refs_from_one_producer_share_one_node():
    model, clip = capture_recipe(CHECKPOINT, "2"), capture_recipe(CHECKPOINT, "3")
    assert is_recipe(model) and model["nodes"] == clip["nodes"]
    assert model["output"][1] == 0 and clip["output"][1] == 1
    prompt = expand_refs(USER, {"model": model, "clip": clip}.get)
    loaders = [nid for nid, n in prompt.items() if n["class_type"] == "CheckpointLoaderSimple"]
    assert len(loaders) == 1 and "1" not in prompt and "2" not in prompt
    assert prompt["3"]["inputs"]["model"] == [loaders[0], 0]
    assert prompt["3"]["inputs"]["clip"] == [loaders[0], 1]


def test_recipe_ids_depend_on_content_only():
    def shift(x):
        return [str(int(x[0]) + 10), x[1]] if isinstance(x, list) else x

    renumbered = {str(int(k) + 10): dict(v, inputs={n: shift(x) for n, x in v["inputs"].items()})
                  for k, v in CHECKPOINT.items()}
    assert capture_recipe(renumbered, "12") == capture_recipe(CHECKPOINT, "2")
    other = dict(CHECKPOINT, **{"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "n"}}})
    assert capture_recipe(other, "2")["output"] != capture_recipe(CHECKPOINT, "2")["output"]


def test_only_the_ports_ancestors_are_captured_and_pruned():
    recipe = capture_recipe(CHECKPOINT, "5")
    assert [n["class_type"] for n in recipe["nodes"].values()] == ["EmptyImage"]
    assert set(prune_to_output(CHECKPOINT, "clip")) == {"1", "3"}
    with pytest.raises(WorkflowError, match="no DiscomfortOutput"):
        prune_to_output(CHECKPOINT, "nothing")


def test_frozen_inputs_and_bad_recipes():
    prompt = {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
              "2": {"class_type": "Wrap", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "box"}}}
    recipe = capture_recipe(freeze_inputs(prompt, {"img": "b2:abc"}), "3")
    uids = [n["inputs"].get("unique_id") for n in recipe["nodes"].values()]
    assert frozen_key("b2:abc") in uids and "img" not in uids
    with pytest.raises(WorkflowError, match="not a"):
        splice(prompt, "1", {"nodes": {}})
    with pytest.raises(WorkflowError, match="nested more than"):
        loop = {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "self"}},
                "2": {"class_type": "DiscomfortOutput", "inputs": {"value": ["1", 0], "unique_id": "self"}}}
        expand_refs(loop, {"self": loop}.get)
