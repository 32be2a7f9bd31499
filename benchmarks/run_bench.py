"""How much does Discomfort.run() add to a ComfyUI prompt, compared with the raw API?

Each case times Discomfort ("ours") and a baseline that does the same work with no library
around it, against the same headless ComfyUI server started once for the whole run. Only the
ratio ours / baseline, both measured in this run, means anything: absolute times depend on the
machine and its load.

1. ``run()`` of a tiny bound workflow, DiscomfortInput("img") -> ImageInvert ->
   DiscomfortOutput("out"), with a 1x64x64x3 image saved in the context first, against the raw
   round trip of *the same prompt*: the same save, the ports bound with the same protocol
   (``discomfort.binding.bind_prompt``), POST /prompt with aiohttp, then a wait on a websocket
   of its own client_id for the prompt's ``execution_success``. The server does the same work
   for both, so the ratio is what ``run()`` adds: port discovery, type checks, the proof that
   each output arrived, loading the result. "new": every repetition saves a new random image,
   so ComfyUI's cache skips nothing upstream; "cached": the same image every time.
   For scale, one more row compares ``run()`` with a port-free prompt doing the same image
   work inside ComfyUI (EmptyImage 64x64 -> ImageInvert -> PreviewImage): that ratio also
   counts moving the image in from Python and out again.
2. ``ui_to_api`` of the largest template workflow that converts against the test fixtures'
   object_info (no server involved; no baseline, only the target).
3. A 20-iteration loop, ``run(..., iterations=20)`` on DiscomfortInput("img") -> ImageInvert ->
   DiscomfortOutput("img") (the output feeds the next iteration's input), against 20 raw
   round trips with a new color each; reported whole and per iteration.

The machine may be small and shared: every case runs once untimed first, ours and the baseline
alternate within each repetition, and the table shows medians. Nothing here asserts a timing.
The last line, ``RESULTS {json}``, is the table for the tests: each case's ``ours_ms``,
``baseline_ms`` and ``ratio`` (null for case 2), ``target`` and ``target_unit`` ("x": of the
ratio; "ms": of ours, for case 2; null: no target) and ``within_target``.

    .venv/bin/python benchmarks/run_bench.py            # 50 / 200 / 11 repetitions
    .venv/bin/python benchmarks/run_bench.py --quick    # 3 / 20 / 2 repetitions (a smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import itertools
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import torch
from websockets.asyncio.client import connect as ws_connect

from discomfort.auth import TOKEN_HEADER
from harness import print_results, turns  # benchmarks/harness.py (scripts: their folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "tests" / "fixtures" / "conversion" / "templates"
OBJECT_INFO = REPO / "tests" / "fixtures" / "object_info.json"
LOOP_ITERATIONS = 20
IMAGE_SHAPE = (1, 64, 64, 3)
HEADER = f"{'case':<46} {'ours (ms)':>10} {'baseline (ms)':>14} {'ratio':>7} {'target':>9}"


def api(*nodes: tuple) -> dict:
    """An API prompt from (class_type, inputs) pairs, ids "1", "2", ..."""
    return {str(i): {"class_type": kind, "inputs": inputs} for i, (kind, inputs) in enumerate(nodes, 1)}


def invert(out_id: str) -> dict:
    return api(("DiscomfortInput", {"unique_id": "img"}),
               ("ImageInvert", {"image": ["1", 0]}),
               ("DiscomfortOutput", {"value": ["2", 0], "unique_id": out_id}))


def raw_invert(color: int) -> dict:
    return api(("EmptyImage", {"width": IMAGE_SHAPE[2], "height": IMAGE_SHAPE[1], "batch_size": 1,
                               "color": color}),
               ("ImageInvert", {"image": ["1", 0]}),
               ("PreviewImage", {"images": ["2", 0]}))


async def measure(functions: dict, repetitions: int) -> dict[str, float]:
    """Median milliseconds of each coroutine function; each runs once untimed, then in a
    rotating order."""
    for fn in functions.values():
        await fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for name in turns(list(functions), repetitions):
        start = time.perf_counter()
        await functions[name]()
        times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


# --- the baseline: the plain HTTP + websocket API ---------------------------------------------

class RawClient:
    """POST /prompt and wait for its execution_success on a websocket: nothing else."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.headers = {TOKEN_HEADER: token}  # a managed server is its owner's
        self.client_id = os.urandom(16).hex()
        self.colors = itertools.count(1)  # a color never used before: nothing cached

    async def __aenter__(self) -> RawClient:
        self.session = aiohttp.ClientSession(headers=self.headers)
        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        self.ws = await ws_connect(ws_url, max_size=None, additional_headers=self.headers)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.ws.close()
        await self.session.close()

    async def round_trip(self, prompt: dict, extra_data: dict | None = None) -> None:
        body = {"prompt": prompt, "client_id": self.client_id, "extra_data": extra_data or {}}
        async with self.session.post(self.url + "/prompt", json=body) as reply:
            reply.raise_for_status()
            prompt_id = (await reply.json())["prompt_id"]
        while True:  # messages that came before the reply wait in the websocket
            message = await self.ws.recv()
            if not isinstance(message, str):
                continue  # binary previews
            message = json.loads(message)
            data = message.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] == "execution_success":
                return
            if message["type"] in ("execution_error", "execution_interrupted"):
                raise RuntimeError(f"raw prompt failed: {message}")

    async def new(self) -> None:
        await self.round_trip(raw_invert(next(self.colors)))

    async def loop(self) -> None:
        for _ in range(LOOP_ITERATIONS):
            await self.new()


# --- the cases ---------------------------------------------------------------------------------

def largest_template(object_info: dict) -> tuple[Path, dict]:
    """The largest template file that converts with the fixture object_info."""
    from discomfort.errors import UnknownNodeTypesError
    from discomfort.graph import ui_to_api

    files = [Path(f) for f in glob.glob(str(TEMPLATES / "*.json")) if not f.endswith(".expected.json")]
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        workflow = json.loads(path.read_text())
        try:
            ui_to_api(workflow, object_info)
        except UnknownNodeTypesError:
            continue
        return path, workflow
    raise SystemExit(f"no template under {TEMPLATES} converts")


def conversion_ms(repetitions: int) -> tuple[str, float]:
    from discomfort.graph import ui_to_api

    object_info = json.loads(OBJECT_INFO.read_text())
    path, workflow = largest_template(object_info)
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        ui_to_api(workflow, object_info)
        times.append((time.perf_counter() - start) * 1000)
    return f"{path.name} ({path.stat().st_size // 1024} kB)", statistics.median(times)


async def run_cases(reps_run: int, reps_loop: int) -> tuple[list[tuple], dict]:
    from discomfort import Discomfort, WorkflowContext  # after DISCOMFORT_ROOT is set
    from discomfort.binding import bind_prompt

    print("starting ComfyUI...", flush=True)
    started = time.perf_counter()
    d = await Discomfort.create()
    print(f"started in {time.perf_counter() - started:.1f} s at {d.Worker.url}", flush=True)
    rows, notes = [], {}
    ctx = WorkflowContext()
    try:
        async with RawClient(d.Worker.url, d.Worker.server.token) as raw:
            same = torch.rand(IMAGE_SHAPE)
            one, loop = invert("out"), invert("img")

            async def ours(image):
                ctx.save("img", image)
                await d.run(one, context=ctx, progress=False)

            async def raw_same_prompt(image):
                ctx.save("img", image)
                bound, extra, _ = bind_prompt(one, ctx)
                await raw.round_trip(bound, extra)

            async def ours_new():
                await ours(torch.rand(IMAGE_SHAPE))

            async def ours_cached():
                await ours(same)

            async def raw_new():
                await raw_same_prompt(torch.rand(IMAGE_SHAPE))

            async def raw_cached():
                await raw_same_prompt(same)

            async def ours_loop():
                await d.run(loop, inputs={"img": torch.rand(IMAGE_SHAPE)}, iterations=LOOP_ITERATIONS,
                            context=ctx, progress=False)

            # the check that the cases measure what they claim: the image came back inverted
            result = await d.run(one, inputs={"img": same}, context=ctx, progress=False)
            if not torch.allclose(result["out"], 1 - same):
                raise SystemExit("run() gave back something else than the inverted image")

            print(f"measuring 1: one tiny prompt, {reps_run} repetitions...", flush=True)
            m = await measure({"ours new": ours_new, "raw new": raw_new, "ours cached": ours_cached,
                               "raw cached": raw_cached, "port-free": raw.new}, reps_run)
            rows.append(("1. run() tiny workflow, new value", m["ours new"], m["raw new"], 1.5, "x"))
            rows.append(("1. run() tiny workflow, cached (same value)", m["ours cached"],
                         m["raw cached"], 1.5, "x"))
            rows.append(("1. run() vs a port-free prompt (for scale)", m["ours new"], m["port-free"],
                         None, ""))

            print(f"measuring 3: {LOOP_ITERATIONS}-iteration loop, {reps_loop} repetitions...", flush=True)
            m3 = await measure({"ours": ours_loop, "raw": raw.loop}, reps_loop)
            rows.append((f"3. loop of {LOOP_ITERATIONS} iterations, whole", m3["ours"], m3["raw"], None, ""))
            rows.append((f"3. loop of {LOOP_ITERATIONS}, per iteration", m3["ours"] / LOOP_ITERATIONS,
                         m3["raw"] / LOOP_ITERATIONS, None, ""))
            notes["loop overhead"] = (m3["ours"] - m3["raw"]) / LOOP_ITERATIONS
    finally:
        ctx.shutdown()
        await d.shutdown()
    return rows, notes


def print_table(rows: list[tuple]) -> None:
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for case, ours, baseline, target, unit in rows:
        if baseline is None:
            ratio_text, over = "-", target is not None and ours > target
        else:
            ratio = ours / baseline
            ratio_text, over = f"{ratio:.2f}x", target is not None and ratio > target
        base_text = "-" if baseline is None else f"{baseline:.2f}"
        goal = f"<= {target:g}{unit}" if target is not None else "-"
        flag = "  (over target)" if over else ""
        print(f"{case:<46} {ours:>10.2f} {base_text:>14} {ratio_text:>7} {goal:>9}{flag}")


def results(rows: list[tuple]) -> list[dict]:
    """The table's rows as the report's cases: a target of unit "x" is the ratio's, " ms" ours."""
    cases = []
    for case, ours, baseline, target, unit in rows:
        ratio = None if baseline is None else ours / baseline
        judged = ours if unit == " ms" else ratio
        cases.append({"case": case, "ours_ms": ours, "baseline_ms": baseline, "ratio": ratio,
                      "target": target, "target_unit": unit.strip() or None,
                      "within_target": None if target is None else judged <= target})
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (a smoke run)")
    parser.add_argument("--repeat", type=int,
                        help="timed repetitions of case 1 (default 50, 3 with --quick)")
    args = parser.parse_args()
    reps_run = args.repeat or (3 if args.quick else 50)
    reps_convert = 20 if args.quick else 200
    reps_loop = 2 if args.quick else 11

    print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    workdir = tempfile.mkdtemp(prefix="discomfort-run-bench-")  # mode 0700: a valid store root
    os.environ["DISCOMFORT_ROOT"] = workdir  # never the user's own store
    print(f"store root: {workdir}")
    started = time.perf_counter()
    try:
        print(f"measuring 2: conversion, {reps_convert} repetitions...", flush=True)
        template, convert_ms = conversion_ms(reps_convert)
        rows, notes = asyncio.run(run_cases(reps_run, reps_loop))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows.insert(3, ("2. ui_to_api, largest template", convert_ms, None, 10, " ms"))
    print_table(rows)
    print(f"\n2: {template}")
    print(f"3: run() adds {notes['loop overhead']:.2f} ms per loop iteration over a raw round trip")
    print(f"ratio = ours / baseline (below 1: ours is faster); medians; "
          f"total {time.perf_counter() - started:.0f} s")
    print_results(results(rows), template=template, loop_iterations=LOOP_ITERATIONS,
                  loop_overhead_ms=notes["loop overhead"])


if __name__ == "__main__":
    main()
