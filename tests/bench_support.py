"""Running a benchmark from a test: it must exit 0, print its table's header and one
``RESULTS {json}`` line, whose report the test then checks (never its timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, columns: tuple[str, ...] = (),
                  timeout: float = 600) -> dict:
    """The report of ``benchmarks/<script> <args>``; ``columns`` its table header must name."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    header = [line for line in done.stdout.splitlines() if line.startswith("case")]
    assert header and all(c in header[0] for c in columns), done.stdout
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0].removeprefix("RESULTS "))
