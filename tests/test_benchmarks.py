"""Smoke test of benchmarks/context_bench.py: it runs and prints its table (no timing asserted)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "context_bench.py"


def test_context_bench_quick_runs_and_prints_table():
    result = subprocess.run([sys.executable, str(BENCH), "--quick"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    header = [line for line in result.stdout.splitlines() if line.startswith("case")]
    assert header and all(col in header[0] for col in ("ours (s)", "baseline (s)", "ratio", "target"))
