"""What do the remote value routes cost, against raw HTTP to the same server?

A ComfyUI that cannot share our store is started the way the tests start one (a store root of
its own, on 127.0.0.2: ``tests/remote_support.py``), and a managed local one beside it.

1. A 64 MB float32 tensor into a run and back out (``RemoteRun.put`` then ``get``: the array
   wire format, the server's store in between) against a raw HTTP upload and download of the
   same bytes to the same server (``POST /upload/image`` as a file, ``GET /view`` of it, with
   aiohttp, the bytes prepared beforehand). Target: at most 1.2x.
2. A tiny workflow's ``run()`` (DiscomfortInput "img" -> ImageInvert -> DiscomfortOutput
   "img", a new 1x64x64x3 image each time) on the remote server against the same ``run()`` on
   the local managed server (shared memory). No target: it shows what the HTTP hop adds.

Ours and the baseline take turns (``harness.turns``); medians are shown, and only the ratios,
measured in the same run, mean anything. Nothing here asserts a timing.

    .venv/bin/python benchmarks/remote_bench.py            # 7 / 15 repetitions
    .venv/bin/python benchmarks/remote_bench.py --quick    # 2 / 3 (a smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import torch

from discomfort import Discomfort
from discomfort.auth import TOKEN_HEADER, new_token
from harness import print_results, turns  # benchmarks/harness.py (its folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from remote_support import RemoteComfy  # noqa: E402  (tests/remote_support.py: the other machine)

BIG_SHAPE = (16, 1024, 1024)  # float32: 64 MiB
TARGET = 1.2
HEADER = f"{'case':<52} {'ours (ms)':>10} {'baseline (ms)':>14} {'ratio':>7} {'target':>7}"
INVERT = {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
          "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
          "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "img"}}}


async def measure(functions: dict, repetitions: int) -> dict[str, float]:
    """Each function once untimed, then ``repetitions`` timed turns each; median seconds."""
    for function in functions.values():
        await function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for name in turns(list(functions), repetitions):
        start = time.perf_counter()
        await functions[name]()
        times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def case(name: str, ours: float, baseline: float, target: float | None) -> dict:
    ratio = ours / baseline
    row = {"case": name, "ours_s": ours, "baseline_s": baseline, "ratio": ratio, "target": target,
           "within_target": None if target is None else ratio <= target}
    shown = "-" if target is None else f"{target:g}x"
    print(f"{name:<52} {ours * 1e3:>10.1f} {baseline * 1e3:>14.1f} {ratio:>6.2f}x {shown:>7}", flush=True)
    return row


async def tensor_case(remote_client: Discomfort, url: str, token: str, repetitions: int) -> dict:
    big = torch.rand(BIG_SHAPE)
    raw = big.numpy().tobytes()  # the baseline's bytes, made beforehand
    run = await remote_client.Worker.remote.create_run()
    name = f"bench-{uuid.uuid4().hex[:8]}.bin"
    headers = {TOKEN_HEADER: token}
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))

    async def ours():
        await run.put("big", big)
        back = await run.get("big")
        assert back.shape == big.shape

    async def baseline():
        form = aiohttp.FormData()
        form.add_field("image", raw, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true")
        async with session.post(url + "/upload/image", data=form, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
        async with session.get(url + "/view", params={"filename": name, "type": "input"},
                               headers=headers) as reply:
            body = await reply.read()
            assert reply.status == 200 and len(body) == len(raw)

    try:
        times = await measure({"ours": ours, "baseline": baseline}, repetitions)
        back = await run.get("big")
        assert torch.equal(back, big), "the tensor came back changed"
    finally:
        await session.close()
        await run.close()
    return case("1. 64 MB tensor into a run and out, vs raw upload+download", times["ours"],
                times["baseline"], TARGET)


async def run_case(remote_client: Discomfort, local_client: Discomfort, repetitions: int) -> dict:
    async def one(client: Discomfort):
        image = torch.rand(1, 64, 64, 3)
        result = await client.run([INVERT], inputs={"img": image}, progress=False)
        assert torch.allclose(result["img"], 1 - image)

    async def ours():
        await one(remote_client)

    async def baseline():
        await one(local_client)

    times = await measure({"ours": ours, "baseline": baseline}, repetitions)
    return case("2. tiny workflow run(): remote vs local server", times["ours"], times["baseline"], None)


async def main(quick: bool) -> int:
    tensor_reps, run_reps = (2, 3) if quick else (7, 15)
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="discomfort-remote-bench-") as scratch:
        remote = RemoteComfy(Path(scratch) / "store", token)
        try:
            remote_client = await Discomfort.create(url=remote.url, token=token)
            local_client = await Discomfort.create()
            try:
                print(HEADER)
                cases = [await tensor_case(remote_client, remote.url, token, tensor_reps),
                         await run_case(remote_client, local_client, run_reps)]
            finally:
                await remote_client.shutdown()
                await local_client.shutdown()
        finally:
            remote.stop()
    print_results(cases, quick=quick)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
