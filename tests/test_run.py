"""Discomfort.run and the connector against a real ComfyUI server: loops, conditionals, failures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from conftest import api, ported_sleeper
from discomfort import Discomfort, WorkflowContext
from discomfort.errors import (
    ComfyServerDied,
    ExecutionError,
    ExecutionInterrupted,
    MissingInputsError,
    PortTypeError,
    PromptValidationError,
    UnknownNodeTypesError,
    WorkflowError,
)

pytestmark = pytest.mark.server


INVERT = api(("DiscomfortInput", {"unique_id": "img"}),
             ("ImageInvert", {"image": ["1", 0]}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "img"}))
APPEND = api(("DiscomfortInput", {"unique_id": "text"}),
             ("StringConcatenate", {"string_a": ["1", 0], "string_b": "a", "delimiter": ""}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "text"}))
LENGTH = api(("DiscomfortInput", {"unique_id": "text"}),
             ("StringLength", {"string": ["1", 0]}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "length"}))


def sleeper(steps: int, step_seconds: float = 0.05, color: int = 0) -> dict:
    return api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": color}),
               ("DiscomfortTestSleep", {"image": ["1", 0], "steps": steps, "step_seconds": step_seconds}),
               ("PreviewImage", {"images": ["2", 0]}))


async def test_a_value_carried_through_a_5_iteration_loop(app):
    image = torch.rand(1, 8, 8, 3)
    with WorkflowContext() as ctx:
        result = await app.run([INVERT, APPEND], inputs={"img": image, "text": ""}, iterations=5,
                               context=ctx, progress=False)
        assert result["text"] == "aaaaa" and ctx.load("text") == "aaaaa"
        assert torch.allclose(result["img"], 1 - image)  # inverted an odd number of times
        assert len(app.last_run.prompt_ids) == 10


async def test_a_python_conditional_chooses_the_next_workflow(app):
    with WorkflowContext() as ctx:
        ctx.save("text", "ab")
        chosen = []
        for _ in range(4):
            length = (await app.run([LENGTH], context=ctx, progress=False))["length"]
            if length < 4:
                chosen.append("append")
                await app.run([APPEND], context=ctx, progress=False)
            else:
                chosen.append("stop")
                break
        assert chosen == ["append", "append", "stop"] and ctx.load("text") == "abaa"


async def test_the_result_and_a_temporary_context(app):
    from discomfort.store import default_root

    runs = default_root() / "contexts"
    before = set(os.listdir(runs))
    result = await app.run(INVERT, inputs={"img": torch.zeros(1, 2, 2, 3)}, progress=False)
    assert torch.equal(result["img"], torch.ones(1, 2, 2, 3))
    assert set(os.listdir(runs)) <= before  # the temporary run is gone


async def test_ui_format_workflows_run_after_conversion(app):
    from pathlib import Path

    ui = json.loads((Path(__file__).parent / "fixtures" / "run" / "invert_ui.json").read_text())
    result = await app.run(ui, inputs={"img": torch.zeros(1, 2, 2, 3)}, progress=True)
    assert torch.equal(result["inverted"], torch.ones(1, 2, 2, 3))


async def test_a_validation_error_carries_node_errors(app):
    bad = api(("EmptyImage", {"width": "abc", "height": 4, "batch_size": 1, "color": 0}),
              ("PreviewImage", {"images": ["1", 0]}))
    with pytest.raises(PromptValidationError) as caught:
        await app.run(bad, progress=False)
    assert caught.value.node_errors["1"]["errors"][0]["type"] == "invalid_input_type"
    assert "width" in str(caught.value)


async def test_an_execution_error_names_node_type_and_message(app):
    failing = api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": 0}),
                  ("DiscomfortTestFail", {"image": ["1", 0], "fail": True, "message": "kaboom"}),
                  ("PreviewImage", {"images": ["2", 0]}))
    with pytest.raises(ExecutionError) as caught:
        await app.run(failing, progress=False)
    error = caught.value
    assert (error.node_id, error.node_type, error.exception_type) == ("2", "DiscomfortTestFail", "ValueError")
    assert error.exception_message == "kaboom" and "raise ValueError(message)" in error.traceback
    # and everything is usable for the next run
    assert (await app.run(LENGTH, inputs={"text": "abc"}, progress=False))["length"] == 3


async def test_interrupt_one_prompt_while_another_waits(app):
    worker = app.Worker
    running = await worker.queue(sleeper(400, color=1))
    waiting = await worker.queue(sleeper(2, color=2))
    queued = await worker.queue(sleeper(400, color=3))
    await worker.interrupt(queued)            # still pending: removed from the queue
    with pytest.raises(ExecutionInterrupted):
        await worker.wait(queued, timeout=30)
    events = []
    started = time.monotonic()
    await asyncio.sleep(0.5)
    await worker.interrupt(running)           # running: interrupted
    with pytest.raises(ExecutionInterrupted):
        await worker.wait(running, timeout=30, on_event=events.append)
    entry = await worker.wait(waiting, timeout=30)
    assert entry["status"]["status_str"] == "success"
    assert time.monotonic() - started < 15


async def test_events_report_progress_and_cached_nodes(app):
    events = []
    prompt = sleeper(3, 0.01, color=7)
    await app.Worker.run_workflow(prompt, use_workflow_json=False, on_event=events.append)
    kinds = [e.type for e in events]
    assert "execution_start" in kinds and "execution_cached" in kinds and kinds[-1] == "execution_success"
    progress = [e.data for e in events if e.type == "progress"]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 3 and progress[-1]["node"] == "2"
    assert any(e.type == "executing" and e.data["node"] == "2" for e in events)
    events.clear()
    entry = await app.Worker.run_workflow(prompt, use_workflow_json=False, on_event=events.append)
    cached = next(e for e in events if e.type == "execution_cached").data["nodes"]
    assert set(cached) == {"1", "2", "3"} and entry["status"]["status_str"] == "success"


async def test_history_entries_of_a_managed_server_are_deleted(app):
    prompt_id = await app.Worker.queue(sleeper(1, 0.0, color=9))
    await app.Worker.wait(prompt_id)  # read: deleted at once
    assert app.Worker.server.request(f"/history/{prompt_id}") == {}
    from discomfort.connector import HISTORY_BATCH

    with WorkflowContext() as ctx:    # not read by run(): deleted in batches
        await app.run(APPEND, inputs={"text": ""}, iterations=2 * HISTORY_BATCH, context=ctx, progress=False)
    await asyncio.sleep(0.2)
    history = app.Worker.server.request("/history?max_items=1000")
    assert len(set(app.last_run.prompt_ids) & set(history)) < HISTORY_BATCH


async def test_an_unknown_node_type_lists_every_missing_type(app):
    prompt = api(("NoSuchNode", {}), ("AlsoMissing", {}), ("PreviewImage", {"images": ["1", 0]}))
    with pytest.raises(UnknownNodeTypesError) as caught:
        await app.run(prompt, progress=False)
    assert caught.value.missing == ["AlsoMissing", "NoSuchNode"]


async def test_a_malformed_json_file_is_a_workflow_error(app, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"1": {"class_type": ')
    with pytest.raises(WorkflowError, match="broken.json"):
        await app.run(str(path), progress=False)


async def test_a_missing_input_value_fails_before_queueing(app):
    with pytest.raises(MissingInputsError, match="'img'"):
        await app.run(INVERT, progress=False)


async def test_a_wrongly_typed_input_is_refused_naming_its_port(app):
    with pytest.raises(PortTypeError, match="'img' feeds IMAGE"):
        await app.run(INVERT, inputs={"img": torch.rand(8, 8)}, progress=False)
    with pytest.raises(PortTypeError, match="'text' feeds STRING"):
        await app.run(LENGTH, inputs={"text": 42}, progress=False)


async def test_uploads_inputs_and_models(app, tmp_path, model_dir):
    from discomfort import WorkflowTools

    picture = tmp_path / "pic.png"
    WorkflowTools.save_comfy_image_to_disk(torch.full((1, 4, 6, 3), 0.5), picture)
    uploaded = await app.Worker.upload_data(picture, is_ephemeral=True)
    model = await app.Worker.upload_data(model_dir / "upscale_models" / "tiny-compact-x2.safetensors",
                                         folder_type="upscale_models", overwrite=True)
    prompt = api(("LoadImage", {"image": uploaded["name"]}),
                 ("UpscaleModelLoader", {"model_name": model["name"]}),
                 ("ImageUpscaleWithModel", {"upscale_model": ["2", 0], "image": ["1", 0]}),
                 ("DiscomfortOutput", {"value": ["3", 0], "unique_id": "up"}))
    result = await app.run(prompt, progress=False)
    assert result["up"].shape == (1, 8, 12, 3)
    assert await app.Worker.fetch_file(uploaded["name"], folder_type="input") == picture.read_bytes()
    with pytest.raises(FileNotFoundError):
        await app.Worker.fetch_file("nope.png")
    await app.Worker.free()


async def test_the_server_sigkilled_mid_run_raises_fast_and_the_next_run_works(settings):
    discomfort = await Discomfort.create(**settings)
    try:
        first_pid = discomfort.Worker.server.pid
        run = asyncio.create_task(discomfort.run(sleeper(600), progress=False))
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        os.killpg(first_pid, signal.SIGKILL)
        with pytest.raises(ComfyServerDied):
            await run
        assert time.monotonic() - killed_at < 10
        result = await discomfort.run(LENGTH, inputs={"text": "four"}, progress=False)
        assert result["length"] == 4 and discomfort.Worker.server.pid != first_pid
    finally:
        await discomfort.shutdown()


async def test_two_connectors_run_two_servers_at_once(app, settings):
    other = await Discomfort.create(**settings)
    try:
        assert other.Worker.url != app.Worker.url
        results = await asyncio.gather(
            app.run(LENGTH, inputs={"text": "abc"}, progress=False),
            other.run(LENGTH, inputs={"text": "abcdef"}, progress=False))
        assert [r["length"] for r in results] == [3, 6]
    finally:
        await other.shutdown()
    await other.shutdown()  # idempotent
    assert other.Worker.server is None


def test_no_server_survives_shutdown_or_a_sigkilled_owner(settings):
    code = f"""
import asyncio
from discomfort import Discomfort
async def main():
    d = await Discomfort.create(**{settings!r})
    print(d.Worker.server.pid, flush=True)
    if __import__("sys").argv[1] == "shutdown":
        await d.shutdown()
        print("down", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""
    for mode in ("shutdown", "sigkill"):
        owner = subprocess.Popen([sys.executable, "-c", code, mode], stdout=subprocess.PIPE, text=True)
        try:
            server_pid = int(owner.stdout.readline())
            if mode == "shutdown":
                assert owner.stdout.readline().strip() == "down"
            else:
                owner.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 20
            while psutil.pid_exists(server_pid) and time.monotonic() < deadline:
                if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                    break
                time.sleep(0.2)
            alive = (psutil.pid_exists(server_pid)
                     and psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE)
            assert not alive, f"server {server_pid} outlived its owner ({mode})"
        finally:
            owner.kill()
            owner.wait()


async def test_randomized_seeds_change_per_iteration_as_in_the_editor(app):
    from pathlib import Path

    workflow = str(Path(__file__).parent / "fixtures" / "run" / "random_int_ui.json")
    with WorkflowContext() as ctx:
        await app.run(workflow, iterations=3, context=ctx, seed=7, progress=False)
        randomized, changes = ctx.load("n"), app.last_run.widget_changes
        await app.run(workflow, iterations=3, context=ctx, seed=7, fixed_seeds=True, progress=False)
        assert ctx.load("n") == 5 and app.last_run.widget_changes == []
    # iteration 1 used the saved 5; the editor's randomize then ran before iterations 2 and 3
    assert [c[0]["old"] for c in changes] == [5, changes[0][0]["new"]]
    assert randomized == changes[1][0]["new"] != 5


async def test_attach_to_a_running_server_by_url(comfy):
    from discomfort import ComfyConnector

    async with await ComfyConnector.create(url=comfy.url, token=comfy.server.token) as worker:
        assert not worker.managed and worker.server is None
        attached = Discomfort(worker)
        result = await attached.run(LENGTH, inputs={"text": "attached"}, progress=False)
        assert result["length"] == 8
        prompt_id = attached.last_run.prompt_ids[-1]
        assert prompt_id in comfy.get(f"/history/{prompt_id}")  # not ours to delete
    assert comfy.server.alive()  # closing an attached connector leaves the server running


async def test_attaching_to_a_server_with_another_store_root_says_how_to_fix_it(comfy, monkeypatch, tmp_path,
                                                                               caplog):
    from discomfort import ComfyConnector

    monkeypatch.setenv("DISCOMFORT_ROOT", str(tmp_path / "elsewhere"))
    # It works, its values over HTTP (tests/test_remote.py), and the log says how to share memory.
    async with await ComfyConnector.create(url=comfy.url, token=comfy.server.token) as connector:
        assert connector.remote is not None
    assert f"DISCOMFORT_ROOT={comfy.get('/discomfort/info')['root']}" in caplog.text


async def test_partly_invalid_prompts_are_refused_not_half_run(app):
    prompt = api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": 5}),
                 ("PreviewImage", {"images": ["1", 0]}),
                 ("EmptyImage", {"width": -5, "height": 4, "batch_size": 1, "color": 5}),
                 ("PreviewImage", {"images": ["3", 0]}))
    with pytest.raises(PromptValidationError) as caught:
        await app.Worker.run_workflow(prompt, use_workflow_json=False)
    assert "3" in caught.value.node_errors
    queue = app.Worker.server.request("/queue")
    assert not queue["queue_running"] and not queue["queue_pending"]


async def test_large_binary_frames_and_the_event_iterator(app):
    prompt = api(("EmptyImage", {"width": 1024, "height": 1024, "batch_size": 1, "color": 0}),
                 ("ImageAddNoise", {"image": ["1", 0], "seed": 3, "strength": 1.0}),
                 ("SaveImageWebsocket", {"images": ["2", 0]}))
    prompt_id = await app.Worker.queue(prompt)
    kinds = [event.type async for event in app.Worker.events(prompt_id, timeout=60)]
    assert kinds[-1] == "execution_success"  # a >1 MiB preview frame did not break the socket


async def test_a_run_timeout_interrupts_and_raises(app):
    from discomfort.errors import RunTimeout

    started = time.monotonic()
    with pytest.raises(RunTimeout, match="interrupted"):
        await app.run(sleeper(600, color=11), timeout=1.5, progress=False)
    assert time.monotonic() - started < 15
    assert (await app.run(LENGTH, inputs={"text": "ok"}, progress=False))["length"] == 2


def test_server_settings_are_checked():
    from discomfort.connector import load_connector_config
    from discomfort.errors import ConfigError

    with pytest.raises(ConfigError, match="allow_remote_ports"):
        load_connector_config(listen="0.0.0.0")
    assert load_connector_config(listen="0.0.0.0", allow_remote_ports=True).listen == "0.0.0.0"
    with pytest.raises(ConfigError, match="unknown server setting"):
        load_connector_config(cache_size=3)
    with pytest.raises(ConfigError, match="port_range"):
        load_connector_config(port_range=[1])


def test_server_settings_are_one_typed_object_from_a_file_and_keywords(tmp_path):
    import dataclasses

    from discomfort.connector import ServerSettings, load_connector_config

    path = tmp_path / "server.json"
    path.write_text(json.dumps({"cache_lru": 4, "extra_args": ["--fast"], "listen": "127.0.0.1"}))
    settings = load_connector_config(path, cache_lru=8, url=None)  # None: not given
    assert isinstance(settings, ServerSettings)
    assert (settings.cache_lru, settings.extra_args, settings.unresponsive_timeout) == (8, ["--fast"], 30.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.cache_lru = 1  # type: ignore[misc]
    # What `serve` records and compares: plain JSON, equal for equal settings.
    assert settings.as_json() == json.loads(json.dumps(settings.as_json()))
    assert load_connector_config().as_json() == ServerSettings().as_json()
    assert load_connector_config(path).as_json() != load_connector_config().as_json()


async def test_a_failed_start_keeps_the_log_it_points_to(settings):
    import re
    from pathlib import Path

    from discomfort.errors import ComfyStartError

    with pytest.raises(ComfyStartError) as caught:
        await Discomfort.create(extra_args=["--no-such-flag"], **settings)
    log = Path(re.search(r"log: (\S+comfyui\.log)", str(caught.value)).group(1))
    assert "unrecognized arguments: --no-such-flag" in log.read_text()
    shutil.rmtree(log.parent)


def _running(client) -> list:
    queue = client.get("/queue")
    return queue["queue_running"] + queue["queue_pending"]


async def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_a_cancelled_run_stops_its_prompt_and_the_context_stays_usable(app):
    with app.Context() as context:
        context.save("img", torch.rand(1, 4, 4, 3))
        run = asyncio.create_task(app.run([ported_sleeper(100, 0.1)], context=context, progress=False))
        assert await _until(lambda: app.last_run and app.last_run.prompt_ids, 10)
        await asyncio.sleep(0.5)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        queue = app.Worker.server.request("/queue")
        assert not queue["queue_running"] and not queue["queue_pending"]  # stopped, not left running
        before = context.load("img")
        result = await app.run([INVERT], context=context, progress=False)
        assert torch.allclose(result["img"], 1 - before) and "slept" not in context.list_keys()


async def test_ctrl_c_in_a_script_interrupts_the_prompt_on_the_server(comfy):
    script = f"""
import asyncio, torch
from discomfort import Discomfort
async def main():
    async with await Discomfort.create(url={comfy.url!r}, token={comfy.server.token!r}) as d:
        print("running", flush=True)
        await d.run([{ported_sleeper(200, 0.1)!r}], inputs={{"img": torch.rand(1, 4, 4, 3)}}, progress=False)
asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        assert await _until(lambda: _running(comfy), 20)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert await _until(lambda: not _running(comfy), 5)  # 200 x 0.1 s would still be running
