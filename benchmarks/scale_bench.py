"""How does throughput grow with the number of servers in a DiscomfortPool?

Two kinds of jobs, each run as ``pool.map`` over a batch, on pools of N = 1, 2 (more with
``--servers``) managed servers on this machine, all started once and alive side by side (an
idle server costs no CPU), taking turns in a rotating order (benchmarks/harness.py):

1. wait-bound: the test pack's sleep node, standing for GPU time (the server waits, the CPU is
   free). Target: N servers give >= 0.9 x N the throughput of one.
2. CPU-bound: ``workflows/sample.json`` on the tiny SD checkpoint (tests/sd_support.py),
   128x128 and 4 steps (``--size``, ``--steps``), a new seed per job so the sampler always
   runs. There is no target: every server shares this machine's cores, so the ratio is what
   the cores allow, reported as measured.
   Each pool uses its default CPU settings (the cores shared out between its servers), and
   one more single server at 1 thread is measured beside them: on a small model torch's
   threads can cost more than they give, so that is the fairer one-server baseline.

Throughput is jobs per second of one ``map``; the ratio is a pool's over the one-server
pool's, medians of the turns, measured in the same run. Every job must succeed: the run exits
non-zero otherwise. The last line, ``RESULTS {json}``, is for the tests.

    .venv/bin/python benchmarks/scale_bench.py            # 3 turns, 8 jobs per map
    .venv/bin/python benchmarks/scale_bench.py --quick    # 1 turn, 4 jobs per map
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import turns  # benchmarks/harness.py (run as scripts: their folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from sd_support import tiny_checkpoint  # noqa: E402

SAMPLE = str(REPO / "workflows" / "sample.json")
LOAD = str(REPO / "workflows" / "load_checkpoint.json")
HEADER = (f"{'case':<12} {'servers':>7} {'jobs':>5} {'median (s)':>11} {'jobs/s':>8} "
          f"{'ratio':>7} {'target':>8}  ok")


def sleeper(steps: int, step_seconds: float) -> dict:
    """Input port "img" -> the sleep node -> output port "slept" (an API prompt)."""
    return {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
            "2": {"class_type": "DiscomfortTestSleep",
                  "inputs": {"image": ["1", 0], "steps": steps, "step_seconds": step_seconds}},
            "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "slept"}}}


async def measure(counts: list[int], jobs: int, rounds: int, wait_s: float, steps: int,
                  size: int, checkpoint_dir: Path) -> tuple[list[dict], int]:
    import torch

    from discomfort.pool import DiscomfortPool  # after DISCOMFORT_ROOT is set

    options = {"custom_nodes": [str(REPO / "tests" / "comfy_test_pack")],
               "model_paths": {"checkpoints": str(checkpoint_dir)}}
    # "1t": one server held to one thread, the CPU case's fairer baseline (torch's threads
    # can cost more than they give on a small model).
    labels = [str(n) for n in counts] + ["1t"]
    print(f"starting pools of {', '.join(map(str, counts))} servers, and 1 at 1 thread...",
          flush=True)
    started = time.perf_counter()
    pools = {}
    try:
        for label in labels:  # one pool after another: starts compete for the cores
            pools[label] = await DiscomfortPool.create(
                servers=int(label.rstrip("t")), cpu_threads=1 if label.endswith("t") else None,
                **options)
        print(f"started {sum(counts) + 1} servers in {time.perf_counter() - started:.1f} s",
              flush=True)
        models = {k: await pools[k].run([LOAD], {"checkpoint": "tiny.safetensors"}) for k in labels}
        serial = iter(range(10 ** 9))  # every job distinct: nothing comes from a cache

        def batch(kind: str, label: str) -> tuple:
            if kind == "wait":
                return sleeper(max(1, round(wait_s / 0.05)), 0.05), [
                    {"img": torch.full((1, 8, 8, 3), next(serial) / 1e9)} for _ in range(jobs)]
            return [SAMPLE], [dict(models[label], prompt="a lighthouse", negative="text",
                                   seed=next(serial), steps=steps, width=size, height=size)
                              for _ in range(jobs)]

        plan = {"wait": labels[:-1], "cpu": labels}
        times: dict[tuple, list[float]] = {(k, n): [] for k, names in plan.items() for n in names}
        failures = 0
        for kind, names in plan.items():
            print(f"measuring {kind}-bound jobs: 1 untimed + {rounds} turns per pool...", flush=True)
            for label in names:  # untimed: each pool's first batch of this kind
                workflows, inputs = batch(kind, label)
                await pools[label].map(workflows, inputs, progress=False)
            for label in turns(names, rounds):
                workflows, inputs = batch(kind, label)
                began = time.perf_counter()
                results = await pools[label].map(workflows, inputs, progress=False)
                times[kind, label].append(time.perf_counter() - began)
                failures += sum(not isinstance(r, dict) for r in results)
    finally:
        await asyncio.gather(*(p.shutdown() for p in pools.values()))
    cases = []
    for kind, names in plan.items():
        base = jobs / statistics.median(times[kind, "1"])  # one server's jobs per second
        for label in names:
            n = int(label.rstrip("t"))
            median = statistics.median(times[kind, label])
            throughput = jobs / median
            target = 0.9 * n if kind == "wait" else None
            cases.append({"case": kind + ("-1thread" if label.endswith("t") else ""),
                          "servers": n, "jobs": jobs, "median_s": median,
                          "jobs_per_s": throughput, "ratio": throughput / base, "target": target,
                          "within_target": None if target is None else throughput / base >= target})
    one_thread = next(c for c in cases if c["case"] == "cpu-1thread")
    for case in cases:
        if case["case"] == "cpu":
            case["ratio_vs_one_thread"] = case["jobs_per_s"] / one_thread["jobs_per_s"]
    return cases, failures


def print_table(cases: list[dict]) -> None:
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for c in cases:
        target = f">={c['target']:.2f}x" if c["target"] is not None else "none"
        ok = "" if c["within_target"] is None else ("yes" if c["within_target"] else "NO")
        print(f"{c['case']:<12} {c['servers']:>7} {c['jobs']:>5} {c['median_s']:>11.2f} "
              f"{c['jobs_per_s']:>8.2f} {c['ratio']:>6.2f}x {target:>8}  {ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 turn, 4 jobs per map")
    parser.add_argument("--servers", default="1,2", help="pool sizes, e.g. 1,2,4 (1 first)")
    parser.add_argument("--wait", type=float, default=0.5, help="seconds a wait-bound job sleeps")
    parser.add_argument("--steps", type=int, default=4, help="sampler steps of a CPU-bound job")
    parser.add_argument("--size", type=int, default=128, help="width and height of a CPU-bound job")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.servers.split(",")})
    if counts[0] != 1 or any(n < 1 for n in counts):
        parser.error("--servers must start at 1 (ratios are against one server)")
    jobs, rounds = (4, 1) if args.quick else (8, 3)
    print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="discomfort-scale-bench-") as workdir:
        os.environ["DISCOMFORT_ROOT"] = str(Path(workdir) / "store")  # never the user's own store
        checkpoints = Path(workdir) / "checkpoints"
        checkpoints.mkdir()
        (checkpoints / "tiny.safetensors").symlink_to(tiny_checkpoint())
        cases, failures = asyncio.run(measure(counts, jobs, rounds, args.wait, args.steps,
                                              args.size, checkpoints))
    print_table(cases)
    print(f"\nratio = a pool's jobs per second over one server's (wait-bound target: >= 0.9 x N; "
          f"CPU-bound: no target, the {os.cpu_count()} cores are shared by every server); "
          f"medians of {rounds} turn(s) of {jobs} jobs; failed jobs: {failures}")
    for case in cases:
        if "ratio_vs_one_thread" in case:
            print(f"cpu, {case['servers']} server(s), against one server at 1 thread: "
                  f"{case['ratio_vs_one_thread']:.2f}x")
    print("RESULTS " + json.dumps({"cases": cases, "failures": failures, "cores": os.cpu_count()}))
    if failures or not all(math.isfinite(c["ratio"]) for c in cases):
        sys.exit(1)


if __name__ == "__main__":
    main()
