"""Shared fixtures: a private store root for the session, and one real ComfyUI server.

The server is started by the library's own server core, with this package and the test-only
node pack loaded, and a tiny generated upscale model on its model path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from refs_support import make_compact_upscaler  # tests/ is on sys.path (pytest.ini)
from sd_support import tiny_checkpoint, tiny_lora

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Every test process, and every server it starts, shares one private root made for this run.
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="discomfort-test-root-"))
os.environ["DISCOMFORT_ROOT"] = str(_SESSION_ROOT / "store")


TINY_CHECKPOINT = "tiny-sd15.safetensors"
TINY_LORA = "tiny-sd15-lora.safetensors"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """models/{upscale_models,checkpoints,loras}: the tiny upscaler, and the tiny SD
    checkpoint and LoRA (generated once into the cache, linked here under short names)."""
    root = _SESSION_ROOT / "models"
    make_compact_upscaler(root / "upscale_models" / "tiny-compact-x2.safetensors")
    for folder, name, made in (("checkpoints", TINY_CHECKPOINT, tiny_checkpoint()),
                               ("loras", TINY_LORA, tiny_lora())):
        (root / folder).mkdir(parents=True, exist_ok=True)
        link = root / folder / name
        if not link.exists():
            link.symlink_to(made)
    return root


@pytest.fixture
def fresh_checkpoint(model_dir) -> str:
    """The tiny checkpoint under a name no server has loaded yet: ComfyUI caches loaders by
    file name, so a count of loader executions starts from zero."""
    import uuid

    name = f"tiny-sd15-{uuid.uuid4().hex[:8]}.safetensors"
    (model_dir / "checkpoints" / name).symlink_to(tiny_checkpoint())
    return name


class ServerClient:
    """A minimal synchronous client for tests: post a prompt, wait for its history entry."""

    def __init__(self, server):
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str):
        return self.server.request(path)

    def post(self, path: str, body: dict):
        return self.server.request(path, body)

    def run(self, prompt: dict, context=None, timeout: float = 60.0) -> dict:
        """Queue ``prompt`` (bound to ``context`` if given); return its history entry."""
        from discomfort.binding import bind_prompt

        extra: dict = {}
        if context is not None:
            prompt, extra, _ = bind_prompt(prompt, context)
        return self.server.run_prompt(prompt, extra, timeout=timeout)

    @staticmethod
    def status_of(entry: dict) -> str:
        from discomfort.protocol import history_outcome

        outcome = history_outcome(entry)
        assert outcome is not None, entry
        return outcome.type

    @staticmethod
    def message(entry: dict, kind: str) -> dict:
        from discomfort.protocol import history_messages

        for name, data in entry["status"]["messages"]:
            if name == kind:
                return data
        raise AssertionError(f"no {kind} in {history_messages(entry)}")


def start_server(model_dir: Path, **kwargs):
    from discomfort.server import ComfyServer

    server = ComfyServer(node_packages=[TESTS / "comfy_test_pack"],
                         model_paths=model_paths(model_dir), **kwargs)
    return server.start()


@pytest.fixture(scope="session")
def comfy(model_dir):
    server = start_server(model_dir)
    try:
        yield ServerClient(server)
    finally:
        server.stop()


def api(*nodes: tuple) -> dict:
    """An API prompt from (class_type, inputs) pairs, ids "1", "2", ..."""
    return {str(i): {"class_type": kind, "inputs": inputs} for i, (kind, inputs) in enumerate(nodes, 1)}


def ported_sleeper(steps: int, step_seconds: float) -> dict:
    """Input port "img" -> the test pack's sleeping node -> output port "slept"."""
    return api(("DiscomfortInput", {"unique_id": "img"}),
               ("DiscomfortTestSleep", {"image": ["1", 0], "steps": steps, "step_seconds": step_seconds}),
               ("DiscomfortOutput", {"value": ["2", 0], "unique_id": "slept"}))


def _run_python(code: str, *, wait: bool = True, timeout: float = 120) -> subprocess.Popen | str:
    """Run ``code`` in a fresh interpreter sharing this session's store root."""
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def run_python():
    return _run_python


@pytest.fixture
def start_comfy(model_dir):
    """Start extra servers (ones a test may kill); all are stopped at the end of the test."""
    servers = []

    def start(**kwargs):
        servers.append(start_server(model_dir, **kwargs))
        return ServerClient(servers[-1])

    yield start
    for server in servers:
        server.stop()


def model_paths(model_dir: Path) -> dict[str, str]:
    return {folder: str(model_dir / folder) for folder in ("upscale_models", "checkpoints", "loras")}


def app_settings(model_dir: Path) -> dict:
    """Server settings for a Discomfort with the test pack and the tiny models."""
    return {"custom_nodes": [str(TESTS / "comfy_test_pack")], "model_paths": model_paths(model_dir)}


@pytest.fixture(scope="session")
async def app(model_dir):
    """A Discomfort with its own managed server, for the whole session."""
    from discomfort import Discomfort

    discomfort = await Discomfort.create(**app_settings(model_dir))
    try:
        yield discomfort
    finally:
        await discomfort.shutdown()


@pytest.fixture
def settings(model_dir) -> dict:
    return app_settings(model_dir)


# --- examples in the README and in docs/: run as written, in a scratch directory -------------
# (Test modules import these with `from conftest import ...`: under --import-mode=importlib,
# pytest registers this file as the module `conftest` before it collects them.)

def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text."""
    return re.findall(r"```python\n(.*?)```", text, re.S)


def cli_lines(text: str) -> list[str]:
    """The `python -m discomfort ...` lines of a Markdown text's ```bash blocks."""
    return [line for block in re.findall(r"```bash\n(.*?)```", text, re.S)
            for line in block.splitlines() if line.startswith("python -m discomfort")]


def expected_output(code: str) -> list[str]:
    """The `# value` comments on print lines."""
    return [m.group(1).strip() for line in code.splitlines()
            if line.strip().startswith("print(") and (m := re.search(r"\)\s+#\s*(.+)$", line))]


@pytest.fixture
def scratch(tmp_path: Path, model_dir: Path) -> Path:
    """A working directory where the examples' relative paths resolve: workflows/, tests/,
    and models/ with the tiny generated upscale model."""
    for name in ("workflows", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "models").symlink_to(model_dir)
    return tmp_path


def run_example(code: str, cwd: Path, timeout: float = 300) -> list[str]:
    """Run a Python example in a fresh interpreter in ``cwd``; check it exits 0 and prints
    every `# value` its print lines promise. Returns the printed lines."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    assert done.returncode == 0, done.stderr
    printed = [line.strip() for line in done.stdout.splitlines()]
    for expected in expected_output(code):
        assert expected in printed, (expected, printed)
    return printed


def run_command(line: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a `python -m discomfort ...` line in ``cwd``; check it exits 0 and that a `--out`
    directory got something."""
    import shlex

    argv = [sys.executable] + shlex.split(line)[1:]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, done.stderr
    if "--out" in argv:
        out = cwd / argv[argv.index("--out") + 1]
        assert any(out.iterdir()), f"{line} wrote nothing to {out}"
    return done

