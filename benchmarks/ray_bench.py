"""What does Ray cost per job? RayPool on 2 local Ray nodes against DiscomfortPool(servers=2).

Both run the same batches in the same run, taking turns in a rotating order
(benchmarks/harness.py): a Ray cluster of two nodes started here with `ray start` (each with
its own store root, tests/ray_support.py) with one actor and server per node, and a local
pool of two servers. Two kinds of jobs, each a ``map`` over a batch:

1. tiny: the test pack's sleep node for 1 step of 0.01 s on an 8x8 picture: almost all of a
   job is its overhead (the server round trip, and for Ray the actor call and object store).
2. image: the same node for 0.2 s on a 256x256 picture, so values of some size cross (for
   Ray: as numpy arrays through the object store, both ways).

Overhead per job is (Ray's median map time - the pool's) / jobs, in milliseconds; there is
no target, the figures are reported as measured. Every job must succeed, else the run exits
non-zero. The last line, ``RESULTS {json}``, is for the tests.

    .venv/bin/python benchmarks/ray_bench.py            # 3 turns, 8 jobs per map
    .venv/bin/python benchmarks/ray_bench.py --quick    # 1 turn, 4 jobs per map
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from harness import print_results, turns  # benchmarks/harness.py (its folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from ray_support import LocalCluster  # noqa: E402

HEADER = (f"{'case':<8} {'jobs':>5} {'pool (s)':>9} {'ray (s)':>9} "
          f"{'overhead (ms/job)':>18}")
KINDS = {"tiny": (8, 1, 0.01), "image": (256, 4, 0.05)}  # size, steps, seconds a step


def sleeper(steps: int, step_seconds: float) -> dict:
    return {"1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
            "2": {"class_type": "DiscomfortTestSleep",
                  "inputs": {"image": ["1", 0], "steps": steps, "step_seconds": step_seconds}},
            "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "slept"}}}


async def measure(address: str, jobs: int, rounds: int) -> tuple[list[dict], int]:
    import ray
    import torch

    from discomfort.pool import DiscomfortPool
    from discomfort.ray import RayPool

    options = {"custom_nodes": [str(REPO / "tests" / "comfy_test_pack")]}
    ray.init(address=address, logging_level="warning", log_to_driver=False)
    pools: dict = {}
    started = time.perf_counter()
    try:
        pools["pool"] = await DiscomfortPool.create(servers=2, **options)
        pools["ray"] = await RayPool.create(**options)
        print(f"started 2 local servers and 2 Ray actors in {time.perf_counter() - started:.1f} s",
              flush=True)
        serial = iter(range(1, 10 ** 9))
        times: dict[tuple, list[float]] = {(k, n): [] for k in KINDS for n in pools}
        failures = 0
        for kind, (size, steps, step_s) in KINDS.items():
            workflow = sleeper(steps, step_s)

            def batch(size: int = size) -> list[dict]:
                return [{"img": torch.full((1, size, size, 3), next(serial) / 1e9)} for _ in range(jobs)]

            print(f"measuring {kind} jobs: 1 untimed + {rounds} turns each...", flush=True)
            for name in pools:
                await pools[name].map(workflow, batch(), progress=False)
            for name in turns(list(pools), rounds):
                inputs = batch()
                began = time.perf_counter()
                results = await pools[name].map(workflow, inputs, progress=False)
                times[kind, name].append(time.perf_counter() - began)
                failures += sum(not isinstance(r, dict) or not torch.equal(r["slept"], i["img"])
                                for r, i in zip(results, inputs, strict=True))
        nodes = len({r.node for r in pools["ray"].last_map})
    finally:
        await asyncio.gather(*(p.shutdown() for p in pools.values()), return_exceptions=True)
        ray.shutdown()
    cases = []
    for kind in KINDS:
        pool_s = statistics.median(times[kind, "pool"])
        ray_s = statistics.median(times[kind, "ray"])
        cases.append({"case": kind, "jobs": jobs, "pool_s": pool_s, "ray_s": ray_s,
                      "overhead_ms_per_job": (ray_s - pool_s) / jobs * 1000})
    return cases, failures if nodes == 2 else failures + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 turn, 4 jobs per map")
    args = parser.parse_args()
    jobs, rounds = (4, 1) if args.quick else (8, 3)
    print(f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
          f"Python {platform.python_version()}")
    cluster = LocalCluster()
    os.environ["DISCOMFORT_ROOT"] = str(cluster.root / "store-local")  # the local pool's own
    try:
        print("starting a 2-node Ray cluster with `ray start`...", flush=True)
        cluster.start()
        cases, failures = asyncio.run(measure(cluster.address, jobs, rounds))
    finally:
        cluster.stop()
        left = cluster.processes()
        shutil.rmtree(cluster.root, ignore_errors=True)
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for c in cases:
        print(f"{c['case']:<8} {c['jobs']:>5} {c['pool_s']:>9.2f} {c['ray_s']:>9.2f} "
              f"{c['overhead_ms_per_job']:>18.1f}")
    print(f"\noverhead = (Ray's median map time - the local pool's) / jobs; medians of {rounds} "
          f"turn(s) of {jobs} jobs; failed jobs: {failures}; processes left: {len(left)}")
    print_results(cases, failures=failures, processes_left=len(left), cores=os.cpu_count())
    if failures or left or not all(math.isfinite(c["overhead_ms_per_job"]) for c in cases):
        sys.exit(1)


if __name__ == "__main__":
    main()
