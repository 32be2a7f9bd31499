"""How fast is WorkflowContext, compared with the plainest way to move the same bytes?

Each case times the store ("ours") and a baseline that does the same work with no store
around it: no codec, no index, no lock. Only the ratio ours / baseline, both measured in
this run, means anything: absolute times depend on the machine and its load.

1. RAM save+load of a tensor, first save of a key (save, load, delete), against a bare
   ``SharedMemory`` create, copy in, copy out into a fresh tensor, close+unlink.
2. The loop case: one key saved and loaded 10 times with the same shape (its buffers reused),
   against 10 plain in-memory copies in (``dst.copy_(src)``) and out (``dst.clone()``).
3. Disk save+load (``use_ram=False``), against writing the raw bytes to a file in the same
   directory and reading them back into a fresh tensor, then deleting the file.
4. A dict of 100 small items saved and loaded 100 times, against cloudpickle dumps+loads.
   What a small save costs besides the pickle is the index: read under the run's lock and
   rewritten by an atomic rename. On ext4 the rename alone was ~0.5 ms (16-28x); the index
   and lock now live on /dev/shm and the parsed index is cached (one stat per operation).
5. Case 1's store timing against the original implementation's way: ``cloudpickle.dumps``
   of the tensor into a ``SharedMemory``, then ``cloudpickle.loads`` out of it.

Before the timings, checks that each case measures what it claims (RAM or disk storage, the
same value back) and that a numpy 0-d array loads as 0-d. The last line, ``RESULTS {json}``,
holds every case's times, ratio and target and the checks, for tests and scripts.

Fresh memory is slow and irregular to touch the first time, and the machine may be shared:
every function runs once untimed first, ours and the baseline alternate within each
repetition, and the table shows medians. Nothing here asserts a timing.

    .venv/bin/python benchmarks/context_bench.py            # 256 MB tensor, 7 repetitions
    .venv/bin/python benchmarks/context_bench.py --quick    # 16 MB tensor, 3 repetitions
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from multiprocessing.shared_memory import SharedMemory

import cloudpickle
import numpy as np
import psutil
import torch

from harness import turns  # benchmarks/harness.py (run as scripts: their folder is on sys.path)

MB = 1024 ** 2
LOOP_ITERATIONS = 10
DICT_ROUND_TRIPS = 100
HEADER = f"{'case':<44} {'ours (s)':>10} {'baseline (s)':>13} {'ratio':>7} {'target':>8}"


def byte_view(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a flat uint8 numpy array (no copy)."""
    return tensor.reshape(-1).view(torch.uint8).numpy()


def measure(functions: dict, repetitions: int) -> dict[str, float]:
    """Median seconds of each function; each runs once untimed, then in a rotating order."""
    for fn in functions.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for name in turns(list(functions), repetitions):
        start = time.perf_counter()
        result = functions[name]()
        times[name].append(time.perf_counter() - start)
        del result  # freed outside the timing, for ours and the baselines alike
    return {name: statistics.median(values) for name, values in times.items()}


# --- baselines ------------------------------------------------------------------------------

def raw_shm_round_trip(tensor: torch.Tensor) -> torch.Tensor:
    src = byte_view(tensor)
    segment = SharedMemory(create=True, size=src.nbytes)
    try:
        shared = np.ndarray(src.nbytes, np.uint8, buffer=segment.buf)
        shared[:] = src
        out = torch.empty_like(tensor)
        byte_view(out)[:] = shared
        del shared
    finally:
        segment.close()
        segment.unlink()
    return out


def pickle_shm_round_trip(tensor: torch.Tensor) -> torch.Tensor:
    blob = cloudpickle.dumps(tensor)
    segment = SharedMemory(create=True, size=len(blob))
    try:
        view = segment.buf[:len(blob)]
        view[:] = blob
        del blob
        out = cloudpickle.loads(view)
        view.release()
    finally:
        segment.close()
        segment.unlink()
    return out


def raw_file_round_trip(tensor: torch.Tensor, path: str) -> torch.Tensor:
    with open(path, "wb") as f:
        f.write(byte_view(tensor))
    out = torch.empty_like(tensor)
    with open(path, "rb") as f:
        got = f.readinto(byte_view(out))
    os.unlink(path)
    assert got == tensor.nbytes, (got, tensor.nbytes)
    return out


def plain_copy_loop(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    for _ in range(LOOP_ITERATIONS):
        dst.copy_(src)
        out = dst.clone()
    return out


def pickle_dict_loop(value: dict) -> dict:
    for _ in range(DICT_ROUND_TRIPS):
        out = cloudpickle.loads(cloudpickle.dumps(value))
    return out


# --- ours -----------------------------------------------------------------------------------

class Ours:
    """The store's side of each case, on one context."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.count = 0

    def fresh_key(self) -> str:
        self.count += 1
        return f"bench_{self.count}"

    def round_trip(self, tensor: torch.Tensor, use_ram: bool) -> torch.Tensor:
        key = self.fresh_key()
        self.ctx.save(key, tensor, use_ram=use_ram)
        out = self.ctx.load(key)
        self.ctx.delete(key)
        return out

    def loop(self, tensor: torch.Tensor, key: str) -> torch.Tensor:
        for _ in range(LOOP_ITERATIONS):
            self.ctx.save(key, tensor)
            out = self.ctx.load(key)
        return out

    def dict_loop(self, value: dict) -> dict:
        for _ in range(DICT_ROUND_TRIPS):
            self.ctx.save("small_dict", value)
            out = self.ctx.load("small_dict")
        return out


def check_zero_d(ours: Ours) -> bool:
    """A numpy 0-d array (and a 0-d tensor) come back 0-d, with their value and dtype."""
    ok = True
    for value in (np.array(2.5, dtype=np.float32), torch.tensor(7, dtype=torch.int16)):
        for use_ram in (True, False):
            key = ours.fresh_key()
            ours.ctx.save(key, value, use_ram=use_ram)
            back = ours.ctx.load(key)
            ours.ctx.delete(key)
            ok = ok and type(back) is type(value) and tuple(back.shape) == () \
                and back.dtype == value.dtype and back.item() == value.item()
    return ok


def check_storage(ours: Ours, value, use_ram: bool, expected: str) -> None:
    """Fail loudly if a case would not measure the storage it claims to (RAM or disk)."""
    key = ours.fresh_key()
    ours.ctx.save(key, value, use_ram=use_ram)
    storage = ours.ctx.get_storage_info(key)["storage_type"]
    back = ours.ctx.load(key)
    ours.ctx.delete(key)
    if storage != expected:
        raise SystemExit(f"expected {expected} storage, the store used {storage}")
    same = torch.equal(back, value) if isinstance(value, torch.Tensor) else back == value
    if not same:
        raise SystemExit("the store gave back a different value")


# --- the run ---------------------------------------------------------------------------------

def run(size_mb: int, repetitions: int, workdir: str) -> tuple[list[tuple], dict]:
    from discomfort import WorkflowContext  # after DISCOMFORT_ROOT is set

    tensor = torch.rand(size_mb * MB // 4, dtype=torch.float32)
    small = {f"item_{i}": [f"text {i}", i, [i, i * 2, i * 3]][i % 3] for i in range(100)}
    label = f"{size_mb} MB"
    rows = []
    ctx = WorkflowContext(max_ram_gb=max(4, 6 * size_mb / 1024))
    try:
        ours = Ours(ctx)
        check_storage(ours, tensor, use_ram=True, expected="ram")
        check_storage(ours, tensor, use_ram=False, expected="disk")
        check_storage(ours, small, use_ram=True, expected="ram")
        checks = {"numpy and torch 0-d load as 0-d": check_zero_d(ours)}
        index_dir = os.path.join("/dev/shm", f"discomfort-{os.geteuid()}")
        checks["index on a memory filesystem"] = not os.path.exists(ctx.path / "index.json") \
            and os.path.isdir(index_dir)

        print(f"measuring 1 and 5: RAM save+load of {label}...", flush=True)
        m = measure({"ours": lambda: ours.round_trip(tensor, use_ram=True),
                     "raw": lambda: raw_shm_round_trip(tensor),
                     "pickle": lambda: pickle_shm_round_trip(tensor)}, repetitions)
        rows.append((f"1. RAM save+load {label}, first save", m["ours"], m["raw"], 1.3))

        print(f"measuring 2: loop, {LOOP_ITERATIONS}x save+load of one key...", flush=True)
        dst = torch.empty_like(tensor)
        m2 = measure({"ours": lambda: ours.loop(tensor, "loop_key"),
                      "copy": lambda dst=dst: plain_copy_loop(tensor, dst)}, repetitions)
        rows.append((f"2. loop {LOOP_ITERATIONS}x save+load, same key", m2["ours"], m2["copy"], 1.5))
        loop_ram_mb = ctx.get_usage()["ram_usage_bytes"] / MB
        ctx.delete("loop_key")
        del dst

        print(f"measuring 3: disk save+load of {label}...", flush=True)
        path = os.path.join(workdir, "raw_baseline.bin")
        m3 = measure({"ours": lambda: ours.round_trip(tensor, use_ram=False),
                      "file": lambda: raw_file_round_trip(tensor, path)}, repetitions)
        rows.append((f"3. disk save+load {label}", m3["ours"], m3["file"], None))

        print(f"measuring 4: small dict, {DICT_ROUND_TRIPS}x save+load...", flush=True)
        m4 = measure({"ours": lambda: ours.dict_loop(small),
                      "pickle": lambda: pickle_dict_loop(small)}, repetitions)
        rows.append((f"4. dict of 100 items, {DICT_ROUND_TRIPS}x save+load", m4["ours"], m4["pickle"], 5.0))

        rows.append((f"5. RAM save+load {label} vs cloudpickle->shm", m["ours"], m["pickle"], None))
    finally:
        ctx.shutdown()
    print(f"(the loop case's key held {loop_ram_mb:.0f} MB of shared memory for a {label} tensor)")
    return rows, checks


def print_table(rows: list[tuple], checks: dict) -> None:
    print()
    print(HEADER)
    print("-" * len(HEADER))
    for case, ours, baseline, target in rows:
        ratio = ours / baseline
        goal = f"<= {target:g}x" if target else "-"
        flag = "  (over target)" if target and ratio > target else ""
        print(f"{case:<44} {ours:>10.4f} {baseline:>13.4f} {ratio:>6.2f}x {goal:>8}{flag}")
    print()
    for name, ok in checks.items():
        print(f"check: {name}: {'yes' if ok else 'NO'}")


def results(rows: list[tuple], checks: dict) -> dict:
    """Everything the table says, as JSON (a ratio is null if a time was not positive)."""
    cases = []
    for case, ours, baseline, target in rows:
        ratio = ours / baseline if baseline > 0 and ours > 0 else None
        cases.append({"case": case, "ours_s": ours, "baseline_s": baseline,
                      "ratio": ratio if ratio is not None and math.isfinite(ratio) else None,
                      "target": target,
                      "within_target": None if target is None or ratio is None else ratio <= target})
    return {"cases": cases, "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MB tensor, 3 repetitions (a smoke run)")
    parser.add_argument("--size-mb", type=int, help="tensor size in MB (default 256, 16 with --quick)")
    parser.add_argument("--repeat", type=int, help="timed repetitions per case (default 7, 3 with --quick)")
    args = parser.parse_args()
    size_mb = args.size_mb or (16 if args.quick else 256)
    repetitions = args.repeat or (3 if args.quick else 7)

    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 1024 ** 3:.1f} GB RAM, "
          f"{platform.system()} {platform.machine()}; Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"tensor {size_mb} MB float32, {repetitions} timed repetitions per case, medians")

    workdir = tempfile.mkdtemp(prefix="discomfort-bench-")  # mode 0700: a valid store root
    os.environ["DISCOMFORT_ROOT"] = workdir  # never the user's own store
    print(f"store root (and disk baseline's directory): {workdir}")
    started = time.perf_counter()
    try:
        rows, checks = run(size_mb, repetitions, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows, checks)
    print(f"\nratio = ours / baseline (below 1: ours is faster); total {time.perf_counter() - started:.0f} s")
    print("RESULTS " + json.dumps(results(rows, checks)))


if __name__ == "__main__":
    main()
