"""benchmarks/ray_bench.py runs (``--quick``) on a real 2-node Ray cluster it starts and a
local pool: every case ran on both, each overhead is computed from its own medians, no job
failed and no process of its cluster is left. No timing is asserted."""

import math

import pytest

from bench_support import run_benchmark

pytest.importorskip("ray")


@pytest.mark.server
def test_ray_bench_measures_the_overhead_per_job():
    report = run_benchmark("ray_bench.py", "--quick",
                           columns=("jobs", "pool (s)", "ray (s)", "overhead (ms/job)"))
    assert report["failures"] == 0 and report["processes_left"] == 0
    cases = {c["case"]: c for c in report["cases"]}
    assert sorted(cases) == ["image", "tiny"]
    for case in cases.values():
        assert case["jobs"] == 4
        for name in ("pool_s", "ray_s"):
            assert isinstance(case[name], float) and math.isfinite(case[name]) and case[name] > 0
        assert case["overhead_ms_per_job"] == pytest.approx(
            (case["ray_s"] - case["pool_s"]) / case["jobs"] * 1000)
