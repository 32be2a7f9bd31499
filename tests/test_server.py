"""The managed-server core: every way a start can fail says why, and stop leaves nothing behind."""

from __future__ import annotations

import time

import psutil
import pytest

from discomfort.errors import ComfyStartError
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
    assert psutil.Process(pid).is_running()
    server.stop()
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not state.exists()


def test_the_test_pack_sleeps_and_honours_interrupt(comfy):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 1}},
        "2": {"class_type": "DiscomfortTestSleep", "inputs": {"image": ["1", 0], "steps": 600, "step_seconds": 0.05}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    import threading

    def interrupt_when_running():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not comfy.get("/queue")["queue_running"]:
            time.sleep(0.05)
        time.sleep(0.3)
        comfy.post("/interrupt", {})

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    started = time.monotonic()
    entry = comfy.server.run_prompt(prompt, timeout=60)
    assert comfy.status_of(entry) == "execution_interrupted"
    assert time.monotonic() - started < 25  # far less than the 30 s it would sleep
