"""A local Ray cluster for the tests and benchmarks: a head and a second node on this machine,
each its own `ray start` in a process group of its own (so exactly what we started is
stopped), with its own temp dir and its own DISCOMFORT_ROOT (store root)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    """A head and a second node, each its own `ray start` in a process group of its own (so
    we stop exactly what we started), its own temp dir and store root."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="discomfort-ray-"))
        self.groups: list[int] = []
        self.roots: list[Path] = []
        self.address = ""

    def _start(self, name: str, *args: str) -> str:
        store = self.root / f"store-{name}"
        self.roots.append(store)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(DISCOMFORT_ROOT=str(store), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        process = subprocess.Popen(
            [RAY, "start", *args, "--num-cpus=1", f"--temp-dir={self.root / name}",
             "--disable-usage-stats"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.groups.append(process.pid)  # its daemons keep this process group
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        return out

    def start(self) -> LocalCluster:
        out = self._start("head", "--head", "--port=0", "--include-dashboard=false")
        self.address = re.search(r"ray start --address='([^']+)'", out).group(1)
        self._start("node", f"--address={self.address}")
        return self

    def processes(self) -> list[psutil.Process]:
        """Every live process of ours: in our process groups, naming our temp dir, or with a
        store root of ours."""
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if process.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if os.getpgid(process.pid) in self.groups or \
                        str(self.root) in " ".join(process.info["cmdline"] or []) or \
                        process.environ().get("DISCOMFORT_ROOT", "").startswith(str(self.root)):
                    found.append(process)  # (the last: a node's servers and their watchdogs)
            except (psutil.Error, ProcessLookupError):
                continue
        return found

    def stop(self) -> None:
        """SIGTERM to our process groups, SIGKILL to what is left after 10 s."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
