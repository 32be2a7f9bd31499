"""Record what a real ComfyUI says about prompts, for the protocol's unit tests.

Starts a managed server (the library's ComfyServer, with the test node pack), runs a few
prompts through a raw websocket and plain HTTP (no Discomfort client in between), and writes
one JSON file per case to ``tests/fixtures/protocol/``: every websocket text message of the
session in order, the ``POST /prompt`` reply, the ``/queue`` and ``/history`` replies while the
prompt ran (``queue_running``, ``history_running``, asked when ``execution_start`` arrived) and
after it ended (``queue``, ``history``). ``jobs_probe.json`` is the server's answer to ``GET
/api/jobs?limit=1`` (how a client tells whether it has the jobs API: 0.3.75 has not).

    .venv/bin/python scripts/record_protocol_sequences.py

Cases: ``success`` (runs), ``cached`` (the same prompt again), ``execution_error`` (a node
raises), ``interrupted`` (a sleeping node, interrupted), ``refused`` (fails validation: 400),
``partly_refused`` (one of two outputs fails validation: 200 with node_errors), ``removed``
(queued behind a sleeping prompt, then deleted from the queue: it vanishes, no event, no
history; ``queue_pending`` is the queue while it waited).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from websockets.sync.client import connect

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where the recordings go (DISCOMFORT_RECORD_TO: elsewhere, to compare before checking in).
OUT = pathlib.Path(os.environ.get("DISCOMFORT_RECORD_TO") or ROOT / "tests" / "fixtures" / "protocol")
sys.path.insert(0, str(ROOT))
from discomfort.auth import TOKEN_HEADER  # noqa: E402
from discomfort.server import ComfyServer  # noqa: E402

IMAGE: dict[str, Any] = {"class_type": "EmptyImage",
                         "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}}


def prompt(second: dict) -> dict:
    return {"1": IMAGE, "2": second,
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


CASES = {
    "success": prompt({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}),
    "cached": prompt({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}),
    "execution_error": prompt({"class_type": "DiscomfortTestFail",
                               "inputs": {"image": ["1", 0], "fail": True, "message": "on purpose"}}),
    "interrupted": prompt({"class_type": "DiscomfortTestSleep",
                           "inputs": {"image": ["1", 0], "steps": 50, "step_seconds": 0.1}}),
    "refused": {"1": dict(IMAGE, inputs=dict(IMAGE["inputs"], width="abc")),
                "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
    # two outputs, one invalid: 200 with node_errors, and the valid part would run
    "partly_refused": dict(prompt({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}),
                           **{"4": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
                              "9": {"class_type": "ImageBlur", "inputs": {
                                  "image": ["1", 0], "blur_radius": 0, "sigma": 1.0}}}),
}


def _socket(server: ComfyServer, client_id: str):
    url = server.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    return connect(url, additional_headers={TOKEN_HEADER: server.token}, max_size=None)


def _received(ws, seconds: float = 30) -> Iterator[dict]:
    """The server's text messages, decoded, until ``seconds`` pass or it is quiet for 2 s."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=2)
        except TimeoutError:
            return
        if isinstance(raw, str):
            yield json.loads(raw)


def record(server: ComfyServer, name: str, body: dict) -> dict:
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    messages: list = []
    with _socket(server, client_id) as ws:
        messages.append(json.loads(ws.recv(timeout=10)))  # the greeting status
        try:
            reply, status = server.request("/prompt", {"prompt": body, "client_id": client_id,
                                                       "prompt_id": prompt_id}), 200
        except urllib.error.HTTPError as exc:
            reply, status = json.loads(exc.read()), exc.code
        if name == "interrupted":
            threading.Timer(0.8, server.request, ("/interrupt", {"prompt_id": prompt_id})).start()
        running: dict = {}
        for message in _received(ws) if status == 200 else ():
            messages.append(message)
            data = message.get("data") or {}
            if message.get("type") == "execution_start" and not running:
                running = {"queue_running": server.request("/queue"),
                           "history_running": server.request(f"/history/{prompt_id}")}
            if message.get("type") == "status" and data.get("status", {}).get(
                    "exec_info", {}).get("queue_remaining") == 0 and len(messages) > 3:
                break
        time.sleep(0.2)  # the history entry is written just after execution_success
        return {"case": name, "prompt_id": prompt_id, "prompt": body,
                "post_prompt": {"status": status, "body": reply}, "messages": messages,
                **running, "queue": server.request("/queue"),
                "history": server.request(f"/history/{prompt_id}")}


def record_removed(server: ComfyServer) -> dict:
    """A prompt queued behind a sleeping one, then deleted from the queue by someone else."""
    client_id = uuid.uuid4().hex
    blocker, prompt_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = CASES["success"]
    sleeper = prompt({"class_type": "DiscomfortTestSleep",
                      "inputs": {"image": ["1", 0], "steps": 40, "step_seconds": 0.05}})
    messages: list = []
    with _socket(server, client_id) as ws:
        messages.append(json.loads(ws.recv(timeout=10)))
        server.request("/prompt", {"prompt": sleeper, "client_id": client_id, "prompt_id": blocker})
        reply = server.request("/prompt", {"prompt": body, "client_id": client_id,
                                           "prompt_id": prompt_id})
        pending = server.request("/queue")
        server.request("/queue", {"delete": [prompt_id]})
        queue, history = server.request("/queue"), server.request(f"/history/{prompt_id}")
        for message in _received(ws):
            messages.append(message)
            if message.get("type") == "execution_success":
                break
        return {"case": "removed", "prompt_id": prompt_id, "prompt": body,
                "post_prompt": {"status": 200, "body": reply}, "messages": messages,
                "queue_pending": pending, "queue": queue, "history": history,
                "history_later": server.request(f"/history/{prompt_id}")}


def jobs_probe(server: ComfyServer) -> dict:
    try:
        return {"status": 200, "body": server.request("/api/jobs?limit=1")}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        return {"status": exc.code, "body": body}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pack = ROOT / "tests" / "comfy_test_pack"
    with ComfyServer(node_packages=[pack]) as server:
        version = server.request("/system_stats")["system"]["comfyui_version"]
        cases: list[tuple[str, Callable[[], dict]]] = [
            (name, functools.partial(record, server, name, body)) for name, body in CASES.items()]
        cases += [("removed", functools.partial(record_removed, server)),
                  ("jobs_probe", functools.partial(jobs_probe, server))]
        for name, make in cases:
            recorded = make()
            recorded["comfyui_version"] = version
            path = OUT / f"{name}.json"
            path.write_text(json.dumps(recorded, indent=1) + "\n")
            print(f"{name:16} {len(recorded.get('messages', [])):3} messages -> "
                  f"{path}")


if __name__ == "__main__":
    main()
