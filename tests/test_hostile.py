"""What a hostile user tried: every failure is typed and quick, the context is left as it was,
the next run works; a frozen server is told from a long render; a websocket cut mid-prompt
loses no outcome, and a prompt someone else deletes is named as lost; nobody else gets in."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import os
import pwd
import signal
import socket
import threading
import time
import urllib.parse
from typing import Any

import numpy as np
import pytest
import torch

from conftest import api, ported_sleeper
from discomfort import Discomfort, WorkflowContext
from discomfort.auth import TOKEN_COOKIE, TOKEN_HEADER, TOKEN_QUERY, editor_url, request_allowed
from discomfort.errors import (
    ComfyServerError,
    ComfyServerUnresponsive,
    ExecutionError,
    PortTypeError,
    PromptLost,
    RunTimeout,
    UnknownInputError,
    WorkflowError,
)
from discomfort.protocol import Event, history_outcome

IMAGE = torch.rand(1, 4, 4, 3)


INVERT = api(("DiscomfortInput", {"unique_id": "img"}), ("ImageInvert", {"image": ["1", 0]}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "img"}))
LOOPED = api(("ImageInvert", {"image": ["2", 0]}), ("ImageBlur", {"image": ["1", 0], "blur_radius": 1,
                                                                   "sigma": 1.0}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "out"}))


# --- the store: tensors PyTorch keeps in unusual forms --------------------------------------

def test_unusual_tensors_are_stored_as_their_values_or_refused_before_anything_changes():
    dense = torch.tensor([[0.0, 1.5], [2.0, 0.0]])
    with WorkflowContext() as context:
        for layout in (dense.to_sparse(), dense.to_sparse_csr()):
            context.save("sparse", layout)
            assert torch.equal(context.load("sparse"), dense)  # loaded back dense: lossless
        z = torch.tensor([1 + 2j, 3 - 1j])
        context.save("conj", z.conj())
        assert torch.equal(context.load("conj"), z.conj().resolve_conj())
        context.save("grad", torch.ones(2, requires_grad=True))
        assert context.load("grad").requires_grad  # kept (the graph that made it is not)
        context.save("zero-d", np.array(3.0))
        assert context.load("zero-d").shape == ()
        before = context.fingerprint("sparse")
        with pytest.warns(UserWarning):  # torch's own deprecation of quantized creation
            quantized = torch.quantize_per_tensor(torch.rand(3), 0.1, 0, torch.quint8)
        with pytest.raises(TypeError, match="quantized tensor cannot be stored.*dequantize"):
            context.save("sparse", quantized)
        assert context.fingerprint("sparse") == before


# --- the error corpus: typed, quick, nothing changed, the next run works --------------------

@pytest.mark.server
async def test_every_bad_call_fails_typed_and_fast_and_changes_nothing(app):
    cases: list[tuple[str, dict[str, Any], type[Exception]]] = [
        ("a wrongly shaped image", dict(inputs={"img": torch.rand(4, 4)}), PortTypeError),
        ("a uint8 numpy image", dict(inputs={"img": np.zeros((1, 4, 4, 3), np.uint8)}), PortTypeError),
        ("text for an image", dict(inputs={"img": "text"}), PortTypeError),
        ("an unknown key", dict(inputs={"imgg": IMAGE}), UnknownInputError),
        ("iterations=True", dict(iterations=True), ValueError),
        ("iterations=0", dict(iterations=0), ValueError),
        ("timeout=-1", dict(timeout=-1), ValueError),
        ("timeout=nan", dict(timeout=float("nan")), ValueError),
        ("workflows=None", dict(workflows=None), TypeError),
        ("a list of lists", dict(workflows=[[INVERT]]), WorkflowError),
        ("a loop in the prompt", dict(workflows=[LOOPED]), WorkflowError),
    ]
    with app.Context() as context:
        context.save("img", IMAGE)
        before = {key: context.fingerprint(key) for key in context.list_keys()}
        timings = {}
        for name, kwargs, error in cases:
            workflows = kwargs.pop("workflows", [INVERT])
            started = time.monotonic()
            with pytest.raises(error) as caught:
                await app.run(workflows, context=context, progress=False, **kwargs)
            timings[name] = time.monotonic() - started
            assert {key: context.fingerprint(key) for key in context.list_keys()} == before, name
            assert str(caught.value), name
        assert "loop through nodes 1 (ImageInvert), 2 (ImageBlur)" in str(caught.value)
        result = await app.run([INVERT], context=context, progress=False)  # the next run works
        assert torch.allclose(result["img"], 1 - IMAGE)
    print("time to error:", {k: f"{v * 1000:.1f} ms" for k, v in timings.items()})
    assert max(timings.values()) < 5  # a liveness bound, not a benchmark


# --- deadlines against a stopped server -----------------------------------------------------

@pytest.fixture
async def freezable(settings):
    """A Discomfort whose server this test may stop (SIGSTOP) and resume."""
    discomfort = await Discomfort.create(**settings, unresponsive_timeout=8)
    group = discomfort.Worker.server.pid  # its own process group: we started it

    def freeze(stop: bool) -> None:
        os.killpg(group, signal.SIGSTOP if stop else signal.SIGCONT)

    try:
        yield discomfort, freeze
    finally:
        freeze(False)
        await discomfort.shutdown()


@pytest.mark.server
async def test_a_stopped_server_cannot_hold_a_run_past_its_deadline(freezable):
    discomfort, freeze = freezable
    await discomfort.run([INVERT], inputs={"img": IMAGE}, progress=False)  # warm
    freeze(True)
    try:
        started = time.monotonic()
        with pytest.raises(RunTimeout):
            await discomfort.run([INVERT], inputs={"img": torch.rand(1, 4, 4, 3)}, timeout=5,
                                 progress=False)
        assert time.monotonic() - started < 7
        started = time.monotonic()  # no timeout: the unresponsive rule (8 s here) still ends it
        with pytest.raises(ComfyServerUnresponsive, match="did not answer|answered nothing"):
            await discomfort.run([INVERT], inputs={"img": torch.rand(1, 4, 4, 3)}, progress=False)
        assert time.monotonic() - started < 8 + 3
    finally:
        freeze(False)
    result = await discomfort.run([INVERT], inputs={"img": IMAGE}, progress=False)
    assert torch.allclose(result["img"], 1 - IMAGE)


@pytest.mark.server
async def test_a_server_stopped_mid_prompt_is_unresponsive_but_a_long_silent_node_is_not(freezable):
    discomfort, freeze = freezable
    run = asyncio.create_task(discomfort.run([ported_sleeper(40, 0.1)], inputs={"img": IMAGE},
                                             progress=False))
    await asyncio.sleep(1.5)
    freeze(True)
    started = time.monotonic()
    try:
        with pytest.raises(ComfyServerUnresponsive, match="answered nothing for 8 s"):
            await asyncio.wait_for(run, 30)
        assert time.monotonic() - started < 8 + 4
    finally:
        freeze(False)
    # one 60 s step: no websocket message for a minute, yet the server answers HTTP
    started = time.monotonic()
    result = await discomfort.run([ported_sleeper(1, 60.0)], inputs={"img": IMAGE}, progress=False)
    assert time.monotonic() - started >= 60 and torch.equal(result["slept"], IMAGE)


# --- a connection that drops, a prompt someone else deletes ---------------------------------

class CuttableProxy:
    """A TCP proxy in front of a server whose websockets this test can cut (and refuse while
    cut), as a flaky network or a restarting reverse proxy would; HTTP keeps flowing."""

    def __init__(self, url: str):
        target = urllib.parse.urlsplit(url)
        self.target = (target.hostname, target.port)
        self.cut_off = False
        self.sockets: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        self.cut_off = True
        for writer in self.sockets:
            writer.close()

    async def stop(self) -> None:
        self.cut()
        assert self.server is not None, "start() first"
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        head = await reader.read(65536)
        websocket = head.startswith(b"GET /ws")
        if websocket and self.cut_off:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        up_writer.write(head)
        if websocket:
            self.sockets += [writer, up_writer]

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def sleep_then(*last: tuple) -> dict:
    """A 1.5 s prompt never run before (a fresh colour: nothing of it is cached)."""
    color = int.from_bytes(os.urandom(3), "big")
    return api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": color}),
               ("DiscomfortTestSleep", {"image": ["1", 0], "steps": 30, "step_seconds": 0.05}),
               *last)


@pytest.mark.server
async def test_a_websocket_cut_mid_prompt_loses_no_outcome(app):
    proxy = CuttableProxy(app.Worker.url)
    url = await proxy.start()
    try:
        async with await Discomfort.create(url=url, token=app.Worker.server.token) as attached:
            worker = attached.Worker
            fine = await worker.queue(sleep_then(("PreviewImage", {"images": ["2", 0]})))
            failing = await worker.queue(sleep_then(("DiscomfortTestFail", {
                "image": ["2", 0], "fail": True, "message": "after the cut"}),
                ("PreviewImage", {"images": ["3", 0]})))
            await asyncio.sleep(0.5)
            proxy.cut()  # the final events are never sent to us: only the history has them
            started = time.monotonic()
            events: list[Event] = []
            entry = await worker.wait(fine, timeout=60, on_event=events.append)
            outcome = history_outcome(entry)
            assert outcome is not None and outcome.type == "execution_success"
            assert [e.type for e in events if e.is_final] == ["execution_success"]
            with pytest.raises(ExecutionError, match="after the cut") as caught:
                await worker.wait(failing, timeout=60)
            assert caught.value.node_type == "DiscomfortTestFail"
            assert time.monotonic() - started < 15  # ~3 s of sleeping, then a poll or two
    finally:
        await proxy.stop()


@pytest.mark.server
async def test_a_prompt_someone_else_deletes_from_the_queue_is_named_as_lost(app):
    worker = app.Worker
    blocker = await worker.queue(sleep_then(("PreviewImage", {"images": ["2", 0]})))
    waiting = await worker.queue(api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1,
                                                     "color": 6}),
                                     ("PreviewImage", {"images": ["1", 0]})))
    worker.server.request("/queue", {"delete": [waiting]})  # another client's doing
    started = time.monotonic()
    with pytest.raises(PromptLost, match=f"prompt {waiting} is neither queued nor in the history"):
        await worker.wait(waiting, timeout=60)
    assert time.monotonic() - started < 10  # noticed at the next look at the record, not never
    await worker.wait(blocker, timeout=60)


# --- attaching to things that are not a ComfyUI ---------------------------------------------

async def test_a_socket_that_never_answers_is_a_typed_error_naming_the_url():
    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts (backlog), never replies
        url = f"http://127.0.0.1:{mute.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ComfyServerUnresponsive,
                           match=f"{url} did not answer GET /system_stats within 3 s"):
            await Discomfort.create(url=url, unresponsive_timeout=3)
        assert time.monotonic() - started < 6


async def test_a_server_that_is_not_comfyui_is_named_as_such():
    class NotComfy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>404 Not Found</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotComfy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(ComfyServerError, match=rf"{url} is not a ComfyUI server: GET /system_stats "
                                                   r"answered HTTP 404 \(text/html\)"):
            await Discomfort.create(url=url, unresponsive_timeout=5)
    finally:
        server.shutdown()
        thread.join(10)


# --- nobody else gets in --------------------------------------------------------------------

def test_the_token_rules():
    token = "t" * 32
    assert request_allowed(token, {TOKEN_HEADER: token}, {})
    assert request_allowed(token, {}, {TOKEN_COOKIE: token})
    assert not request_allowed(token, {TOKEN_HEADER: token[:-1] + "x"}, {})
    assert not request_allowed(token, {}, {})
    assert editor_url("http://h:1", token) == f"http://h:1/?{TOKEN_QUERY}={token}"


ROUTES = [("GET", "/"), ("GET", "/prompt"), ("POST", "/prompt"), ("GET", "/queue"),
          ("GET", "/history"), ("GET", "/ws?clientId=x"), ("GET", "/view?filename=a.png"),
          ("GET", "/object_info"), ("GET", "/system_stats"), ("GET", "/discomfort/info"),
          ("POST", "/upload/image"), ("POST", "/interrupt")]


def _as_nobody(host: str, port: int, requests: list[tuple[str, str, bytes]]) -> list[int]:
    """Each request's status, sent by a forked child that became the user nobody."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, ask, report, leave
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            statuses = []
            for method, path, body in requests:
                conn = http.client.HTTPConnection(host, port, timeout=10)
                headers = {"Content-Type": "application/json"}
                if path.startswith("/ws"):
                    headers.update(Upgrade="websocket", Connection="Upgrade",
                                   **{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                      "Sec-WebSocket-Version": "13"})
                conn.request(method, path, body=body or None, headers=headers)
                statuses.append(conn.getresponse().status)
                conn.close()
            os.write(write, json.dumps(statuses).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(answer)


@pytest.mark.server
async def test_another_user_gets_401_everywhere_and_cannot_touch_a_run(app):
    url = urllib.parse.urlsplit(app.Worker.url)
    with app.Context() as context:
        context.save("secret", IMAGE)
        stamp = context.get_stamp("secret")
        forged = {"prompt": api(("EmptyImage", {"width": 4, "height": 4, "batch_size": 1, "color": 0}),
                                ("DiscomfortOutput", {"value": ["1", 0], "unique_id": "secret",
                                                      "discomfort_binding": json.dumps({
                                                          "v": 1, "stamp": "forged"})})),
                  "extra_data": {"extra_pnginfo": {"discomfort_run": {
                      "run": context.run_id, "dir": context.contexts_dir_name}}}}
        requests = [(m, p, json.dumps(forged).encode() if p == "/prompt" and m == "POST" else b"")
                    for m, p in ROUTES]
        statuses = await asyncio.to_thread(_as_nobody, url.hostname, url.port, requests)
        assert statuses == [401] * len(ROUTES), dict(zip(ROUTES, statuses, strict=False))
        await asyncio.sleep(0.5)
        assert torch.equal(context.load("secret"), IMAGE) and context.get_stamp("secret") == stamp


@pytest.mark.server
async def test_the_owner_opens_the_editor_with_its_token_and_attaches_only_with_it(app):
    url = urllib.parse.urlsplit(app.Worker.url)
    token = app.Worker.server.token
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", f"/?{TOKEN_QUERY}={token}")
    answer = conn.getresponse()
    cookie = answer.getheader("Set-Cookie")
    assert answer.status == 302 and answer.getheader("Location") == "/"
    assert cookie is not None and f"{TOKEN_COOKIE}={token}" in cookie and "HttpOnly" in cookie
    answer.read()
    conn.request("GET", "/system_stats", headers={"Cookie": f"{TOKEN_COOKIE}={token}"})
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises(ComfyServerError, match="needs its Discomfort token. Pass token="):
        await Discomfort.create(url=app.Worker.url)
    async with await Discomfort.create(url=app.Worker.url, token=token) as attached:
        result = await attached.run([INVERT], inputs={"img": IMAGE}, progress=False)
        assert torch.allclose(result["img"], 1 - IMAGE)
