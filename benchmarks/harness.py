"""What every benchmark here shares: the order in which ours and the baselines take turns.

These machines are shared and noisy. Each function runs once untimed, then all take turns in
an order that rotates every repetition, so a slow moment of the machine lands on each of them
alike; the benchmarks report medians and ratios measured in the same run. Each ends with one
``RESULTS {json}`` line (``print_results``), the report the tests check (never its timings).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator


def turns(names: list[str], repetitions: int) -> Iterator[str]:
    """Names in a rotating order, ``repetitions`` rounds; a collection before each turn."""
    for rep in range(repetitions):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            yield name


def print_results(cases: list[dict], **extra) -> None:
    """The report's one line: ``RESULTS {"cases": cases, **extra}`` as JSON, the last of stdout."""
    print("RESULTS " + json.dumps({"cases": cases, **extra}), flush=True)
