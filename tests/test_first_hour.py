"""What a new user met in the first hour: each silent case now raises or warns, naming the fix.

Pure checks run on fixtures; the rest against the session's real server.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import api
from discomfort import WorkflowContext, WorkflowTools as Tools
from discomfort.errors import (
    DiscomfortWarning,
    PortTypeError,
    PromptValidationError,
    UnknownInputError,
    UnusedInputError,
    WorkflowError,
)
from discomfort.graph import discover_port_nodes, stitch_workflows, ui_to_api
from discomfort.inputs import check_inputs
from discomfort.protocol import Event, event_from_message
from discomfort.report import PromptReport

FIXTURES = Path(__file__).parent / "fixtures"
OBJECT_INFO = json.loads((FIXTURES / "object_info.json").read_text())
KALEIDOSCOPE = json.loads((FIXTURES.parent.parent / "workflows" / "kaleidoscope.json").read_text())
INVERT_UI = json.loads((FIXTURES / "run" / "invert_ui.json").read_text())




SEEDED = api(("DiscomfortInput", {"unique_id": "seed"}),
             ("EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": ["1", 0]}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "image"}),
             ("DiscomfortInput", {"unique_id": "loose"}))


# --- 1. a port link that the input it points at does not carry ------------------------------

def _misrouted() -> dict:
    """The canvas port's link to ImageBlend says slot 1, but that input holds another link."""
    workflow = copy.deepcopy(KALEIDOSCOPE)
    blend = next(n for n in workflow["nodes"] if n["id"] == 3)
    blend["inputs"][0]["link"] = None  # the port's link 2 is no longer carried by image1
    return workflow


def test_a_port_link_its_target_does_not_carry_is_an_error_naming_link_and_slot():
    for convert in (lambda w: ui_to_api(w, OBJECT_INFO), discover_port_nodes):
        with pytest.raises(WorkflowError) as caught:
            convert(_misrouted())
        message = str(caught.value)
        assert "link 2" in message and "'canvas'" in message and "node 3 (ImageBlend)" in message
        assert "'image1', which holds no link" in message and "Reconnect" in message


def test_a_link_to_a_slot_that_does_not_exist_names_the_inputs_there():
    workflow = copy.deepcopy(INVERT_UI)
    workflow["links"][0][4] = 5
    workflow["nodes"][1]["inputs"][0]["link"] = None
    with pytest.raises(WorkflowError, match=r"input slot 5 of node 2 \(ImageInvert\), which has no such "
                                            r"input \(its inputs: image\)"):
        ui_to_api(workflow, OBJECT_INFO)


# --- 2. unknown and unused input keys -------------------------------------------------------

def test_an_unknown_input_key_lists_the_ports_and_suggests_one():
    with pytest.raises(UnknownInputError) as caught:
        check_inputs({"sed": 4}, [("seeded.json", SEEDED)], OBJECT_INFO)
    assert str(caught.value) == ("no input port 'sed' in seeded.json; did you mean 'seed'? "
                                 "(the input ports are 'loose', 'seed')")
    assert isinstance(caught.value, KeyError)


def test_a_value_for_a_port_that_feeds_nothing_is_refused():
    with pytest.raises(UnusedInputError,
                       match=r"'loose' would change nothing: its port \(node 4 of seeded.json\)"):
        check_inputs({"loose": 1}, [("seeded.json", SEEDED)], OBJECT_INFO)


# --- 5. numpy images ------------------------------------------------------------------------

def test_numpy_arrays_for_tensor_ports_become_float_tensors_or_are_refused():
    invert = ui_to_api(INVERT_UI, OBJECT_INFO)
    ready = check_inputs({"img": np.full((1, 4, 4, 3), 0.25)}, [("invert", invert)], OBJECT_INFO)
    assert isinstance(ready["img"], torch.Tensor) and ready["img"].dtype == torch.float32
    with pytest.raises(PortTypeError,
                       match=r"uint8 array \(for 0-255 pixels: array.astype\('float32'\) / 255\)"):
        check_inputs({"img": np.zeros((1, 4, 4, 3), np.uint8)}, [("invert", invert)], OBJECT_INFO)
    with pytest.raises(PortTypeError, match=r"expected a float tensor \[B, H, W, C\]"):
        check_inputs({"img": np.zeros((4, 4, 3), np.float32)}, [("invert", invert)], OBJECT_INFO)


# --- 3. events name their node's class; the report counts by class --------------------------

def test_events_carry_the_class_type_and_unknown_fields_pass_through():
    classes = {"3": "KSampler"}
    event = event_from_message({"type": "executing", "data": {"node": "3", "prompt_id": "p",
                                                              "display_node": "3", "new": 1}}, classes)
    assert event == Event("executing", {"node": "3", "prompt_id": "p", "display_node": "3",
                                        "new": 1}, "3", "KSampler")
    error = event_from_message({"type": "execution_error", "data": {"prompt_id": "p",
                                                                    "node_id": 7, "node_type": "X"}})
    assert (error.node, error.class_type) == ("7", "X")
    assert event_from_message({"type": "status", "data": {"status": {}}}) is None
    assert event_from_message(["not", "a", "dict"]) is None


def test_a_prompt_report_lists_executed_cached_and_files():
    report = PromptReport("p", "w", {"1": "CheckpointLoaderSimple", "2": "KSampler", "3": "SaveImage"})
    for message in ({"type": "execution_cached", "data": {"nodes": ["1"], "prompt_id": "p"}},
                    {"type": "executing", "data": {"node": "2", "prompt_id": "p"}},
                    {"type": "executing", "data": {"node": "3", "prompt_id": "p"}},
                    {"type": "executed", "data": {"node": "3", "prompt_id": "p", "output": {
                        "images": [{"filename": "a.png", "subfolder": "s", "type": "output"}],
                        "animated": [False]}}}):
        report.on_event(event_from_message(message, report.class_types))
    assert report.cached_types() == {"CheckpointLoaderSimple": 1}
    assert report.executed_types() == {"KSampler": 1, "SaveImage": 1}
    [file] = report.files
    assert (file.filename, file.subfolder, file.type, file.class_type) == \
        ("a.png", "s", "output", "SaveImage")


# --- 4. adding ports to a saved workflow ----------------------------------------------------

def test_add_input_and_output_ports_to_a_saved_workflow():
    workflow = Tools.add_input_port(KALEIDOSCOPE, 3, "blend_factor", "factor", object_info=OBJECT_INFO)
    workflow = Tools.add_output_port(workflow, 2, "IMAGE", "rotated")
    assert KALEIDOSCOPE["last_node_id"] == 4  # the original is untouched
    ports = discover_port_nodes(workflow)
    assert ports["inputs"]["factor"]["type"] == "FLOAT"
    assert ports["outputs"]["rotated"]["type"] == "IMAGE"
    prompt = ui_to_api(workflow, OBJECT_INFO)
    port_id = str(ports["inputs"]["factor"]["node_ids"][0])
    assert prompt["3"]["inputs"]["blend_factor"] == [port_id, 0]
    assert (workflow["last_node_id"], workflow["last_link_id"]) == (6, 6)
    with pytest.raises(WorkflowError, match="already connected"):
        Tools.add_input_port(workflow, 3, "blend_factor", "again")
    with pytest.raises(WorkflowError, match="has no input or widget 'nope'"):
        Tools.add_input_port(KALEIDOSCOPE, 3, "nope", "x", object_info=OBJECT_INFO)
    with pytest.raises(WorkflowError, match=r"no output 'LATENT' \(its outputs: IMAGE\)"):
        Tools.add_output_port(KALEIDOSCOPE, 2, "LATENT", "x")


# --- 8. an empty model list says how to give the server models ------------------------------

def test_a_model_missing_from_an_empty_list_says_how_to_point_the_server_at_models():
    error = PromptValidationError({"message": "Prompt outputs failed validation"}, {"4": {
        "class_type": "CheckpointLoaderSimple", "errors": [{
            "type": "value_not_in_list", "message": "Value not in list",
            "details": "ckpt_name: 'sd.safetensors' not in []",
            "extra_info": {"input_name": "ckpt_name", "input_config": [[], {}],
                           "received_value": "sd.safetensors"}}]}})
    assert "model_paths={'checkpoints': '/path/to/checkpoints'}" in str(error)
    assert "upload_data(path, 'checkpoints')" in str(error)


# --- 10. silent stitches --------------------------------------------------------------------

def test_stitching_parts_in_the_wrong_order_warns():
    parts = [FIXTURES / "stitch" / "part_b_ui.json", FIXTURES / "stitch" / "part_a_ui.json"]
    with pytest.warns(DiscomfortWarning,
                      match=r"'img' of workflow 1 \(.*part_b_ui.json\) is written only by workflow 2"):
        stitch_workflows(parts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stitch_workflows(list(reversed(parts)))


def test_stitching_api_prompts_without_object_info_warns_that_types_were_not_checked():
    a = api(("EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 0}),
            ("DiscomfortOutput", {"value": ["1", 0], "unique_id": "img"}))
    b = api(("DiscomfortInput", {"unique_id": "img"}), ("ImageInvert", {"image": ["1", 0]}),
            ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "inv"}))
    with pytest.warns(DiscomfortWarning, match="no join's types were checked"):
        stitch_workflows([a, b])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stitch_workflows([a, b], object_info=OBJECT_INFO)


# --- against the real server ----------------------------------------------------------------

def _fingerprints(context: WorkflowContext) -> dict:
    return {key: context.fingerprint(key) for key in context.list_keys()}


@pytest.mark.server
async def test_refused_inputs_leave_the_context_exactly_as_it_was(app):
    invert = ui_to_api(INVERT_UI, await app.Worker.object_info())
    with app.Context() as context:
        context.save("img", torch.rand(1, 4, 4, 3))
        before = _fingerprints(context)
        bad_runs = [{"img": torch.rand(4, 4)}, {"img": np.zeros((1, 4, 4, 3), np.uint8)},
                    {"img": torch.rand(1, 4, 4, 3), "imgg": 1}, {"img": "text"}]
        for inputs in bad_runs:
            with pytest.raises((PortTypeError, UnknownInputError)):
                await app.run([invert], inputs=inputs, context=context, progress=False)
            assert _fingerprints(context) == before, inputs
        result = await app.run([invert], context=context, progress=False)  # the next run works
        assert result["inverted"].shape == (1, 4, 4, 3)


@pytest.mark.server
async def test_a_numpy_image_runs_through_a_port(app):
    result = await app.run([INVERT_UI], inputs={"img": np.full((1, 4, 4, 3), 0.25, np.float32)},
                           progress=False)
    assert torch.allclose(result["inverted"], torch.full((1, 4, 4, 3), 0.75))


@pytest.mark.server
async def test_an_added_input_port_feeds_its_widget(app):
    workflow = Tools.add_input_port(KALEIDOSCOPE, 3, "blend_factor", "factor",
                                    object_info=await app.Worker.object_info())
    canvas = torch.rand(1, 8, 8, 3)
    zero = await app.run([workflow], inputs={"canvas": canvas, "factor": 0.0}, progress=False)
    assert torch.allclose(zero["canvas"], canvas, atol=1e-6)  # blend factor 0: image1 unchanged
    half = await app.run([workflow], inputs={"canvas": canvas, "factor": 1.0}, progress=False)
    assert not torch.allclose(half["canvas"], canvas)


@pytest.mark.server
async def test_the_report_counts_executed_and_cached_nodes_by_class(app):
    invert = ui_to_api(INVERT_UI, await app.Worker.object_info())
    image = torch.rand(1, 4, 4, 3)
    await app.run([invert, invert], inputs={"img": image}, progress=False)
    first, second = app.last_run.prompts
    assert first.executed_types()["ImageInvert"] + first.cached_types()["ImageInvert"] == 1
    assert second.cached_types() == {"DiscomfortInput": 1, "ImageInvert": 1}  # same value: cached
    assert second.executed_types() == {"DiscomfortOutput": 1}  # output ports always run


@pytest.mark.server
async def test_an_empty_model_folder_is_explained(app):
    prompt = api(("ControlNetLoader", {"control_net_name": "canny.safetensors"}),
                 ("DiscomfortOutput", {"value": ["1", 0], "unique_id": "controlnet"}))
    with pytest.raises(PromptValidationError) as caught:
        await app.run([prompt], progress=False)
    assert "model_paths={'controlnet': '/path/to/controlnet'}" in str(caught.value)


def test_the_progress_bar_counts_only_nodes_that_run_and_ends_full():
    from discomfort.orchestrator import _ProgressBar, _runnable

    prompt = ui_to_api(INVERT_UI, OBJECT_INFO)
    prompt["9"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                           "batch_size": 1, "color": 0}}
    assert _runnable(prompt, OBJECT_INFO) == 3  # the stray EmptyImage never runs
    bar = _ProgressBar(3, "p" * 8)
    for message in ({"type": "execution_cached", "data": {"nodes": ["1"], "prompt_id": "p"}},
                    {"type": "executing", "data": {"node": "3", "prompt_id": "p"}},
                    {"type": "execution_success", "data": {"prompt_id": "p"}}):
        bar.on_event(event_from_message(message))
    assert (bar.bar.n, bar.bar.total) == (3, 3)  # a lazy default that never ran: still full
    bar.close()


@pytest.mark.server
async def test_saved_files_outlive_a_managed_server_with_output_dir(settings, tmp_path):
    from discomfort import Discomfort

    saver = api(("EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 255}),
                ("SaveImage", {"images": ["1", 0], "filename_prefix": "kept/red"}))
    async with await Discomfort.create(**settings, output_dir=tmp_path / "out") as discomfort:
        await discomfort.run([saver], progress=False)
        [saved] = discomfort.last_run.images
    path = tmp_path / "out" / saved.subfolder / saved.filename  # still there after shutdown
    assert path.is_file() and (saved.subfolder, saved.type) == ("kept", "output")
