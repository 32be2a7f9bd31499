"""What does pass-by-reference save when a loop reuses a model?

The loop: ``load_model.json`` once (UpscaleModelLoader -> DiscomfortOutput("upscaler"), the
model kept in the context as a reference), then ``upscale.json`` {RUNS} times with a new
image each run (DiscomfortInput("upscaler") + DiscomfortInput("image") ->
ImageUpscaleWithModel -> DiscomfortOutput("upscaled")). The spliced recipe has the same cache
signature in every prompt, so ComfyUI loads the model once for the whole loop.

The baseline: the same {RUNS} upscales with the model rebuilt on every run (what a port that
always re-runs causes): ``whole.json``, the same graph with the loader inline, whose loader
reads a new file name each run (the same bytes, hard-linked under another name). A new name
is a new cache signature, so the loader really runs. (An ``"is_changed"`` entry in the prompt
would not do: ComfyUI 0.3.x honours it only for nodes that define IS_CHANGED /
fingerprint_inputs, and UpscaleModelLoader does not.)

Both loops count the loader's ``executing`` events (``on_event=``; in the by-reference loop
the loader's id is the recipe's output node in every later prompt): 1 and {RUNS} is what the
benchmark is meant to measure, and anything else for the by-reference loop ends it with a
non-zero exit. Each loop gets a fresh WorkflowContext (made and shut down outside the timing)
and model names never used before, so the by-reference loop pays its one load every time.

The model is a random-weight Real-ESRGAN Compact x2 (the recipe of tests/conftest.py's
``make_tiny_upscaler``) made bigger so that loading it costs something; the image is small
so that the upscale does not hide the load. The machine may be small and shared: both loops
run once untimed first, then alternate in a rotating order; the table shows medians and the
ratio of the two, both measured in this run. Nothing here asserts a timing. The last line,
``RESULTS {json}``, is for the tests: one case, the by-reference loop (``ours_ms``) against the
rebuilt one (``baseline_ms``), its ``ratio``, no ``target``, and ``loader_runs``: the loader's
executions in every loop of each ({"ours": [1, ...], "baseline": [{RUNS}, ...]} when right).

    .venv/bin/python benchmarks/ref_bench.py            # 5 repetitions
    .venv/bin/python benchmarks/ref_bench.py --quick    # 1 repetition (a smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
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
from refs_support import LoaderCount, make_compact_upscaler, ref_workflow as workflow  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = 10
FEATS, CONVS, SCALE = 64, 16, 2  # the tests' tiny model is 4 features, 1 conv (3.4 kB)
IMAGE_SHAPE = (1, 64, 64, 3)
MODEL = "bench-compact-x2.safetensors"
HEADER = f"{'case':<40} {'median (ms)':>12} {'per run (ms)':>13} {'ratio':>7} {'loader runs':>12}"

__doc__ = __doc__.replace("{RUNS}", str(RUNS))


def model_names(folder: Path, count: int) -> list[str]:
    """``count`` new names for the model in ``folder``: hard links (copies where links fail),
    made before the server starts, so every name is on its list and none is cached."""
    names = []
    for i in range(count):
        name = f"bench-{i:03d}.safetensors"
        try:
            os.link(folder / MODEL, folder / name)
        except OSError:
            shutil.copyfile(folder / MODEL, folder / name)
        names.append(name)
    return names


async def run_loops(models: Path, names: list[str], repetitions: int) -> dict:
    from discomfort import Discomfort, WorkflowContext  # after DISCOMFORT_ROOT is set

    print("starting ComfyUI...", flush=True)
    started = time.perf_counter()
    d = await Discomfort.create(model_paths={"upscale_models": str(models)})
    print(f"started in {time.perf_counter() - started:.1f} s at {d.Worker.url}", flush=True)
    fresh = iter(names)
    first_load_ms: list[float] = []

    async def by_reference(ctx, count: LoaderCount) -> None:
        start = time.perf_counter()
        await d.run(workflow("load_model", next(fresh)), context=ctx, on_event=count, progress=False)
        first_load_ms.append((time.perf_counter() - start) * 1000)
        count.loader_ids.add(ctx.load("upscaler")["output"][0])  # its id wherever it is spliced
        for _ in range(RUNS):
            await d.run(workflow("upscale"), inputs={"image": torch.rand(IMAGE_SHAPE)}, context=ctx,
                        on_event=count, progress=False)

    async def rebuilt(ctx, count: LoaderCount) -> None:
        for _ in range(RUNS):
            await d.run(workflow("whole", next(fresh)), inputs={"image": torch.rand(IMAGE_SHAPE)},
                        context=ctx, on_event=count, progress=False)

    loops = {"by reference": by_reference, "rebuilt": rebuilt}
    times: dict[str, list[float]] = {name: [] for name in loops}
    counts: dict[str, list[int]] = {name: [] for name in loops}
    try:
        # the check that both loops compute the same thing: the same image, the same result
        image = torch.rand(IMAGE_SHAPE)
        with WorkflowContext() as ctx:
            await d.run(workflow("load_model", next(fresh)), context=ctx, progress=False)
            via_ref = (await d.run(workflow("upscale"), inputs={"image": image}, context=ctx,
                                   progress=False))["upscaled"]
            inline = (await d.run(workflow("whole", next(fresh)), inputs={"image": image},
                                  context=ctx, progress=False))["upscaled"]
        expected = (1, IMAGE_SHAPE[1] * SCALE, IMAGE_SHAPE[2] * SCALE, 3)
        if tuple(via_ref.shape) != expected or not torch.equal(via_ref, inline):
            raise SystemExit(f"the two loops compute different things: {tuple(via_ref.shape)} "
                             f"vs {tuple(inline.shape)}")

        print(f"measuring: {RUNS} runs per loop, 1 untimed + {repetitions} repetitions...", flush=True)
        order = list(loops) + list(turns(list(loops), repetitions))
        for index, name in enumerate(order):
            ctx = WorkflowContext()
            count = LoaderCount("1")  # the loader's id in load_model.json and whole.json
            try:
                start = time.perf_counter()
                await loops[name](ctx, count)
                elapsed = (time.perf_counter() - start) * 1000
            finally:
                ctx.shutdown()
            if index >= len(loops):  # the first turn of each is untimed
                times[name].append(elapsed)
            counts[name].append(count.count)
    finally:
        await d.shutdown()
    return {"times": times, "counts": counts, "first_load": first_load_ms[1:]}


def count_text(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition (a smoke run)")
    parser.add_argument("--repeat", type=int, help="timed repetitions (default 5, 1 with --quick)")
    args = parser.parse_args()
    repetitions = args.repeat or (1 if args.quick else 5)

    print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    workdir = tempfile.mkdtemp(prefix="discomfort-ref-bench-")  # mode 0700: a valid store root
    os.environ["DISCOMFORT_ROOT"] = str(Path(workdir) / "store")  # never the user's own store
    print(f"store root: {os.environ['DISCOMFORT_ROOT']}")
    started = time.perf_counter()
    try:
        models = Path(workdir) / "models" / "upscale_models"
        size = make_compact_upscaler(models / MODEL, FEATS, CONVS, SCALE).stat().st_size
        # the check + the untimed turns + the timed turns; the by-reference loop takes one
        names = model_names(models, 2 + (repetitions + 1) * (1 + RUNS))
        result = asyncio.run(run_loops(models, names, repetitions))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ref, rebuilt = (statistics.median(result["times"][k]) for k in ("by reference", "rebuilt"))
    ref_counts, rebuilt_counts = result["counts"]["by reference"], result["counts"]["rebuilt"]
    print()
    print(HEADER)
    print("-" * len(HEADER))
    print(f"{f'{RUNS} runs, model by reference':<40} {ref:>12.1f} {ref / RUNS:>13.1f} "
          f"{ref / rebuilt:>6.2f}x {count_text(ref_counts):>12}")
    print(f"{f'{RUNS} runs, model rebuilt each run':<40} {rebuilt:>12.1f} {rebuilt / RUNS:>13.1f} "
          f"{1:>6.2f}x {count_text(rebuilt_counts):>12}")
    print(f"{'model file':<40} {f'{size / 1024:.0f} kB':>12}   "
          f"(Compact x{SCALE}, {FEATS} features, {CONVS} convs; image {IMAGE_SHAPE[2]}x{IMAGE_SHAPE[1]})")
    print(f"\nby reference: the load_model.json run (the one load) took "
          f"{statistics.median(result['first_load']):.1f} ms (median), included above")
    print(f"rebuilding costs {(rebuilt - ref) / RUNS:.1f} ms per run over the reference")
    print(f"ratio = by reference / rebuilt (below 1: the reference is faster); loader runs = "
          f"executions of the loader per loop, every turn; medians of {repetitions}; "
          f"total {time.perf_counter() - started:.0f} s")
    print_results([{"case": f"{RUNS} runs, model by reference vs rebuilt each run", "ours_ms": ref,
                    "baseline_ms": rebuilt, "ratio": ref / rebuilt, "target": None,
                    "within_target": None,
                    "loader_runs": {"ours": ref_counts, "baseline": rebuilt_counts}}],
                  runs=RUNS, model_bytes=size, first_load_ms=statistics.median(result["first_load"]))
    if any(c != 1 for c in ref_counts):
        sys.exit(f"the by-reference loop ran the loader {count_text(ref_counts)} times, not once: "
                 "the benchmark measures the wrong thing")
    if any(c != RUNS for c in rebuilt_counts):
        sys.exit(f"the rebuilt loop ran the loader {count_text(rebuilt_counts)} times, not "
                 f"{RUNS}: the baseline is not rebuilding the model")


if __name__ == "__main__":
    main()
