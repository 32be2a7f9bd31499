"""The graph core's one pass that prepares a prompt, on a dict-backed store: no server, no I/O."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from discomfort.binding import BINDING_INPUT, RUN_KEY, parse_input_binding, parse_output_binding
from discomfort.errors import MissingInputsError, PortTypeError
from discomfort.graph.prepare import prepare_prompt
from discomfort.graph.refs import capture_recipe, frozen_key, is_recipe

OBJECT_INFO = json.loads((Path(__file__).parent / "fixtures" / "object_info.json").read_text())


@dataclass(frozen=True)
class Entry:
    pass_by: str = "val"
    kind: str = "json"
    size: int = 10
    shape: tuple | None = None
    dtype: str | None = None


class DictStore:
    """What the pass reads of a store, from a dict: ``{key: (value, Entry)}``."""

    run_id, contexts_dir_name = "run-test", "contexts"

    def __init__(self, items: dict):
        self.items = items
        self.loaded: list[str] = []

    def list_keys(self):
        return list(self.items)

    def entry(self, key):
        return self.items[key][1]

    def load(self, key):
        self.loaded.append(key)
        return self.items[key][0]

    def fingerprint(self, key):
        return "fp-" + key


def port(uid, default=None):
    inputs = {"unique_id": uid}
    if default is not None:
        inputs["default"] = default
    return {"class_type": "DiscomfortInput", "inputs": inputs}


def out(uid, source):
    return {"class_type": "DiscomfortOutput", "inputs": {"unique_id": uid, "value": source}}


LATENT = {
    "1": port("width"),
    "2": {"class_type": "EmptyLatentImage", "inputs": {"width": ["1", 0], "height": 64,
                                                        "batch_size": 1}},
    "3": out("latent", ["2", 0]),
}


def test_a_small_widget_scalar_is_inlined_and_the_ports_are_bound():
    ready = prepare_prompt(LATENT, DictStore({"width": (96, Entry())}), OBJECT_INFO)
    assert "1" not in ready.prompt and ready.prompt["2"]["inputs"]["width"] == 96
    binding = parse_output_binding(ready.prompt["3"]["inputs"][BINDING_INPUT])
    assert binding.stamp == ready.stamp and binding.pass_by == "val"
    assert ready.extra_data["extra_pnginfo"][RUN_KEY] == {"run": "run-test", "dir": "contexts"}
    assert [p.unique_id for p in ready.outputs] == ["latent"] and not ready.recipes
    assert LATENT["2"]["inputs"]["width"] == ["1", 0]  # the input prompt is left alone


def test_every_missing_input_is_named_before_anything_else():
    prompt = dict(LATENT, **{"4": port("seed"), "5": {"class_type": "KSampler", "inputs": {
        "seed": ["4", 0]}}})
    with pytest.raises(MissingInputsError) as caught:
        prepare_prompt(prompt, DictStore({}), OBJECT_INFO)
    assert caught.value.missing == ["seed", "width"]


def test_a_large_value_is_neither_loaded_nor_inlined_and_its_default_is_cut():
    prompt = {"1": port("image", default=["9", 0]),
              "9": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": out("inverted", ["2", 0])}
    store = DictStore({"image": (None, Entry(kind="torch", size=10**7, shape=(1, 8, 8, 3),
                                             dtype="float32"))})
    ready = prepare_prompt(prompt, store, OBJECT_INFO)
    assert store.loaded == [] and "default" not in ready.prompt["1"]["inputs"]
    assert parse_input_binding(ready.prompt["1"]["inputs"][BINDING_INPUT]).fingerprint == "fp-image"


def test_a_stored_tensor_of_the_wrong_shape_is_refused_from_its_entry():
    prompt = {"1": port("image"), "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    store = DictStore({"image": (None, Entry(kind="torch", size=64, shape=(8, 8), dtype="float32"))})
    with pytest.raises(PortTypeError, match=r"input port 'image' feeds IMAGE .*\[8, 8\]"):
        prepare_prompt(prompt, store, OBJECT_INFO)
    numpy = DictStore({"image": (None, Entry(kind="numpy", size=64, shape=(1, 8, 8, 3),
                                             dtype="float32"))})
    with pytest.raises(PortTypeError, match="numpy"):
        prepare_prompt(prompt, numpy, OBJECT_INFO)


CHECKPOINT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    "2": out("model", ["1", 0]),
}


def test_a_model_output_gets_its_recipe_and_a_stored_ref_is_spliced_back():
    ready = prepare_prompt(CHECKPOINT, DictStore({}), OBJECT_INFO)
    recipe = ready.recipes["model"]
    assert is_recipe(recipe)
    assert parse_output_binding(ready.prompt["2"]["inputs"][BINDING_INPUT]).pass_by == "ref"
    assert ready.recipe_sources()["model"] == {"class_type": "CheckpointLoaderSimple", "slot": 0,
                                               "inputs": {"ckpt_name": "a.safetensors"}}
    reader = {"1": port("model"), "2": {"class_type": "CLIPSetLastLayer", "inputs": {
        "clip": ["1", 0], "stop_at_clip_layer": -1}}}
    spliced = prepare_prompt(reader, DictStore({"model": (recipe, Entry(pass_by="ref"))}),
                             OBJECT_INFO).prompt
    assert "1" not in spliced and spliced["2"]["inputs"]["clip"] == recipe["output"]
    assert spliced[recipe["output"][0]]["class_type"] == "CheckpointLoaderSimple"


def test_a_recipe_made_from_a_stored_value_reads_a_frozen_copy_made_before_queueing():
    prompt = {"1": port("name"),
              "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["1", 0]}},
              "3": out("model", ["2", 0])}
    store = DictStore({"name": ("b.safetensors", Entry(size=10**6))})  # too big to inline
    ready = prepare_prompt(prompt, store, OBJECT_INFO)
    assert ready.copies == {frozen_key("fp-name"): "name"}
    reads = [n["inputs"]["unique_id"] for n in ready.recipes["model"]["nodes"].values()
             if n["class_type"] == "DiscomfortInput"]
    assert reads == [frozen_key("fp-name")]
    assert ready.recipes["model"] == capture_recipe(
        {"1": port(frozen_key("fp-name")), **{k: v for k, v in prompt.items() if k != "1"}}, "3")
