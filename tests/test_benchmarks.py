"""Every benchmark runs (``--quick``) and prints its table; no timing is asserted. ref_bench
also exits non-zero unless the model loaded once in its by-reference loop."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SERVER = pytest.mark.server


@pytest.mark.parametrize("script, columns", [
    ("context_bench.py", ("ours (s)", "baseline (s)", "ratio", "target")),
    pytest.param("run_bench.py", ("ours (ms)", "baseline (ms)", "ratio", "target"), marks=SERVER),
    pytest.param("ref_bench.py", ("median (ms)", "ratio", "loader runs"), marks=SERVER),
    pytest.param("generation_bench.py", ("ours (ms)", "baseline (ms)", "ratio", "loader runs"),
                 marks=SERVER),
])
def test_benchmark_runs_and_prints_its_table(script, columns):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    header = [line for line in result.stdout.splitlines() if line.startswith("case")]
    assert header and all(column in header[0] for column in columns)
