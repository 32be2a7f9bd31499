"""Smoke test of benchmarks/ref_bench.py: it runs against a real server, prints its table and
finds the loader ran once in the by-reference loop (no timing asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "ref_bench.py"


@pytest.mark.server
def test_ref_bench_quick_runs_and_prints_table():
    result = subprocess.run([sys.executable, str(BENCH), "--quick"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    header = [line for line in result.stdout.splitlines() if line.startswith("case")]
    assert header and all(col in header[0] for col in ("median (ms)", "ratio", "loader runs"))
