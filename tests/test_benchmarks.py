"""Every benchmark runs (``--quick``), prints its table and ends with its ``RESULTS {json}``
report (tests/bench_support.py), which is checked, never its timings: every case ran, each is a
real measurement with the ratio of the two, its target is the documented one and judged as
printed, and the counts each benchmark checks (the loader's runs per loop) are the right ones.
"""

import math

import pytest

from bench_support import run_benchmark

SERVER = pytest.mark.server


def test_context_bench_measures_every_case():
    report = run_benchmark("context_bench.py", "--quick",
                           columns=("ours (s)", "baseline (s)", "ratio", "target"))
    cases = {case["case"].split(".")[0]: case for case in report["cases"]}
    assert sorted(cases) == ["1", "2", "3", "4", "5"], cases  # every case ran
    for case in cases.values():  # timings are not asserted; that each is a measurement is
        for name in ("ours_s", "baseline_s", "ratio"):
            assert isinstance(case[name], float) and math.isfinite(case[name]) and case[name] > 0, case
        assert case["ratio"] == pytest.approx(case["ours_s"] / case["baseline_s"])
        assert case["target"] is None or case["within_target"] == (case["ratio"] <= case["target"])
    assert cases["2"]["target"] == 1.5 and cases["4"]["target"] == 5.0  # the targets
    assert report["checks"]["numpy and torch 0-d load as 0-d"] is True


def is_time(value) -> bool:
    """A real measurement: a finite positive float."""
    return isinstance(value, float) and math.isfinite(value) and value > 0


def check_run_bench(report: dict, cases: dict[str, dict]) -> None:
    loop, per_iteration = cases["3. loop of 20 iterations, whole"], cases["3. loop of 20, per iteration"]
    assert report["loop_iterations"] == 20
    assert {name: case["target_unit"] for name, case in cases.items()} == {  # of the ratio, or ours
        name: None if target is None else "ms" if name.startswith("2.") else "x"
        for name, target in RUN_BENCH.items()}
    assert per_iteration["ours_ms"] == pytest.approx(loop["ours_ms"] / 20)
    assert per_iteration["baseline_ms"] == pytest.approx(loop["baseline_ms"] / 20)


def check_ref_bench(report: dict, cases: dict[str, dict]) -> None:
    assert report["runs"] == 10
    # --quick: 1 untimed + 1 timed loop of each; the model loaded once by reference, 10 times rebuilt
    assert cases["10 runs, model by reference vs rebuilt each run"]["loader_runs"] == \
        {"ours": [1, 1], "baseline": [10, 10]}


def check_generation_bench(report: dict, cases: dict[str, dict]) -> None:
    assert report["runs"] == 3 and report["failures"] == []
    one = cases["1. sample.json, one run (seed new each time)"]  # 1 untimed + 2 turns of each
    assert one["sampler_runs"] == {"ours": [1, 1, 1], "baseline": [1, 1, 1]}  # a new seed each turn
    assert one["loader_runs"] == {"ours": [0, 0, 0], "baseline": [0, 0, 0]}  # the model stays loaded
    # 1 untimed + 1 timed loop of each: one load by reference, one per run reloaded
    assert cases["2. 3 runs, by reference vs reloaded"]["loader_runs"] == \
        {"ours": [1, 1], "baseline": [3, 3]}


# each benchmark's cases with their targets, as its docstring and table give them (--quick runs)
RUN_BENCH = {"1. run() tiny workflow, new value": 1.5,
             "1. run() tiny workflow, cached (same value)": 1.5,
             "1. run() vs a port-free prompt (for scale)": None,
             "2. ui_to_api, largest template": 10,  # ms, of ours alone: no baseline
             "3. loop of 20 iterations, whole": None,
             "3. loop of 20, per iteration": None}
REF_BENCH = {"10 runs, model by reference vs rebuilt each run": None}
GENERATION_BENCH = {"1. sample.json, one run (seed new each time)": 1.05,
                    "2. 3 runs, by reference vs reloaded": None,
                    "2. 3 runs, per run": None}


@pytest.mark.parametrize("script, columns, targets, check", [
    pytest.param("run_bench.py", ("ours (ms)", "baseline (ms)", "ratio", "target"), RUN_BENCH,
                 check_run_bench, marks=SERVER),
    pytest.param("ref_bench.py", ("median (ms)", "ratio", "loader runs"), REF_BENCH,
                 check_ref_bench, marks=SERVER),
    pytest.param("generation_bench.py", ("ours (ms)", "baseline (ms)", "ratio", "loader runs"),
                 GENERATION_BENCH, check_generation_bench, marks=SERVER),
])
def test_benchmark_runs_and_prints_its_table(script, columns, targets, check):
    report = run_benchmark(script, "--quick", columns=columns)
    cases = {case["case"]: case for case in report["cases"]}
    assert sorted(cases) == sorted(targets) and len(report["cases"]) == len(targets), cases
    for name, case in cases.items():
        assert case["target"] == targets[name], case
        assert is_time(case["ours_ms"]), case
        if case["baseline_ms"] is None:  # run_bench's conversion: its target is of its own time
            assert case["ratio"] is None, case
            judged = case["ours_ms"]
        else:
            assert is_time(case["baseline_ms"]) and is_time(case["ratio"]), case
            assert case["ratio"] == pytest.approx(case["ours_ms"] / case["baseline_ms"]), case
            judged = case["ratio"]
        assert case["within_target"] == (None if case["target"] is None else judged <= case["target"])
    check(report, cases)
