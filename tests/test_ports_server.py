"""The port nodes inside a real ComfyUI server, sharing runs with this test process."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from discomfort import WorkflowContext
from discomfort.binding import BINDING_INPUT, RUN_KEY, input_binding, output_binding
from discomfort.store import default_root

pytestmark = pytest.mark.server


def invert_prompt(src: str = "img", dst: str = "out") -> dict:
    return {
        "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": src}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": dst}},
    }


def cached_nodes(comfy, entry) -> set[str]:
    return set(comfy.message(entry, "execution_cached")["nodes"])


def test_handshake_and_node_types(comfy):
    info = comfy.get("/discomfort/info")
    assert info["root"] == str(default_root()) and info["package"] == "discomfort"
    nodes = comfy.get("/object_info")
    assert nodes["DiscomfortInput"]["output"] == ["*"]
    assert nodes["DiscomfortOutput"]["output_node"] is True
    assert "DiscomfortTestFail" in nodes  # the test pack loads beside the package


def test_values_go_in_and_come_out_through_the_server(comfy):
    with WorkflowContext() as ctx:
        image = torch.rand(1, 8, 8, 3)
        ctx.save("img", image)
        ctx.save("text", "hello", use_ram=False)
        prompt = invert_prompt()
        prompt["4"] = {"class_type": "DiscomfortInput", "inputs": {"unique_id": "text"}}
        prompt["5"] = {"class_type": "StringConcatenate",
                       "inputs": {"string_a": ["4", 0], "string_b": "world", "delimiter": ", "}}
        prompt["6"] = {"class_type": "DiscomfortOutput", "inputs": {"value": ["5", 0], "unique_id": "joined"}}
        entry = comfy.run(prompt, ctx)
        assert comfy.status_of(entry) == "execution_success"
        assert torch.allclose(ctx.load("out"), 1 - image)
        assert ctx.load("joined") == "hello, world"
        assert entry["outputs"]["3"]["discomfort"][0]["stamp"] == ctx.get_stamp("out")


def test_cache_keeps_unchanged_values_and_reruns_changed_ones(comfy):
    image = torch.rand(1, 16, 16, 3)
    with WorkflowContext() as first:
        first.save("img", image)
        comfy.run(invert_prompt(), first)
        stamp = first.get_stamp("out")
        again = comfy.run(invert_prompt(), first)
        assert "2" in cached_nodes(comfy, again)          # ImageInvert did not run again
        assert "3" not in cached_nodes(comfy, again)      # the output port always runs...
        assert first.get_stamp("out") != stamp            # ...and stamps this prompt
        assert torch.allclose(first.load("out"), 1 - image)
    with WorkflowContext() as second:                     # the same value in a new run
        second.save("img", image.clone())
        entry = comfy.run(invert_prompt(), second)
        assert {"1", "2"} <= cached_nodes(comfy, entry)
        assert torch.allclose(second.load("out"), 1 - image)
        changed = torch.rand(1, 16, 16, 3)
        second.save("img", changed)
        entry = comfy.run(invert_prompt(), second)
        assert not {"1", "2"} & cached_nodes(comfy, entry)
        assert torch.allclose(second.load("out"), 1 - changed)


def test_a_list_output_is_stored_whole(comfy):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 3, "color": 255}},
        "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 1}},
        "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "batches"}},
    }
    with WorkflowContext() as ctx:
        assert comfy.status_of(comfy.run(prompt, ctx)) == "execution_success"
        batches = ctx.load("batches")
        assert isinstance(batches, list) and [b.shape for b in batches] == [(1, 4, 4, 3)] * 3


def test_a_port_returns_its_own_copy(comfy):
    prompt = invert_prompt()
    prompt["2"] = {"class_type": "DiscomfortTestMutate", "inputs": {"image": ["1", 0]}}
    with WorkflowContext() as ctx:
        image = torch.rand(1, 4, 4, 3)
        ctx.save("img", image)
        comfy.run(prompt, ctx)
        assert torch.equal(ctx.load("img"), image)  # the node mutated its copy, not the store
        assert torch.allclose(ctx.load("out"), image * 0.5)


def test_editor_mode_passes_the_default_through_and_stores_nothing(comfy):
    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
        "2": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "n", "default": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "n_out"}},
    }
    entry = comfy.run(prompt)
    assert comfy.status_of(entry) == "execution_success"
    assert entry["outputs"]["3"]["text"] == ["7"]
    assert entry["outputs"]["4"]["discomfort"] == [{"unique_id": "n_out", "stored": False}]


def test_a_bound_input_without_its_key_uses_the_default(comfy):
    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 11}},
        "2": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "absent", "default": ["1", 0]}},
        "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "got"}},
    }
    with WorkflowContext() as ctx:
        comfy.run(prompt, ctx)
        assert ctx.load("got") == 11


def error_of(comfy, entry) -> str:
    assert comfy.status_of(entry) == "execution_error"
    error = comfy.message(entry, "execution_error")
    return f"{error['exception_type']}: {error['exception_message']}"


def test_an_unbound_input_with_nothing_connected_is_a_clear_error(comfy):
    prompt = {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "lonely"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    message = error_of(comfy, comfy.run(prompt))
    assert "'lonely'" in message and "nothing connected to 'default'" in message


def test_bound_errors_name_what_is_wrong(comfy):
    with WorkflowContext() as ctx:
        ctx.save("img", torch.rand(1, 4, 4, 3))
        location = {"extra_pnginfo": {RUN_KEY: {"run": ctx.run_id, "dir": ctx.contexts_dir_name}}}

        def run_raw(binding: str, uid: str, extra: dict) -> dict:
            prompt = invert_prompt(src=uid)
            prompt["1"]["inputs"][BINDING_INPUT] = binding
            prompt["3"]["inputs"][BINDING_INPUT] = output_binding("s")
            return comfy.server.run_prompt(prompt, extra, timeout=60)

        cases = [
            (input_binding("b2:00"), "ghost", location, "has no such key"),
            (input_binding(None), "ghost", location, "is not stored in the run"),
            ("garbage", "img", location, "BindingError: input binding is not JSON"),
            (input_binding(ctx.fingerprint("img")), "img", {}, "extra_pnginfo.discomfort_run"),
            (input_binding("b2:stale"), "img", location, "changed after the prompt was queued"),
            (input_binding(ctx.fingerprint("img")), "img",
             {"extra_pnginfo": {RUN_KEY: {"run": "../../etc", "dir": "contexts"}}}, "not allowed"),
        ]
        for binding, uid, extra, expected in cases:
            entry = run_raw(binding, uid, extra)
            assert expected in error_of(comfy, entry), (binding, uid, expected)


def test_values_survive_a_sigkilled_server(start_comfy):
    server = start_comfy()
    with WorkflowContext() as ctx:
        image = torch.rand(1, 8, 8, 3)
        ctx.save("img", image)
        ctx.save("disk_img", image * 0.25, use_ram=False)
        prompt = invert_prompt()
        prompt["4"] = {"class_type": "DiscomfortInput", "inputs": {"unique_id": "disk_img"}}
        prompt["5"] = {"class_type": "DiscomfortOutput", "inputs": {"value": ["4", 0], "unique_id": "copied"}}
        assert server.status_of(server.run(prompt, ctx)) == "execution_success"
        os.killpg(server.server.pid, signal.SIGKILL)  # the group we started, nothing else
        server.server.stop()
        assert torch.equal(ctx.load("img"), image)
        assert torch.equal(ctx.load("disk_img"), image * 0.25)
        assert torch.allclose(ctx.load("out"), 1 - image)
        assert torch.equal(ctx.load("copied"), image * 0.25)
        info = ctx.get_storage_info("out")
        assert info is not None and info["storage_type"] == "ram"


def test_the_tiny_upscale_model_runs_behind_a_port(comfy):
    prompt = {
        "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
        "2": {"class_type": "UpscaleModelLoader",
              "inputs": {"model_name": "tiny-compact-x2.safetensors"}},
        "3": {"class_type": "ImageUpscaleWithModel",
              "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "DiscomfortOutput", "inputs": {"value": ["3", 0], "unique_id": "up"}},
    }
    with WorkflowContext() as ctx:
        ctx.save("img", torch.rand(1, 8, 8, 3))
        assert comfy.status_of(comfy.run(prompt, ctx)) == "execution_success"
        assert ctx.load("up").shape == (1, 16, 16, 3)


def test_the_test_pack_fails_on_demand(comfy):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
        "2": {"class_type": "DiscomfortTestFail",
              "inputs": {"image": ["1", 0], "fail": True, "message": "on purpose"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    assert error_of(comfy, comfy.run(prompt)) == "ValueError: on purpose\n"
