"""A ComfyUI that cannot share our store: "another machine" for the remote tests and benchmark.

It is started by a helper process of its own whose ``DISCOMFORT_ROOT`` is a store root of its
own, and listens on another loopback address (127.0.0.2), so nothing the client keeps is
reachable to it but over HTTP. The helper prints the server's URL and token, and stops the
server when its stdin closes (or when it dies: the server's watchdog follows it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REMOTE_HOST = "127.0.0.2"

_HELPER = textwrap.dedent("""
    import json, sys
    from discomfort.server import ComfyServer
    spec = json.loads(sys.argv[1])
    server = ComfyServer(listen=spec["listen"], token=spec["token"], node_packages=spec["packages"],
                         model_paths=spec["model_paths"], env=spec["env"],
                         extra_args=["--cache-lru", "32"])
    server.start()
    print(json.dumps({"url": server.url, "pid": server.pid}), flush=True)
    try:
        sys.stdin.read()   # until the test closes it
    finally:
        server.stop()
""")


class RemoteComfy:
    """The helper process and what it says about its server."""

    def __init__(self, root: Path, token: str, *, listen: str = REMOTE_HOST,
                 model_paths: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 start_timeout: float = 180.0, netns: str | None = None):
        self.root = root
        self.token = token
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        spec = {"listen": listen, "token": token, "packages": [str(TESTS / "comfy_test_pack")],
                "model_paths": model_paths or {}, "env": dict(env or {}, DISCOMFORT_ROOT=str(root))}
        child_env = dict(os.environ, DISCOMFORT_ROOT=str(root))
        child_env.pop("DISCOMFORT_TOKEN", None)
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.process = subprocess.Popen(prefix + [sys.executable, "-c", _HELPER, json.dumps(spec)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=child_env)
        deadline = time.monotonic() + start_timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if line.startswith("{") or self.process.poll() is not None:
                break
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError(f"the remote ComfyUI did not start: {line!r}")
        info = json.loads(line)
        self.url: str = info["url"]

    @property
    def contexts(self) -> Path:
        """Where the server keeps its runs (the test may look: it is "another machine")."""
        return self.root / "contexts"

    def run_dirs(self) -> set[str]:
        return {p.name for p in self.contexts.iterdir()} if self.contexts.is_dir() else set()

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class NetNamespace:
    """A network namespace of our own, joined to ours by a veth pair: ``host_ip`` here,
    ``ns_ip`` inside. Made with ``ip`` (root only); removing the namespace removes the pair."""

    def __init__(self, index: int = 0):
        self.name = f"discomfort-{os.getpid()}-{index}"
        self.outer, self.inner = f"dcf{os.getpid() % 100000}a{index}", f"dcf{os.getpid() % 100000}b{index}"
        subnet = 16 + (os.getpid() % 200)
        self.host_ip, self.ns_ip = f"10.213.{subnet}.{4 * index + 1}", f"10.213.{subnet}.{4 * index + 2}"
        inside = ["ip", "netns", "exec", self.name]
        steps = [["ip", "netns", "add", self.name],
                 ["ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner],
                 ["ip", "link", "set", self.inner, "netns", self.name],
                 ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.outer],
                 ["ip", "link", "set", self.outer, "up"],
                 [*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.inner],
                 [*inside, "ip", "link", "set", self.inner, "up"],
                 [*inside, "ip", "link", "set", "lo", "up"]]
        try:
            for step in steps:
                subprocess.run(step, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            self.remove()
            raise OSError(f"cannot make a network namespace: {exc}") from exc

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, timeout=30)
