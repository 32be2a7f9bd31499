"""Does Discomfort's overhead vanish beside real model work, and what does keeping a model
loaded by reference save?

Both cases drive real Stable Diffusion sampling: the tiny random-weight SD1.5 checkpoint of
tests/sd_support.py (278 MB; stock ComfyUI loads and samples it on CPU), 64x64, 4 steps, one
headless ComfyUI server started once for the whole run. Only ratios of two timings measured
in this run mean anything: absolute times depend on the machine and its load.

1. ``run()`` of ``workflows/sample.json`` (after ``load_checkpoint.json`` once: the model,
   CLIP and VAE come in by reference), the prompt texts and size passed as ``inputs`` and a
   new seed every iteration, so the sampler really runs; against *the same bound prompt*,
   recorded as ``run()`` queued it (a hook on ``Worker.queue``), re-posted raw with a new
   seed: ``Worker.queue`` + ``Worker.wait(history=False)``, the POST and the websocket wait
   with none of Discomfort's preparation (conversion, input checks and saves, splicing the
   recipes, binding, the proof the output arrived, loading the result). The server does the
   same work for both: the loader and the text encoders are cached, the sampler, the decode
   and the outputs run. Target: ``run()`` within 5% of the raw post.
2. A by-reference loop, ``load_checkpoint.json`` once then ``sample.json`` {RUNS} times with
   new seeds, against the same {RUNS} images made with the checkpoint reloaded every run:
   ``txt2img.json`` (the whole graph, loader inline) with a new checkpoint *file name* each
   run, a symlink to the same file (ComfyUI caches a loader by its inputs, so a new name
   makes it really run). Each loop gets a fresh context and checkpoint names never used
   before, so the by-reference loop pays its one load every time.

The checks that end the run with a non-zero exit, never a timing: after the raw replay of a
seed, ``run()`` of that seed finds the sampler's result in ComfyUI's cache (the same inputs:
the baseline is run()'s own prompt) and gives the same image; in case 1 the sampler ran once
and the loader never in every turn; the by-reference loop gives the same image as the whole
graph for the same seed; the loader ran exactly once per by-reference loop and {RUNS} times
per reloading loop. The machine may
be small and shared: every case runs once untimed first, ours and the baseline take turns in
a rotating order (benchmarks/harness.py), and the table shows medians. The last line,
``RESULTS {json}``, is the table for the tests: each case's ``ours_ms``, ``baseline_ms``,
``ratio``, ``target`` (of the ratio, or null) and ``within_target``; case 1 with
``sampler_runs`` and ``loader_runs`` per turn, case 2 with ``loader_runs`` per loop, each
{"ours": [...], "baseline": [...]} (untimed turns included); ``runs``, ``failures``.

    .venv/bin/python benchmarks/generation_bench.py            # 16 turns / 3 loops, 6 runs each
    .venv/bin/python benchmarks/generation_bench.py --quick    # 2 turns / 1 loop, 3 runs each
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import print_results, turns  # benchmarks/harness.py (scripts: their folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sd_support import tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
RUNS = 6
TEXTS = {"prompt": "a lighthouse at dusk", "negative": "text, watermark"}
SMALL = {"steps": 4, "width": 64, "height": 64}
LOADER = "CheckpointLoaderSimple"
HEADER = (f"{'case':<44} {'ours (ms)':>10} {'baseline (ms)':>14} {'ratio':>7} {'target':>9} "
          f"{'loader runs':>12}")

__doc__ = __doc__.replace("{RUNS}", str(RUNS))


def wf(name: str) -> str:
    return str(WORKFLOWS / f"{name}.json")


class Checkpoints:
    """Names for the tiny checkpoint never used before: symlinks to the one cached file, in
    a models folder of this run's own, all removed by ``remove()``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.target = tiny_checkpoint()
        self.made: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def fresh(self) -> str:
        link = self.folder / f"bench-sd15-{len(self.made):03d}.safetensors"
        link.symlink_to(self.target)
        self.made.append(link)
        return link.name

    def remove(self) -> None:
        for link in self.made:
            link.unlink(missing_ok=True)
        self.made.clear()


class Executions:
    """Executions of the sampler and the loader in one prompt, from the server's events."""

    def __init__(self):
        self.sampler = self.loader = 0

    def __call__(self, event) -> None:
        if event.type == "executing":
            self.sampler += event.class_type == "KSampler"
            self.loader += event.class_type == LOADER


def with_seed(prompt: dict, seed: int) -> dict:
    """The bound prompt with its one sampler seed set to ``seed`` (only that node copied)."""
    seeded = [nid for nid, node in prompt.items() if isinstance(node.get("inputs", {}).get("seed"), int)]
    if len(seeded) != 1:
        raise SystemExit(f"the recorded prompt has {len(seeded)} nodes with a seed, not 1: "
                         "the baseline cannot set a new one")
    node = prompt[seeded[0]]
    return dict(prompt, **{seeded[0]: dict(node, inputs=dict(node["inputs"], seed=seed))})


async def record_queued(d, coroutine) -> list[tuple[dict, dict]]:
    """Await ``coroutine`` (a run()) and return every (prompt, extra_data) it queued, as
    posted: a hook on the instance's ``Worker.queue``, removed afterwards."""
    queued: list[tuple[dict, dict]] = []
    original = d.Worker.queue

    async def queue(prompt: dict, extra_data: dict | None = None) -> str:
        queued.append((copy.deepcopy(prompt), copy.deepcopy(extra_data)))
        return await original(prompt, extra_data)

    d.Worker.queue = queue
    try:
        await coroutine
    finally:
        del d.Worker.queue  # back to the class's method
    return queued


async def run_cases(models: Path, turns_1: int, loops_2: int, runs: int) -> tuple[list[tuple], dict]:
    from discomfort import Discomfort, WorkflowContext  # after DISCOMFORT_ROOT is set

    names = Checkpoints(models)
    print("starting ComfyUI...", flush=True)
    started = time.perf_counter()
    d = await Discomfort.create(model_paths={"checkpoints": str(models)})
    print(f"started in {time.perf_counter() - started:.1f} s at {d.Worker.url}", flush=True)
    seeds = itertools.count(1000)  # a seed never used before: the sampler always runs
    rows, notes = [], {}
    failures: list[str] = []
    try:
        # --- 1. run() of sample.json against its own bound prompt posted raw ----------------
        with WorkflowContext() as ctx:
            await d.run(wf("load_checkpoint"), inputs={"checkpoint": names.fresh()}, context=ctx,
                        progress=False)

            async def ours_sample(seed: int) -> tuple[int, int]:
                """(sampler runs, loader runs)"""
                await d.run(wf("sample"), inputs={**TEXTS, **SMALL, "seed": seed}, context=ctx,
                            progress=False)
                return d.last_run.executions("KSampler"), d.last_run.executions(LOADER)

            queued = await record_queued(d, ours_sample(next(seeds)))
            if len(queued) != 1:
                raise SystemExit(f"run() of sample.json queued {len(queued)} prompts, not 1")
            bound, extra = queued[0]

            async def raw_sample(seed: int) -> tuple[int, int]:
                """(sampler runs, loader runs)"""
                count = Executions()
                prompt_id = await d.Worker.queue(with_seed(bound, seed), extra)
                await d.Worker.wait(prompt_id, history=False, on_event=count)
                return count.sampler, count.loader

            # the check that the baseline is run()'s own prompt: after the raw replay of a seed,
            # run() of the same seed finds the sampler's result in ComfyUI's cache (the same
            # inputs, the same cache key), and gives back the same image
            seed = next(seeds)
            ran = [await raw_sample(seed)]
            by_raw = ctx.load("image")
            ran.append(await ours_sample(seed))
            by_run = ctx.load("image")
            if tuple(by_run.shape) != (1, SMALL["height"], SMALL["width"], 3) or \
                    not torch.equal(by_run, by_raw) or ran != [(1, 0), (0, 0)]:
                raise SystemExit(f"the raw replay is not run()'s own prompt: images "
                                 f"{tuple(by_raw.shape)} and {tuple(by_run.shape)}, equal: "
                                 f"{torch.equal(by_run, by_raw)}; (sampler, loader) runs {ran}, "
                                 f"not [(1, 0), (0, 0)]")

            print(f"measuring 1: sample.json, run() vs its prompt posted raw, 1 untimed + "
                  f"{turns_1} turns each...", flush=True)
            cases = {"run()": ours_sample, "raw": raw_sample}
            times: dict[str, list[float]] = {name: [] for name in cases}
            cpu: dict[str, list[float]] = {name: [] for name in cases}  # this process's own
            loads: dict[str, list[int]] = {name: [] for name in cases}  # per turn
            samples: dict[str, list[int]] = {name: [] for name in cases}
            order = list(cases) + list(turns(list(cases), turns_1))
            for index, name in enumerate(order):
                start, start_cpu = time.perf_counter(), time.process_time()
                sampled, loaded = await cases[name](next(seeds))
                elapsed = (time.perf_counter() - start) * 1000
                elapsed_cpu = (time.process_time() - start_cpu) * 1000
                if sampled != 1:
                    failures.append(f"case 1, {name}: the sampler ran {sampled} times, not once")
                loads[name].append(loaded)
                samples[name].append(sampled)
                if index >= len(cases):  # the first turn of each is untimed
                    times[name].append(elapsed)
                    cpu[name].append(elapsed_cpu)
            loaded_1 = {name: sum(loads[name]) for name in cases}
            if any(loaded_1.values()):
                failures.append(f"case 1: the loader ran {loaded_1['run()']} / {loaded_1['raw']} "
                                "times (run() / raw), not 0: the model did not stay loaded")
            ours, raw = (statistics.median(times[k]) for k in cases)
            rows.append(("1. sample.json, one run (seed new each time)", ours, raw, 1.05, "x",
                         f"{loaded_1['run()']} / {loaded_1['raw']}"))
            notes["runs of"] = {rows[-1][0]: {"sampler_runs": {"ours": samples["run()"],
                                                               "baseline": samples["raw"]},
                                              "loader_runs": {"ours": loads["run()"],
                                                              "baseline": loads["raw"]}}}
            notes["overhead"] = ours - raw
            notes["client cpu"] = tuple(statistics.median(cpu[k]) for k in cases)

        # --- 2. by reference: one load, RUNS samples; reloaded: RUNS whole graphs -------------
        async def by_reference(ctx, load_ms: list[float]) -> int:
            start = time.perf_counter()
            await d.run(wf("load_checkpoint"), inputs={"checkpoint": names.fresh()}, context=ctx,
                        progress=False)
            load_ms.append((time.perf_counter() - start) * 1000)
            loads = d.last_run.executions(LOADER)
            for _ in range(runs):
                await d.run(wf("sample"), inputs={**TEXTS, **SMALL, "seed": next(seeds)},
                            context=ctx, progress=False)
                loads += d.last_run.executions(LOADER)
            return loads

        async def reloaded(ctx, load_ms: list[float]) -> int:
            loads = 0
            for _ in range(runs):
                await d.run(wf("txt2img"), inputs={"checkpoint": names.fresh(), **TEXTS, **SMALL,
                                                   "seed": next(seeds)}, context=ctx, progress=False)
                loads += d.last_run.executions(LOADER)
            return loads

        # the check that both loops compute the same thing: the same seed, the same image
        seed = next(seeds)
        with WorkflowContext() as ctx:
            await d.run(wf("load_checkpoint"), inputs={"checkpoint": names.fresh()}, context=ctx,
                        progress=False)
            via_ref = (await d.run(wf("sample"), inputs={**TEXTS, **SMALL, "seed": seed},
                                   context=ctx, progress=False))["image"]
        with WorkflowContext() as ctx:
            whole = (await d.run(wf("txt2img"), inputs={"checkpoint": names.fresh(), **TEXTS,
                                                        **SMALL, "seed": seed},
                                 context=ctx, progress=False))["image"]
        if not torch.equal(via_ref, whole):
            raise SystemExit("sample.json by reference and txt2img.json give different images "
                             "for the same seed")

        print(f"measuring 2: {runs} runs per loop, 1 untimed + {loops_2} loops each...", flush=True)
        loops = {"by reference": by_reference, "reloaded": reloaded}
        loop_times: dict[str, list[float]] = {name: [] for name in loops}
        counts: dict[str, list[int]] = {name: [] for name in loops}
        load_ms: list[float] = []
        order = list(loops) + list(turns(list(loops), loops_2))
        for index, name in enumerate(order):
            ctx = WorkflowContext()  # made and shut down outside the timing
            try:
                start = time.perf_counter()
                count = await loops[name](ctx, load_ms)
                elapsed = (time.perf_counter() - start) * 1000
            finally:
                ctx.shutdown()
            counts[name].append(count)
            if index >= len(loops):
                loop_times[name].append(elapsed)
        ref, reload = (statistics.median(loop_times[k]) for k in loops)
        ref_counts, reload_counts = counts["by reference"], counts["reloaded"]
        loader_text = f"{count_text(ref_counts)} / {count_text(reload_counts)}"
        rows.append((f"2. {runs} runs, by reference vs reloaded", ref, reload, None, "", loader_text))
        notes["runs of"][rows[-1][0]] = {"loader_runs": {"ours": ref_counts, "baseline": reload_counts}}
        rows.append((f"2. {runs} runs, per run", ref / runs, reload / runs, None, "", ""))
        notes["one load"] = statistics.median(load_ms[1:])
        notes["saved per run"] = (reload - ref) / runs
        if any(c != 1 for c in ref_counts):
            failures.append(f"the by-reference loop ran the loader {count_text(ref_counts)} times, "
                            "not once: the benchmark measures the wrong thing")
        if any(c != runs for c in reload_counts):
            failures.append(f"the reloading loop ran the loader {count_text(reload_counts)} times, "
                            f"not {runs}: the baseline is not reloading the checkpoint")
    finally:
        try:
            await d.shutdown()
        finally:
            names.remove()
    notes["failures"] = failures
    return rows, notes


def count_text(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def print_table(rows: list[tuple]) -> None:
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for case, ours, baseline, target, unit, loader in rows:
        ratio = ours / baseline
        over = target is not None and ratio > target
        goal = f"<= {target:g}{unit}" if target is not None else "-"
        flag = "  (over target)" if over else ""
        print(f"{case:<44} {ours:>10.1f} {baseline:>14.1f} {ratio:>6.2f}x {goal:>9} "
              f"{loader or '':>12}{flag}")


def results(rows: list[tuple], runs_of: dict[str, dict]) -> list[dict]:
    """The table's rows as the report's cases, each with the executions counted for it."""
    return [{"case": case, "ours_ms": ours, "baseline_ms": baseline, "ratio": ours / baseline,
             "target": target, "within_target": None if target is None else ours / baseline <= target,
             **runs_of.get(case, {})}
            for case, ours, baseline, target, _unit, _loader in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 turns, 1 loop of 3 runs (a smoke run)")
    parser.add_argument("--repeat", type=int,
                        help="timed turns of case 1 (default 16, 2 with --quick)")
    parser.add_argument("--loops", type=int,
                        help="timed loops of case 2 (default 3, 1 with --quick)")
    parser.add_argument("--runs", type=int,
                        help=f"sample runs per loop in case 2 (default {RUNS}, 3 with --quick)")
    parser.add_argument("--size", type=int, default=SMALL["width"],
                        help="image width and height (default 64; more work per sample "
                             "shows how the overhead shrinks beside it)")
    parser.add_argument("--steps", type=int, default=SMALL["steps"], help="sampler steps (default 4)")
    args = parser.parse_args()
    SMALL.update(width=args.size, height=args.size, steps=args.steps)
    turns_1 = args.repeat or (2 if args.quick else 16)
    loops_2 = args.loops or (1 if args.quick else 3)
    runs = args.runs or (3 if args.quick else RUNS)

    print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    workdir = tempfile.mkdtemp(prefix="discomfort-gen-bench-")  # mode 0700: a valid store root
    os.environ["DISCOMFORT_ROOT"] = str(Path(workdir) / "store")  # never the user's own store
    print(f"store root: {os.environ['DISCOMFORT_ROOT']}")
    started = time.perf_counter()
    try:
        checkpoint = tiny_checkpoint()  # generated once into the cache dir (278 MB)
        rows, notes = asyncio.run(run_cases(Path(workdir) / "models" / "checkpoints",
                                            turns_1, loops_2, runs))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(rows)
    print(f"\ncheckpoint: {checkpoint.name} ({checkpoint.stat().st_size / 1024 ** 2:.0f} MB, "
          f"random weights); {SMALL['width']}x{SMALL['height']}, {SMALL['steps']} steps, CPU")
    print(f"1: run() minus the raw post of its own prompt: {notes['overhead']:+.1f} ms per run "
          f"(medians); in this process's CPU time, {notes['client cpu'][0]:.1f} ms vs "
          f"{notes['client cpu'][1]:.1f} ms; loader runs = run() / raw, over all turns (the model "
          f"stays loaded)")
    print(f"2: the load_checkpoint.json run (the one load) took {notes['one load']:.0f} ms "
          f"(median), included above; reloading costs {notes['saved per run']:.0f} ms per run "
          f"over the reference; loader runs = per loop, by reference / reloaded, every loop")
    print(f"ratio = ours / baseline (below 1: ours is faster); medians of {turns_1} turns (1) and "
          f"{loops_2} loops (2); total {time.perf_counter() - started:.0f} s")
    print_results(results(rows, notes["runs of"]), runs=runs, failures=notes["failures"])
    if notes["failures"]:
        sys.exit("\n".join(notes["failures"]))


if __name__ == "__main__":
    main()
