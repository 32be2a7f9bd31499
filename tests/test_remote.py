"""A ComfyUI on "another machine": a server with a store root of its own, on another loopback
address (and one in a network namespace of its own, behind a veth pair), reached only over
HTTP. Values travel through its /discomfort/v1 routes (never a pickle); loops, references,
stitching and files work as with a local server; its token is required; bad ids and bodies are
refused before anything is touched; a run whose client is gone expires."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import model_paths
from discomfort import Discomfort, WorkflowTools as Tools
from discomfort.auth import TOKEN_HEADER, new_token
from discomfort.errors import ComfyServerError, RemoteStoreError, RemoteValueError, TokenError
from discomfort.store import default_root
from remote_support import REMOTE_HOST, NetNamespace, RemoteComfy

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
SMALL = {"steps": 2, "width": 64, "height": 64}
IMAGE = torch.rand(1, 16, 16, 3)
API_PREFIX = "/discomfort/v1"


def api(*nodes: tuple) -> dict:
    return {str(i): {"class_type": kind, "inputs": inputs} for i, (kind, inputs) in enumerate(nodes, 1)}


INVERT = api(("DiscomfortInput", {"unique_id": "img"}), ("ImageInvert", {"image": ["1", 0]}),
             ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "img"}))


@pytest.fixture(scope="module")
def remote(model_dir, tmp_path_factory):
    """The other machine: its own store root, 127.0.0.2, a token, small limits."""
    root = tmp_path_factory.mktemp("remote-machine") / "store"
    server = RemoteComfy(root, new_token(), model_paths=model_paths(model_dir),
                         env={"DISCOMFORT_MAX_VALUE_MB": "100", "DISCOMFORT_RUN_BUDGET_MB": "160"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def client(remote):
    discomfort = await Discomfort.create(url=remote.url, token=remote.token)
    try:
        yield discomfort
    finally:
        await discomfort.shutdown()


def _local_run_dirs() -> set[str]:
    contexts = default_root() / "contexts"
    return {p.name for p in contexts.iterdir()} if contexts.is_dir() else set()


def http(remote, method: str, path: str, body: bytes | None = None, *, token: str | None = "",
         content_type: str | None = None, timeout: float = 30) -> tuple[int, dict]:
    """One raw request to the remote server: (status, JSON reply)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    token = remote.token if token == "" else token
    if token:
        headers[TOKEN_HEADER] = token
    request = urllib.request.Request(remote.url + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


# --- values through a server that shares nothing with us ------------------------------------

async def test_a_five_iteration_loop_carries_an_image_and_no_value_goes_through_our_files(client, remote):
    assert remote.url.startswith(f"http://{REMOTE_HOST}:")
    before_local, before_remote = _local_run_dirs(), remote.run_dirs()
    with client.Context() as context:
        context.save("img", IMAGE)
        result = await client.run([INVERT], context=context, iterations=5, progress=False)
        assert len(client.last_run.prompts) == 5
        assert torch.allclose(result["img"], 1 - IMAGE)       # inverted five times
        assert torch.allclose(context.load("img"), 1 - IMAGE)  # ... into the user's own context
        # The server kept the run under its own root; none of its runs is under ours, and our
        # context is not under its root: the values went over HTTP.
        theirs = remote.run_dirs() - before_remote
        assert theirs, "the server kept no run of its own"
        assert not theirs & _local_run_dirs()
        assert context.run_id not in remote.run_dirs()
        assert context.path.is_relative_to(default_root())
        assert not Path(context.path).is_relative_to(remote.root)
    assert _local_run_dirs() - before_local <= {context.run_id}


def wf(name: str) -> str:
    return str(WORKFLOWS / f"{name}.json")


async def test_a_model_kept_by_reference_loads_once_over_ten_runs_and_stitched_parts_agree(
        client, fresh_checkpoint):
    loads, images = 0, {}
    with client.Context() as context:
        await client.run([wf("load_checkpoint")], inputs={"checkpoint": fresh_checkpoint},
                         context=context, progress=False)
        loads += client.last_run.executions("CheckpointLoaderSimple")
        assert context.load("model")["format"] == "discomfort-recipe/1"  # kept here, as JSON
        for seed in range(10):
            result = await client.run([wf("sample")], context=context, progress=False, inputs={
                "prompt": "a lighthouse at dusk", "negative": "text", "seed": seed, **SMALL})
            loads += client.last_run.executions("CheckpointLoaderSimple")
            images[seed] = result["image"]
    assert loads == 1  # the loader ran once, on the other machine, for all eleven prompts
    assert len({images[s].sum().item() for s in images}) == 10
    assert images[0].shape == (1, 64, 64, 3)

    # The two parts stitched into one prompt give the same image (and still no reload).
    joined = Tools.stitch_workflows([wf("load_checkpoint"), wf("sample")],
                                    delete_input_ports=True, delete_output_ports=True)["stitched_workflow"]
    result = await client.run([joined], progress=False, inputs={
        "checkpoint": fresh_checkpoint, "prompt": "a lighthouse at dusk", "negative": "text",
        "seed": 3, **SMALL})
    assert torch.equal(result["image"], images[3])


async def test_an_uploaded_file_goes_in_and_saved_images_come_back(client, tmp_path):
    from PIL import Image

    picture = (np.random.default_rng(1).random((24, 32, 3)) * 255).astype(np.uint8)
    path = tmp_path / "remote-in.png"
    Image.fromarray(picture).save(path)
    uploaded = await client.Worker.upload_data(path, overwrite=True)
    prompt = api(("LoadImage", {"image": uploaded["name"]}),
                 ("SaveImage", {"images": ["1", 0], "filename_prefix": "remote"}),
                 ("DiscomfortOutput", {"value": ["1", 0], "unique_id": "loaded"}))
    result = await client.run([prompt], progress=False)
    assert torch.equal(result["loaded"], torch.from_numpy(picture).float().div(255)[None])
    [saved] = client.last_run.images
    assert saved.filename.startswith("remote")
    [back] = await client.load_images()
    assert torch.equal(back, result["loaded"])


# --- the client API: values and their wire format ---------------------------------------------

async def test_values_of_each_allowed_kind_round_trip_and_others_are_refused_by_name(client, remote):
    run = await client.Worker.remote.create_run(lease_s=30)
    try:
        values = {"t": torch.arange(12, dtype=torch.bfloat16).reshape(3, 4),
                  "a": np.arange(6, dtype=">i2").reshape(2, 3), "z": np.zeros((0, 3), np.float32),
                  "g": torch.ones(2, requires_grad=True), "s": "a lighthouse", "n": None,
                  "j": {"steps": 4, "cfg": 7.5, "tags": ["a", True]}}
        for key, value in values.items():
            await run.put(key, value)
        for key, value in values.items():
            back = await run.get(key)
            if isinstance(value, torch.Tensor):
                assert back.dtype == value.dtype and torch.equal(back, value)
                assert back.requires_grad == value.requires_grad
            elif isinstance(value, np.ndarray):
                assert back.dtype == value.dtype and np.array_equal(back, value)
            else:
                assert back == value
        listed = await run.keys()
        assert sorted(listed) == sorted(values)
        assert listed["t"]["shape"] == [3, 4] and listed["t"]["fingerprint"].startswith("b2:")
        for bad in ({1, 2}, b"bytes", object(), float("nan"), {1: "int key"}):
            with pytest.raises(RemoteValueError, match=r"'bad'.*allowed"):
                await run.put("bad", bad)
        assert "bad" not in await run.keys()
        await run.delete("s")
        assert "s" not in await run.keys()
    finally:
        await run.close()
    assert run.run_id not in remote.run_dirs()  # closed: the server deleted it


# --- the token ---------------------------------------------------------------------------------

async def test_a_missing_or_wrong_token_is_a_typed_error_naming_the_fix(remote, monkeypatch):
    monkeypatch.delenv("DISCOMFORT_TOKEN", raising=False)
    with pytest.raises(TokenError, match="needs its Discomfort token. Pass token="):
        await Discomfort.create(url=remote.url)
    with pytest.raises(TokenError, match="not this server's. Pass token="):
        await Discomfort.create(url=remote.url, token=new_token())
    for method, path in (("POST", "/runs"), ("GET", "/runs/run-1/keys"), ("PUT", "/runs/run-1/value?key=a")):
        status, _ = http(remote, method, API_PREFIX + path, b"{}", token=None,
                         content_type="application/json")
        assert status == 401, (method, path)
        status, _ = http(remote, method, API_PREFIX + path, b"{}", token=new_token(),
                         content_type="application/json")
        assert status == 401, (method, path)


# --- hostile bodies and ids ----------------------------------------------------------------------

class _Touch:
    """Unpickling this creates the file it names: the proof a pickle was (not) unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_posted_to_a_value_route_is_refused_without_being_unpickled(remote, tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Touch(str(marker)))
    status, reply = http(remote, "POST", API_PREFIX + "/runs", b'{"lease_s": 30}',
                         content_type="application/json")
    assert status == 201
    run = API_PREFIX + f"/runs/{reply['run_id']}"
    try:
        for content_type in ("application/python-pickle", "application/octet-stream", None,
                             "application/json", "application/x-discomfort-array",
                             "application/x-discomfort-tree"):
            status, reply = http(remote, "PUT", run + "/value?key=evil", payload,
                                 content_type=content_type)
            assert status in (400, 415), (content_type, status, reply)
            assert "'evil'" in reply["error"], reply
            assert ("allowed" in reply["error"] or "array" in reply["error"]), reply
        assert not marker.exists()  # nothing was unpickled
        status, reply = http(remote, "GET", run + "/keys")
        assert status == 200 and reply["keys"] == {}  # and nothing was stored
    finally:
        http(remote, "DELETE", run)


def test_path_like_and_oversized_ids_and_values_are_refused_before_anything_is_touched(remote):
    before = remote.run_dirs()
    for run_id in ("..", "...%2F..%2Fetc", "a%2Fb", ".hidden", "x" * 65, "run%00"):
        status, reply = http(remote, "GET", API_PREFIX + f"/runs/{run_id}/keys")
        assert status in (400, 404), (run_id, status, reply)
        if status == 400:
            assert "run_id" in reply["error"]
    status, reply = http(remote, "POST", API_PREFIX + "/runs", b'{"lease_s": 30}',
                         content_type="application/json")
    run = API_PREFIX + f"/runs/{reply['run_id']}"
    try:
        for key in ("x" * 129, "", "tab%09key"):
            status, reply = http(remote, "PUT", run + f"/value?key={key}", b'{"kind":"json","value":1}',
                                 content_type="application/json")
            assert status == 400 and "unique_id" in reply["error"], (key, status, reply)
        # An array header that claims 200 MB (this server allows 100 per value) is refused
        # before its payload is read (none is sent).
        from discomfort.remote import array_frame

        claim = array_frame({"kind": "numpy", "dtype": "<f4", "shape": [50, 1024, 1024], "n": 200 * 2**20})
        status, reply = http(remote, "PUT", run + "/value?key=big", claim,
                             content_type="application/x-discomfort-array")
        assert status == 413 and "'big'" in reply["error"] and "DISCOMFORT_MAX_VALUE_MB" in reply["error"]
        lying = array_frame({"kind": "numpy", "dtype": "<f4", "shape": [4], "n": 999})
        status, reply = http(remote, "PUT", run + "/value?key=lie", lying + b"\0" * 999,
                             content_type="application/x-discomfort-array")
        assert status == 400 and "does not match" in reply["error"]
        status, reply = http(remote, "GET", run + "/keys")
        assert reply["keys"] == {}
    finally:
        http(remote, "DELETE", run)
    assert remote.run_dirs() <= before | set()  # the refused ids made no directory


async def test_a_run_over_its_byte_budget_is_refused_naming_the_limit(client):
    run = await client.Worker.remote.create_run(lease_s=30)
    try:
        await run.put("first", torch.zeros(20, 1024, 1024))            # 80 MB of the 160 MB budget
        with pytest.raises(RemoteStoreError, match="over its budget.*DISCOMFORT_RUN_BUDGET_MB") as caught:
            await run.put("second", torch.zeros(24, 1024, 1024))       # 96 MB more: over
        assert caught.value.status == 413
        assert sorted(await run.keys()) == ["first"]
        await run.put("first", torch.zeros(24, 1024, 1024))            # replacing a key frees its bytes
    finally:
        await run.close()


# --- leases --------------------------------------------------------------------------------------

def test_a_client_that_vanishes_has_its_run_expire_while_a_live_one_keeps_it(remote):
    code = textwrap.dedent(f"""
        import asyncio, sys
        from discomfort import Discomfort

        async def main():
            discomfort = await Discomfort.create(url={remote.url!r}, token={remote.token!r},
                                                 remote_lease_s=2.0)
            run = await discomfort.Worker.remote.create_run()
            await run.put("kept", "while I live")
            print(run.run_id, flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        run_id = child.stdout.readline().strip()
        assert run_id.startswith("run-"), run_id
        time.sleep(5.0)  # two and a half leases (2 s, renewed every third): renewed all along
        status, reply = http(remote, "GET", API_PREFIX + f"/runs/{run_id}/keys")
        assert status == 200 and "kept" in reply["keys"]
        assert run_id in remote.run_dirs()
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the client vanishes: no goodbye, no renewal
        child.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, reply = http(remote, "GET", API_PREFIX + f"/runs/{run_id}/keys")
        if status == 404:
            break
        time.sleep(0.2)
    assert status == 404 and "lease" in reply["error"]
    assert run_id not in remote.run_dirs()  # its values are deleted on the server, too


# --- a reverse proxy in front: the user's headers on every request, HTTP and websocket -------

class _AuthProxy:
    """A reverse proxy that wants ``Authorization`` on every request (as basic auth in front of
    a rented box would), then forwards HTTP (streamed) and websockets to the server."""

    HOP = {"host", "authorization", "connection", "upgrade", "transfer-encoding", "content-length",
           "keep-alive", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}

    def __init__(self, target: str, credential: str, ssl_context=None):
        self.target, self.credential, self.ssl_context = target, credential, ssl_context
        self.paths: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of each request let through
        self.websockets = self.refused = 0

    async def start(self) -> str:
        import aiohttp
        from aiohttp import web

        self.session = aiohttp.ClientSession()
        app = web.Application(client_max_size=2**30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context).start()
        host, port = self.runner.addresses[0][:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    async def stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()

    def _forwarded(self, request) -> dict:
        return {k: v for k, v in request.headers.items() if k.lower() not in self.HOP}

    async def handle(self, request):
        from aiohttp import WSMsgType, web

        if request.headers.get("Authorization") != self.credential:
            self.refused += 1
            return web.Response(status=401, text="proxy: credentials, please",
                                headers={"WWW-Authenticate": 'Basic realm="box"'})
        self.paths.append(request.path)
        self.requests.append((request.method, request.path))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.websockets += 1
            down = web.WebSocketResponse()
            await down.prepare(request)
            url = self.target.replace("http", "ws", 1) + request.path_qs
            async with self.session.ws_connect(url, headers=self._forwarded(request)) as up:
                async def pump(source, sink):
                    async for message in source:
                        if message.type == WSMsgType.TEXT:
                            await sink.send_str(message.data)
                        elif message.type == WSMsgType.BINARY:
                            await sink.send_bytes(message.data)
                tasks = [asyncio.ensure_future(pump(down, up)), asyncio.ensure_future(pump(up, down))]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
            return down
        body = request.content if request.can_read_body else None
        async with self.session.request(request.method, self.target + request.path_qs, data=body,
                                        headers=self._forwarded(request)) as up:
            response = web.StreamResponse(status=up.status)
            if "Content-Type" in up.headers:
                response.headers["Content-Type"] = up.headers["Content-Type"]
            await response.prepare(request)
            async for chunk in up.content.iter_chunked(1 << 20):
                await response.write(chunk)
            await response.write_eof()
            return response


async def test_user_headers_go_on_every_request_http_and_websocket_through_a_proxy(remote):
    credential = "Basic " + new_token()
    proxy = _AuthProxy(remote.url, credential)
    url = await proxy.start()
    try:
        with pytest.raises(TokenError, match="a proxy in front of it wants credentials.*headers="):
            await Discomfort.create(url=url, token=remote.token)
        refused = proxy.refused
        assert refused >= 1
        async with await Discomfort.create(url=url, token=remote.token,
                                           headers={"Authorization": credential}) as behind:
            result = await behind.run([INVERT], inputs={"img": IMAGE}, progress=False)
            assert torch.allclose(result["img"], 1 - IMAGE)
        assert proxy.refused == refused  # every request of that run carried the header
        assert proxy.websockets >= 1 and "/prompt" in proxy.paths
        assert any(p.startswith(API_PREFIX + "/runs/") and p.endswith("/value") for p in proxy.paths)
    finally:
        await proxy.stop()


# --- value routes off: beyond loopback without a token -----------------------------------------

def test_the_value_routes_are_off_beyond_loopback_without_a_token():
    from discomfort.comfy_nodes.value_routes import routes_state

    assert routes_state(["127.0.0.1"], None) == (True, None)
    assert routes_state(["127.0.0.2", "::1", "localhost"], None) == (True, None)
    assert routes_state(["0.0.0.0", "::"], new_token()) == (True, None)
    enabled, reason = routes_state(["127.0.0.1", "0.0.0.0"], None)
    assert not enabled and "0.0.0.0" in reason and "DISCOMFORT_TOKEN" in reason


async def test_a_server_whose_value_routes_are_off_is_refused_by_the_handshake_saying_why():
    """A stand-in server that answers the handshake as a ComfyUI listening on 0.0.0.0 without a
    token would: the client neither shares its store nor may keep values there."""
    from aiohttp import web

    reason = ("this server listens on 0.0.0.0, beyond loopback, without a token: start it with "
              "DISCOMFORT_TOKEN")
    info = {"root": "/elsewhere/discomfort", "store_id": "f" * 32, "version": "x",
            "values": {"enabled": False, "reason": reason}}
    async def stats(_request):
        return web.json_response({"system": {"argv": []}})

    async def handshake(_request):
        return web.json_response(info)

    app = web.Application()
    app.router.add_get("/system_stats", stats)
    app.router.add_get("/discomfort/info", handshake)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        with pytest.raises(ComfyServerError, match="cannot keep our values over HTTP: this server "
                                                   "listens on 0.0.0.0.*DISCOMFORT_TOKEN"):
            await Discomfort.create(url=f"http://{host}:{port}")
    finally:
        await runner.cleanup()


def test_a_real_comfyui_beyond_loopback_without_a_token_answers_403_and_the_client_names_the_fix(
        model_dir, tmp_path, monkeypatch):
    """A ComfyUI started with token="" (none) listening on 0.0.0.0: its value routes are off,
    say why, and a client attaching to it is told what to do."""
    monkeypatch.delenv("DISCOMFORT_TOKEN", raising=False)
    server = RemoteComfy(tmp_path / "open-store", "", listen="0.0.0.0")
    try:
        status, info = http(server, "GET", "/discomfort/info", token=None)
        assert status == 200 and info["values"]["enabled"] is False
        assert "0.0.0.0" in info["values"]["reason"] and "DISCOMFORT_TOKEN" in info["values"]["reason"]
        for method, path in (("POST", "/runs"), ("GET", "/runs/run-1/keys"),
                             ("PUT", "/runs/run-1/value?key=a")):
            status, reply = http(server, method, API_PREFIX + path, b"{}", token=None,
                                 content_type="application/json")
            assert status == 403, (method, path, status, reply)
            assert "beyond loopback, without a token" in reply["error"]
            assert "DISCOMFORT_TOKEN" in reply["error"]
        assert not server.run_dirs()  # nothing was made

        async def attach():
            with pytest.raises(ComfyServerError, match="cannot keep our values over HTTP: this server "
                                                       "listens on 0.0.0.0.*DISCOMFORT_TOKEN"):
                await Discomfort.create(url=server.url)

        asyncio.run(attach())
    finally:
        server.stop()


# --- docs/remote.md: its client examples run against the remote server -------------------------

def test_the_remote_docs_examples_run_as_written(remote, scratch, monkeypatch):
    import re

    from conftest import run_example

    blocks = re.findall(r"```py\n(.*?)```", (REPO / "docs" / "remote.md").read_text(), re.S)
    assert len(blocks) == 2
    monkeypatch.setenv("COMFY_URL", remote.url)
    monkeypatch.setenv("DISCOMFORT_TOKEN", remote.token)
    before = remote.run_dirs()
    for code in blocks:
        printed = run_example(code, scratch)
        assert "True" in printed
    assert remote.run_dirs() <= before  # each example's runs were deleted when it ended


async def test_only_values_the_server_does_not_hold_are_uploaded(remote):
    """A loop's image goes up once: each later iteration reads what the server's run already
    holds (the previous output, fetched to us and unchanged). Counted at a proxy in front."""
    credential = "Basic " + new_token()
    proxy = _AuthProxy(remote.url, credential)
    url = await proxy.start()
    try:
        async with await Discomfort.create(url=url, token=remote.token,
                                           headers={"Authorization": credential}) as behind:
            with behind.Context() as context:
                context.save("img", IMAGE)
                start = len(proxy.requests)
                result = await behind.run([INVERT], context=context, iterations=5, progress=False)
                values = [m for m, p in proxy.requests[start:] if p.endswith("/value")]
                assert torch.allclose(result["img"], 1 - IMAGE)
                assert values.count("PUT") == 1 and values.count("GET") == 5, values
                context.save("img", IMAGE)  # changed here: sent again
                start = len(proxy.requests)
                await behind.run([INVERT], context=context, progress=False)
                values = [m for m, p in proxy.requests[start:] if p.endswith("/value")]
                assert values.count("PUT") == 1, values
    finally:
        await proxy.stop()


def latent_step(checkpoint: str, seed: int) -> dict:
    """One txt2img-style step on a LATENT read through port "lat" and written back to it."""
    return {
        "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "lat"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 1, "cfg": 7, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 0.7, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["1", 0]}},
        "9": {"class_type": "DiscomfortOutput", "inputs": {"value": ["3", 0], "unique_id": "lat"}},
    }


EMPTY_LATENT = api(("EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 1}),
                   ("DiscomfortOutput", {"value": ["1", 0], "unique_id": "lat"}))


async def _latent_loop(discomfort) -> dict:
    from conftest import TINY_CHECKPOINT

    with discomfort.Context() as context:
        await discomfort.run([EMPTY_LATENT], context=context, progress=False)  # a LATENT comes back
        start = context.load("lat")
        assert isinstance(start, dict) and torch.equal(start["samples"], torch.zeros(1, 4, 8, 8))
        result = await discomfort.run([latent_step(TINY_CHECKPOINT, 5)], context=context,
                                      iterations=3, fixed_seeds=True, progress=False)
        assert len(discomfort.last_run.prompts) == 3
        # A LATENT made here, with a noise mask (two tensors in one dict), goes up as an input.
        masked = {"samples": result["lat"]["samples"].clone(),
                  "noise_mask": torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)}
        again = await discomfort.run([latent_step(TINY_CHECKPOINT, 6)], inputs={"lat": masked},
                                     context=context, progress=False)
        return {"loop": result["lat"], "masked": again["lat"]}


async def test_a_latent_carried_over_three_iterations_remotely_equals_the_same_loop_run_locally(
        client, app):
    remote = await _latent_loop(client)   # the LATENT came back, and was read there, 3 times
    local = await _latent_loop(app)
    for case in ("loop", "masked"):
        remote_latent, local_latent = remote[case], local[case]
        assert set(remote_latent) == set(local_latent) and "samples" in remote_latent, case
        samples = remote_latent["samples"]
        assert isinstance(samples, torch.Tensor) and samples.shape == (1, 4, 8, 8)
        assert samples.dtype == local_latent["samples"].dtype
        assert torch.equal(samples, local_latent["samples"]), case
        assert samples.abs().sum() > 0  # sampled: not the empty latent it started from
    assert torch.equal(remote["masked"]["noise_mask"], torch.linspace(0, 1, 64).reshape(1, 1, 8, 8))
    assert not torch.equal(remote["masked"]["samples"], remote["loop"]["samples"])


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (type(b) is torch.Tensor and a.dtype == b.dtype and a.shape == b.shape
                and a.requires_grad == b.requires_grad and torch.equal(a.detach(), b.detach()))
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(b) is list and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


async def test_a_list_of_tensors_and_a_nested_dict_round_trip_as_trees(client):
    run = await client.Worker.remote.create_run(lease_s=30)
    try:
        values = {
            "images": [torch.rand(1, 8, 8, 3), torch.rand(1, 4, 6, 3), torch.zeros(0, 2)],
            "latent": {"samples": torch.randn(1, 4, 8, 8).to(torch.bfloat16),
                       "noise_mask": torch.ones(1, 8, 8), "batch_index": [0],
                       "extra": {"mask": np.arange(6, dtype=">i2").reshape(2, 3),
                                 "grads": (torch.ones(2, requires_grad=True), None, 2.5, "x", True)}},
        }
        for key, value in values.items():
            await run.put(key, value)
        for key, value in values.items():
            assert _same(value, await run.get(key)), key
        listed = await run.keys()
        assert listed["images"]["fingerprint"] and listed["latent"]["size"] > 1 * 4 * 8 * 8 * 2
        assert not _same(values["latent"], dict(values["latent"], batch_index=[1]))  # it can fail
    finally:
        await run.close()


async def test_a_leaf_that_cannot_travel_is_refused_naming_its_path_inside_the_value(client):
    run = await client.Worker.remote.create_run(lease_s=30)
    try:
        with pytest.raises(RemoteValueError, match=r"'lat' holds a builtins\.set at "
                                                   r'lat\["extra"\]\[2\].*allowed'):
            await run.put("lat", {"samples": torch.zeros(1, 4, 8, 8), "extra": [1, 2, {3}]})
        with pytest.raises(RemoteValueError, match=r'nan.*at lat\["images"\]\[1\]\["w"\]'):
            await run.put("lat", {"images": [torch.zeros(1), {"w": float("nan")}]})
        with pytest.raises(RemoteValueError, match=r"'lat'.*'\$array'.*reserved"):
            await run.put("lat", {"x": torch.zeros(1), "y": {"$array": 0}})
        assert "lat" not in await run.keys()
    finally:
        await run.close()
    upscale = api(("DiscomfortInput", {"unique_id": "lat"}),
                  ("LatentUpscaleBy", {"samples": ["1", 0], "upscale_method": "nearest-exact",
                                       "scale_by": 1.5}),
                  ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "bigger"}))
    with pytest.raises(RemoteValueError, match=r'lat\["extra"\]\[0\]'):
        await client.run([upscale], inputs={"lat": {"samples": torch.zeros(1, 4, 8, 8), "extra": [b"x"]}},
                         progress=False)
    assert client.last_run.prompts == []  # refused before anything was queued
    result = await client.run([upscale], inputs={"lat": {"samples": torch.ones(1, 4, 8, 8)}},
                              progress=False)  # the same LATENT without it travels, both ways
    assert torch.equal(result["bigger"]["samples"], torch.ones(1, 4, 12, 12))


async def test_a_value_on_the_server_that_cannot_travel_back_is_refused_naming_its_path():
    """The server side's own routes, in this process: a port node there wrote a value with a
    leaf that has no wire form; fetching it is refused (415) naming where it is. What can
    travel next to it in another key still comes back as a tree."""
    import aiohttp
    from aiohttp import web

    from discomfort.comfy_nodes.value_routes import ValueRoutes
    from discomfort.remote import TREE_TYPE

    table = web.RouteTableDef()
    values = ValueRoutes(None, ["127.0.0.1"])
    values.register(table)
    app = web.Application()
    app.add_routes(table)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}{API_PREFIX}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/runs", json={"lease_s": 30}) as response:
                assert response.status == 201
                run_id = (await response.json())["run_id"]
            assert await asyncio.to_thread(_write_as_a_port_would, run_id)
            async with session.get(base + f"/runs/{run_id}/value", params={"key": "lat"}) as response:
                reply = await response.json()
                assert response.status == 415, reply
                assert 'at lat["extra"][1]' in reply["error"] and "builtins.bytes" in reply["error"]
            async with session.get(base + f"/runs/{run_id}/value", params={"key": "ok"}) as response:
                assert response.status == 200 and response.content_type == TREE_TYPE
            async with session.delete(base + f"/runs/{run_id}") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


def _write_as_a_port_would(run_id: str) -> bool:
    """What a port node on the server does: attach to the run and write into it."""
    from discomfort.store import WorkflowContext

    context = WorkflowContext.open(run_id)
    try:
        context.save("lat", {"samples": torch.zeros(1, 4, 8, 8), "extra": [1, b"raw"]})
        context.save("ok", {"samples": torch.zeros(1, 4, 8, 8)})
        return sorted(context.list_keys()) == ["lat", "ok"]
    finally:
        context.shutdown()  # a re-attached handle's shutdown leaves the run to its owner


def test_a_tree_over_the_size_limit_is_refused_from_its_skeleton_before_any_payload(remote):
    from discomfort.remote import TREE_TYPE

    status, reply = http(remote, "POST", API_PREFIX + "/runs", b'{"lease_s": 30}',
                         content_type="application/json")
    run = API_PREFIX + f"/runs/{reply['run_id']}"
    try:
        # Two arrays of 60 MB: each under this server's 100 MB per value, together over it.
        # Only the skeleton is sent: had the server read on, the body would end too soon (400).
        header = {"kind": "torch", "dtype": "float32", "shape": [15, 1024, 1024], "n": 60 * 2**20}
        skeleton = json.dumps({"kind": "tree", "value": {"a": {"$array": 0}, "b": [{"$array": 1}]},
                               "arrays": [header, header]}).encode()
        frame = len(skeleton).to_bytes(4, "little") + skeleton
        status, reply = http(remote, "PUT", run + "/value?key=big", frame, content_type=TREE_TYPE)
        assert status == 413, reply
        assert "'big'" in reply["error"] and "DISCOMFORT_MAX_VALUE_MB" in reply["error"]
        # The same skeleton for one array is within the limit: then the missing payload shows.
        one = json.dumps({"kind": "tree", "value": [{"$array": 0}], "arrays": [header]}).encode()
        status, reply = http(remote, "PUT", run + "/value?key=one",
                             len(one).to_bytes(4, "little") + one, content_type=TREE_TYPE)
        assert status == 400 and "ended after 0" in reply["error"], reply
        # A placeholder naming no array is refused too.
        odd = json.dumps({"kind": "tree", "value": [{"$array": 3}], "arrays": []}).encode()
        status, reply = http(remote, "PUT", run + "/value?key=odd",
                             len(odd).to_bytes(4, "little") + odd, content_type=TREE_TYPE)
        assert status == 400 and "placeholder" in reply["error"], reply
        status, reply = http(remote, "GET", run + "/keys")
        assert reply["keys"] == {}
    finally:
        http(remote, "DELETE", run)


async def test_a_tree_over_a_limit_put_by_the_client_is_refused_whole(client):
    run = await client.Worker.remote.create_run(lease_s=30)
    try:
        half = torch.zeros(15, 1024, 1024)  # 60 MB: two of them are over 100 MB per value
        with pytest.raises(RemoteStoreError, match="'pair'.*DISCOMFORT_MAX_VALUE_MB") as caught:
            await run.put("pair", [half, {"again": half}])
        assert caught.value.status == 413
        await run.put("first", half)                  # 60 MB of the 160 MB budget
        await run.put("one", [half])                  # 120
        with pytest.raises(RemoteStoreError, match="'more'.*over its budget") as caught:
            await run.put("more", {"samples": torch.zeros(12, 1024, 1024)})   # 48 MB more: over
        assert caught.value.status == 413
        assert sorted(await run.keys()) == ["first", "one"]
    finally:
        await run.close()


async def test_a_recipe_made_from_a_stored_tensor_replays_it_on_the_remote_server(client):
    """A model kept by reference whose recipe reads a frozen copy of an input tensor: the
    copy goes up with the prompt that uses the recipe, and replays the tensor of its capture."""
    make = api(("DiscomfortInput", {"unique_id": "seed_image"}),
               ("DiscomfortTestWrap", {"image": ["1", 0]}),
               ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "box"}))
    use = api(("DiscomfortInput", {"unique_id": "box"}),
              ("DiscomfortTestUnwrap", {"box": ["1", 0]}),
              ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "out"}))
    with client.Context() as context:
        first = torch.rand(1, 4, 4, 3)
        await client.run([make], inputs={"seed_image": first}, context=context, progress=False)
        assert context.load("box")["format"] == "discomfort-recipe/1"
        context.save("seed_image", torch.zeros(1, 4, 4, 3))   # today's value differs...
        out = (await client.run([use], context=context, progress=False))["out"]
        assert torch.equal(out, first)                       # ...the recipe uses its own
        context.delete("seed_image")                         # and needs nothing but its copy
        assert torch.equal((await client.run([use], context=context, progress=False))["out"], first)

async def test_a_latent_in_a_loop_goes_up_once_and_comes_back_each_iteration(remote):
    """A tree is sent only when the server's run does not hold it already, as an array is."""
    credential = "Basic " + new_token()
    proxy = _AuthProxy(remote.url, credential)
    url = await proxy.start()
    same = api(("DiscomfortInput", {"unique_id": "lat"}),
               ("LatentUpscaleBy", {"samples": ["1", 0], "upscale_method": "nearest-exact",
                                    "scale_by": 1.0}),
               ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "lat"}))
    latent = {"samples": torch.rand(1, 4, 8, 8), "batch_index": [0]}
    try:
        async with await Discomfort.create(url=url, token=remote.token,
                                           headers={"Authorization": credential}) as behind:
            with behind.Context() as context:
                context.save("lat", latent)
                start = len(proxy.requests)
                result = await behind.run([same], context=context, iterations=3, progress=False)
                values = [m for m, p in proxy.requests[start:] if p.endswith("/value")]
                assert values.count("PUT") == 1 and values.count("GET") == 3, values
                assert torch.equal(result["lat"]["samples"], latent["samples"])
                assert result["lat"]["batch_index"] == [0]
    finally:
        await proxy.stop()


async def test_an_https_url_works_and_its_websocket_is_wss(remote, scratch, tmp_path):
    """The docs' client example, run against https:// (a TLS proxy in front, its certificate
    trusted through SSL_CERT_FILE, basic auth through PROXY_AUTH)."""
    import re
    import shutil
    import ssl

    from conftest import expected_output

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    credential = "Basic " + new_token()
    proxy = _AuthProxy(remote.url, credential, ssl_context=tls)
    url = await proxy.start()
    assert url.startswith("https://")
    try:
        code = re.findall(r"```py\n(.*?)```", (REPO / "docs" / "remote.md").read_text(), re.S)[0]
        env = dict(os.environ, COMFY_URL=url, DISCOMFORT_TOKEN=remote.token, PROXY_AUTH=credential,
                   SSL_CERT_FILE=str(cert))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, cwd=scratch, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(child.communicate(), 300)
        assert child.returncode == 0, err.decode()
        printed = [line.strip() for line in out.decode().splitlines()]
        for expected in expected_output(code):
            assert expected in printed, (expected, printed)
        assert proxy.refused == 0 and proxy.websockets >= 1  # wss, through TLS, with the header
        assert any(p.startswith(API_PREFIX) for p in proxy.paths)
    finally:
        await proxy.stop()


# --- a server in a network namespace of its own: reached only through a veth pair -------------

def test_a_server_in_its_own_network_namespace_runs_a_loop_and_saves_files(model_dir, tmp_path):
    try:
        namespace = NetNamespace()
    except OSError as exc:
        pytest.skip(f"no network namespace here (needs root and ip): {exc}")
    token = new_token()
    try:
        remote = RemoteComfy(tmp_path / "other-store", token, listen=namespace.ns_ip,
                             netns=namespace.name)
        try:
            port = urllib.parse.urlsplit(remote.url).port
            assert urllib.parse.urlsplit(remote.url).hostname == namespace.ns_ip
            import socket

            with pytest.raises(OSError):  # not on our loopback: only through the veth pair
                socket.create_connection(("127.0.0.1", port), timeout=2).close()

            async def drive():
                async with await Discomfort.create(url=remote.url, token=token) as discomfort:
                    assert discomfort.Worker.remote is not None
                    with discomfort.Context() as context:
                        context.save("img", IMAGE)
                        result = await discomfort.run([INVERT], context=context, iterations=5,
                                                      progress=False)
                        assert torch.allclose(result["img"], 1 - IMAGE)
                        assert remote.run_dirs() and not remote.run_dirs() & _local_run_dirs()
                    saving = api(("EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 255}),
                                 ("SaveImage", {"images": ["1", 0], "filename_prefix": "ns"}))
                    await discomfort.run([saving], progress=False)
                    [image] = await discomfort.load_images()
                    assert image.shape == (1, 8, 8, 3)

            asyncio.run(drive())
        finally:
            remote.stop()
    finally:
        namespace.remove()


async def test_a_run_the_server_dropped_is_replaced_and_the_next_run_works(client, remote):
    """The server restarted, or our lease ran out while the laptop slept: our values are all
    here, so the next prompt gets a new run and sends what it reads."""
    with client.Context() as context:
        before = remote.run_dirs()
        await client.run([INVERT], inputs={"img": IMAGE}, context=context, progress=False)
        [dropped] = remote.run_dirs() - before
        status, _ = http(remote, "DELETE", API_PREFIX + f"/runs/{dropped}")  # behind our back
        assert status == 200 and dropped not in remote.run_dirs()
        result = await client.run([INVERT], context=context, progress=False)
        assert torch.allclose(result["img"], IMAGE)  # inverted twice
        assert len(remote.run_dirs() - before) == 1 and dropped not in remote.run_dirs()
