"""The managed-server core: every way a start can fail says why, stop leaves nothing behind,
and run_prompt (the synchronous driver of the protocol core) raises what the connector raises."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import psutil
import pytest

from conftest import api
from discomfort.errors import (
    ComfyServerDied,
    ComfyStartError,
    ExecutionError,
    PromptLost,
    PromptValidationError,
    RunTimeout,
)
from discomfort.server import ComfyServer

pytestmark = pytest.mark.server


def test_a_server_that_dies_at_start_raises_with_its_log_tail():
    server = ComfyServer(extra_args=["--no-such-flag"])
    with pytest.raises(ComfyStartError, match="exited while starting") as caught:
        server.start()
    assert "unrecognized arguments: --no-such-flag" in caught.value.log_tail
    assert server.process is None


def test_a_server_without_the_port_nodes_fails_the_handshake():
    server = ComfyServer(extra_args=["--disable-all-custom-nodes"])
    with pytest.raises(ComfyStartError, match="Discomfort nodes did not load"):
        server.start()
    assert server.process is None


def test_a_start_deadline_is_kept():
    started = time.monotonic()
    with pytest.raises(ComfyStartError, match="did not answer .* within 0.5 s"):
        ComfyServer(start_timeout=0.5).start()
    assert time.monotonic() - started < 30


def test_stop_ends_the_whole_process_group_and_is_idempotent(comfy):
    server = ComfyServer().start()
    pid, state = server.pid, server.state_dir
    assert pid is not None and state is not None
    assert psutil.Process(pid).is_running()
    server.stop()
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not state.exists()


def sleeper(steps: int, step_seconds: float, color: int = 1) -> dict:
    return api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": color}),
               ("DiscomfortTestSleep", {"image": ["1", 0], "steps": steps,
                                        "step_seconds": step_seconds}),
               ("PreviewImage", {"images": ["2", 0]}))


def failing(message: str) -> dict:
    return api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": 2}),
               ("DiscomfortTestFail", {"image": ["1", 0], "fail": True, "message": message}),
               ("PreviewImage", {"images": ["2", 0]}))


def test_the_test_pack_sleeps_and_honours_interrupt(comfy):
    def interrupt_when_running():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not comfy.get("/queue")["queue_running"]:
            time.sleep(0.05)
        time.sleep(0.3)
        comfy.post("/interrupt", {})

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    started = time.monotonic()
    entry = comfy.server.run_prompt(sleeper(600, 0.05), timeout=60)
    assert comfy.status_of(entry) == "execution_interrupted"
    assert time.monotonic() - started < 25  # far less than the 30 s it would sleep


# --- run_prompt: the synchronous driver of the protocol core raises the connector's types -----

def test_run_prompt_reports_outcomes_and_raises_typed_errors(comfy):
    entry = comfy.server.run_prompt(failing("sync"), timeout=60)
    assert comfy.status_of(entry) == "execution_error"  # an outcome, recorded: returned
    with pytest.raises(ExecutionError, match="sync"):  # ... or raised, as the connector does
        comfy.server.run_prompt(failing("sync, checked"), timeout=60, check=True)
    assert comfy.server.jobs_api is False  # 0.3.75: /history and /queue
    refused = sleeper(1, 0.0)
    refused["1"]["inputs"]["width"] = "wide"
    with pytest.raises(PromptValidationError, match="node 1 \\(EmptyImage\\)"):
        comfy.server.run_prompt(refused)
    started = time.monotonic()
    with pytest.raises(RunTimeout, match="within 0.5 s; it was interrupted"):
        comfy.server.run_prompt(sleeper(200, 0.05), timeout=0.5)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 10
    while comfy.get("/queue")["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert comfy.get("/queue")["queue_running"] == []  # stopped on the server, not left running


def test_run_prompt_names_a_prompt_deleted_from_the_queue_as_lost(comfy):
    blocker = str(uuid.uuid4())
    comfy.post("/prompt", {"prompt": sleeper(40, 0.05, color=3), "prompt_id": blocker})
    caught = []

    def run():
        try:
            comfy.server.run_prompt(sleeper(1, 0.0, color=4), timeout=60)
        except Exception as exc:  # handed to the test thread, which checks its type
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not comfy.get("/queue")["queue_pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    [[_, waiting, *_]] = comfy.get("/queue")["queue_pending"]
    comfy.post("/queue", {"delete": [waiting]})  # another client removes it
    thread.join(30)
    assert len(caught) == 1 and type(caught[0]) is PromptLost, caught
    assert "neither queued nor in the history" in str(caught[0])
    comfy.post("/interrupt", {"prompt_id": blocker})


def test_run_prompt_on_a_server_killed_mid_prompt_raises_server_died(start_comfy):
    client = start_comfy()
    server = client.server

    def kill_when_running():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not client.get("/queue")["queue_running"]:
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)  # its own process group: we started it

    threading.Thread(target=kill_when_running, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(ComfyServerDied):
        server.run_prompt(sleeper(600, 0.05), timeout=60)
    assert time.monotonic() - started < 20
