"""benchmarks/scale_bench.py runs (``--quick``) on real pools: every case ran, each ratio is a
real measurement and each target is judged as printed. No timing is asserted."""

import math

import pytest

from bench_support import run_benchmark


@pytest.mark.server
def test_scale_bench_measures_every_case():
    report = run_benchmark("scale_bench.py", "--quick",
                           columns=("servers", "jobs/s", "ratio", "target"))
    assert report["failures"] == 0
    cases = {(c["case"], c["servers"]): c for c in report["cases"]}
    assert sorted(cases) == [("cpu", 1), ("cpu", 2), ("cpu-1thread", 1), ("wait", 1),
                            ("wait", 2)]  # every case ran
    for case in cases.values():
        for name in ("median_s", "jobs_per_s", "ratio"):
            assert isinstance(case[name], float) and math.isfinite(case[name]) and case[name] > 0
        kind = case["case"].split("-")[0]
        assert case["ratio"] == pytest.approx(case["jobs_per_s"] / cases[kind, 1]["jobs_per_s"])
    ratio = cases["cpu", 2]["ratio_vs_one_thread"]
    assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    assert cases["wait", 2]["target"] == 1.8 and cases["cpu", 2]["target"] is None
    for case in cases.values():
        if case["target"] is not None:
            assert case["within_target"] == (case["ratio"] >= case["target"])
