"""`python -m discomfort`: run, ports, convert, and errors that say what is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OBJECT_INFO = str(FIXTURES / "object_info.json")
INVERT_UI = str(FIXTURES / "run" / "invert_ui.json")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "discomfort", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_ports_lists_inputs_and_outputs_with_types():
    done = cli("ports", INVERT_UI, "--object-info", OBJECT_INFO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["input", "'img'", "IMAGE", "node", "1",
                                   "output", "'inverted'", "IMAGE", "node", "3"]


def test_convert_prints_the_api_prompt():
    done = cli("convert", INVERT_UI, "--object-info", OBJECT_INFO)
    prompt = json.loads(done.stdout)
    assert [prompt[k]["class_type"] for k in sorted(prompt)] == [
        "DiscomfortInput", "ImageInvert", "DiscomfortOutput"]


def test_errors_exit_1_with_a_message(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    done = cli("ports", str(broken))
    assert done.returncode == 1 and "broken.json" in done.stderr and "Traceback" not in done.stderr
    done = cli("run", INVERT_UI, "--set", "no-equals-sign")
    assert done.returncode == 2 and "key=value" in done.stderr


@pytest.mark.server
def test_run_sets_inputs_loops_and_writes_outputs(tmp_path):
    import torch

    from discomfort.images import save_comfy_image_to_disk

    picture = tmp_path / "in.png"
    save_comfy_image_to_disk(torch.zeros(1, 4, 4, 3), picture)
    workflow = tmp_path / "loop.json"
    workflow.write_text(json.dumps({
        "1": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "img"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "DiscomfortOutput", "inputs": {"value": ["2", 0], "unique_id": "img"}},
        "4": {"class_type": "DiscomfortInput", "inputs": {"unique_id": "label"}},
        "5": {"class_type": "DiscomfortOutput", "inputs": {"value": ["4", 0], "unique_id": "echo"}},
    }))
    out = tmp_path / "out"
    done = cli("run", str(workflow), "--set", f"img=@{picture}", "--set", 'label={"a": 1}',
               "--iterations", "3", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "img: Tensor [1, 4, 4, 3] torch.float32" in done.stdout
    assert json.loads((out / "echo.json").read_text()) == {"a": 1}
    from discomfort.images import open_image_as_tensor

    assert open_image_as_tensor(out / "img.png").min() == 1.0  # inverted 3 times: white


def test_a_reader_that_stops_early_is_no_error():
    """`python -m discomfort convert ... | head`: the pipe closes before we write."""
    proc = subprocess.Popen([sys.executable, "-m", "discomfort", "convert", INVERT_UI,
                             "--object-info", OBJECT_INFO],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # long before the interpreter has started and written anything
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr


# --- offline ports, typed --set, the warm server (issue 14) ------------------------------------

NO_COMFYUI = {"COMFYUI_PATH": "/nonexistent/comfyui"}  # any server start would fail at once
KINDS = [("prompt", "PrimitiveString", "STRING", ""), ("seed", "PrimitiveInt", "INT", 0),
         ("strength", "PrimitiveFloat", "FLOAT", 0.0), ("flag", "PrimitiveBoolean", "BOOLEAN", False)]


def cli_env(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "discomfort", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **(env or {})))


def typed_ui_workflow() -> dict:
    """An editor workflow: for each of KINDS, input port -> Primitive node -> output port
    `<id>_out`, with the link types the editor records."""
    nodes, links = [], []
    for i, (uid, cls, kind, default) in enumerate(KINDS):
        a, b, c, l1, l2 = 3 * i + 1, 3 * i + 2, 3 * i + 3, 2 * i + 1, 2 * i + 2
        nodes += [
            {"id": a, "type": "DiscomfortInput", "mode": 0,
             "inputs": [{"name": "default", "type": "*", "link": None}],
             "outputs": [{"name": "value", "type": "*", "links": [l1]}], "widgets_values": [uid]},
            {"id": b, "type": cls, "mode": 0,
             "inputs": [{"name": "value", "type": kind, "widget": {"name": "value"}, "link": l1}],
             "outputs": [{"name": kind, "type": kind, "links": [l2]}], "widgets_values": [default]},
            {"id": c, "type": "DiscomfortOutput", "mode": 0,
             "inputs": [{"name": "value", "type": "*", "link": l2}], "outputs": [],
             "widgets_values": [uid + "_out"]}]
        links += [[l1, a, 0, b, 0, kind], [l2, b, 0, c, 0, kind]]
    return {"last_node_id": 3 * len(KINDS), "last_link_id": 2 * len(KINDS), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def typed_api_workflow() -> dict:
    prompt = {}
    for i, (uid, cls, _kind, _default) in enumerate(KINDS):
        a, b, c = (str(3 * i + n) for n in (1, 2, 3))
        prompt[a] = {"class_type": "DiscomfortInput", "inputs": {"unique_id": uid}}
        prompt[b] = {"class_type": cls, "inputs": {"value": [a, 0]}}
        prompt[c] = {"class_type": "DiscomfortOutput",
                     "inputs": {"value": [b, 0], "unique_id": uid + "_out"}}
    return prompt


@pytest.fixture
def workflows(tmp_path) -> dict[str, str]:
    paths = {"ui": tmp_path / "typed_ui.json", "api": tmp_path / "typed_api.json"}
    paths["ui"].write_text(json.dumps(typed_ui_workflow()))
    paths["api"].write_text(json.dumps(typed_api_workflow()))
    return {k: str(v) for k, v in paths.items()}


def private_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    return root


def test_ports_of_an_editor_workflow_need_no_server():
    done = cli_env("ports", INVERT_UI, env=NO_COMFYUI, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["input", "'img'", "IMAGE", "node", "1",
                                   "output", "'inverted'", "IMAGE", "node", "3"]
    assert done.stderr == ""


def test_ports_types_editor_links_offline(workflows):
    done = cli_env("ports", workflows["ui"], env=NO_COMFYUI, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [(r[1], r[2]) for r in rows] == [
        ("'prompt'", "STRING"), ("'seed'", "INT"), ("'strength'", "FLOAT"), ("'flag'", "BOOLEAN"),
        ("'prompt_out'", "STRING"), ("'seed_out'", "INT"), ("'strength_out'", "FLOAT"),
        ("'flag_out'", "BOOLEAN")]


def test_ports_of_an_api_workflow_say_their_types_are_unknown(workflows):
    done = cli_env("ports", workflows["api"], env=NO_COMFYUI, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["input", "'prompt'", "*", "node", "1"]
    assert "warning:" in done.stderr and "unknown" in done.stderr
    assert "--object-info FILE" in done.stderr and "--fetch-types" in done.stderr
    done = cli_env("ports", workflows["api"], "--object-info", OBJECT_INFO, env=NO_COMFYUI, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines()[0].split() == ["input", "'prompt'", "STRING", "node", "1"]


def test_set_values_take_their_ports_types(tmp_path):
    import torch

    from discomfort.cli import UsageError, convert_setting
    from discomfort.images import save_comfy_image_to_disk

    assert convert_setting("prompt", "STRING", "123") == "123"
    assert convert_setting("prompt", "STRING", '{"a": 1}') == '{"a": 1}'
    assert convert_setting("sampler", "COMBO", "1.5") == "1.5"
    assert convert_setting("seed", "INT", "42") == 42 and convert_setting("seed", "INT", "-3") == -3
    cfg = convert_setting("cfg", "FLOAT", "7")
    assert cfg == 7.0 and isinstance(cfg, float)
    for word, value in [("true", True), ("False", False), ("1", True), ("0", False),
                        ("yes", True), ("NO", False)]:
        assert convert_setting("flag", "BOOLEAN", word) is value
    assert convert_setting("opts", "*", '{"a": 1}') == {"a": 1}   # unknown type: JSON first
    assert convert_setting("n", "*", "123") == 123
    assert convert_setting("text", "*", "a lighthouse") == "a lighthouse"  # else text
    assert convert_setting("latent", "LATENT", "[1, 2]") == [1, 2]
    picture = tmp_path / "in.png"
    save_comfy_image_to_disk(torch.zeros(1, 2, 3, 3), picture)
    assert list(convert_setting("img", "IMAGE", f"@{picture}").shape) == [1, 2, 3, 3]
    assert list(convert_setting("img", "*", f"@{picture}").shape) == [1, 2, 3, 3]
    for key, kind, raw in [("seed", "INT", "abc"), ("seed", "INT", "1.5"), ("cfg", "FLOAT", "x"),
                           ("cfg", "FLOAT", "nan"), ("flag", "BOOLEAN", "maybe"),
                           ("img", "IMAGE", "[1]")]:
        with pytest.raises(UsageError) as caught:
            convert_setting(key, kind, raw)
        message = str(caught.value)
        assert repr(key) in message and kind in message and repr(raw) in message, message


def test_input_ports_are_typed_before_any_server(workflows):
    from discomfort.cli import InputPorts

    ui = InputPorts([workflows["ui"]])
    assert {k: ui.kind(k) for k in ui.kinds} == {"prompt": "STRING", "seed": "INT",
                                                 "strength": "FLOAT", "flag": "BOOLEAN"}
    assert not ui.needs_server("prompt")
    api = InputPorts([workflows["api"]])
    assert api.kind("prompt") == "*" and api.needs_server("prompt")
    api.type_with(json.loads(Path(OBJECT_INFO).read_text()))
    assert api.kind("prompt") == "STRING" and api.kind("seed") == "INT"
    both = InputPorts([workflows["api"], workflows["ui"]])  # the editor's links type it
    assert both.kind("seed") == "INT" and not both.needs_server("seed")


def test_a_wrong_set_is_refused_before_any_server_starts(workflows):
    done = cli_env("run", workflows["ui"], "--set", "prompt=hi", "--set", "sede=4",
                   env=NO_COMFYUI, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "no input port 'sede' in " + workflows["ui"] in done.stderr
    assert "did you mean 'seed'?" in done.stderr
    assert "the input ports are flag, prompt, seed, strength" in done.stderr
    assert "Traceback" not in done.stderr and "ComfyUI" not in done.stderr
    done = cli_env("run", workflows["ui"], "--set", "seed=many", env=NO_COMFYUI, timeout=60)
    assert done.returncode == 2 and "input port 'seed' takes INT" in done.stderr
    assert "'many'" in done.stderr
    done = cli_env("run", workflows["ui"], "--set", "seed=@missing.png", env=NO_COMFYUI, timeout=60)
    assert done.returncode == 2 and "takes INT" in done.stderr


def test_a_stale_serve_file_is_ignored_and_said(tmp_path, workflows):
    from discomfort.serve_state import state_path, write_state

    root = private_root(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=60)
    write_state({"url": "http://127.0.0.1:9", "pid": gone.pid, "pid_started": 1.0,
                 "serve_pid": gone.pid, "serve_started": 1.0, "started_at": 0}, root)
    assert state_path(root).stat().st_mode & 0o777 == 0o600
    done = cli_env("ports", "--fetch-types", workflows["api"], timeout=60,
                   env=dict(NO_COMFYUI, DISCOMFORT_ROOT=str(root)))
    assert "ignoring a stale warm-server file" in done.stderr and "not running" in done.stderr
    assert done.returncode == 1 and "COMFYUI_PATH" in done.stderr  # then it tried its own
    assert not state_path(root).exists()  # its processes are all gone: removed


def _wait_for(predicate, deadline_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_s:g} s")
        time.sleep(0.1)


@pytest.mark.server
def test_serve_keeps_a_warm_server_that_run_attaches_to(tmp_path, model_dir, workflows):
    import psutil

    from conftest import app_settings
    from discomfort.serve_state import read_state, state_path
    from discomfort.server import http_json

    root = private_root(tmp_path)
    env = {"DISCOMFORT_ROOT": str(root)}
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(app_settings(model_dir)))
    out, err = open(tmp_path / "serve.out", "w+"), open(tmp_path / "serve.err", "w+")
    serve = subprocess.Popen([sys.executable, "-m", "discomfort", "serve", "--config", str(config)],
                             stdout=out, stderr=err, text=True, env=dict(os.environ, **env))
    try:
        _wait_for(lambda: state_path(root).exists(), 240, "serve's state file", serve)
        state = read_state(root)
        url, pid = state["url"], state["pid"]
        auth = {"token": state["token"]} if state.get("token") else {}  # a managed server's secret
        assert http_json(url + "/discomfort/info", **auth)["pid"] == pid  # the state names it
        _wait_for(lambda: url in (tmp_path / "serve.out").read_text(), 10, "serve's URL line")
        assert f"kill {serve.pid}" in (tmp_path / "serve.out").read_text()

        # two runs attach, typed as their ports (the API prompt's types come from the server)
        for name, sets in [("api", ["prompt=123", "seed=7", "strength=0.5", "flag=yes"]),
                           ("ui", ["prompt=007", "seed=-2", "strength=3", "flag=false"])]:
            outdir = tmp_path / f"out-{name}"
            args = [a for s in sets for a in ("--set", s)]
            done = cli_env("run", workflows[name], *args, "--out", str(outdir), "--no-progress",
                           env=env, timeout=120)
            assert done.returncode == 0, done.stderr
            assert f"attached to warm server {url} (" in done.stderr, done.stderr
            assert "starting a headless" not in done.stderr and "started a headless" not in done.stderr
            assert "ran 1 workflow x 1 in" in done.stderr
            got = {k: json.loads((outdir / f"{k}_out.json").read_text()) for k, *_ in KINDS}
            assert got == ({"prompt": "123", "seed": 7, "strength": 0.5, "flag": True} if name == "api"
                           else {"prompt": "007", "seed": -2, "strength": 3.0, "flag": False})
        assert read_state(root)["pid"] == pid
        assert http_json(url + "/discomfort/info", **auth)["pid"] == pid

        done = cli_env("ports", "--fetch-types", workflows["api"], env=env, timeout=120)
        assert done.returncode == 0 and f"attached to warm server {url}" in done.stderr, done.stderr
        assert done.stdout.splitlines()[1].split()[:3] == ["input", "'seed'", "INT"]
        done = cli_env("convert", workflows["ui"], env=env, timeout=120)
        assert done.returncode == 0 and f"attached to warm server {url}" in done.stderr, done.stderr
        assert json.loads(done.stdout)["2"]["class_type"] == "PrimitiveString"

        # --no-serve starts its own (here: fails to, proving it did not attach)
        done = cli_env("run", workflows["ui"], "--no-serve", env=dict(env, **NO_COMFYUI), timeout=60)
        assert done.returncode == 1 and "attached" not in done.stderr and "COMFYUI_PATH" in done.stderr
        # a second serve refuses while the first one answers
        done = cli_env("serve", env=env, timeout=60)
        assert done.returncode == 1 and f"already runs at {url}" in done.stderr

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, (tmp_path / "serve.err").read_text()
        assert not state_path(root).exists()
        _wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                  30, "the warm server's exit")
        assert "stopped" in (tmp_path / "serve.err").read_text()
    finally:
        if serve.poll() is None:  # only the process this test started
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait(timeout=30)
        out.close()
        err.close()


@pytest.mark.server
def test_serve_stops_on_sigint_even_while_starting(tmp_path, model_dir):
    from conftest import app_settings
    from discomfort.serve_state import state_path

    root = private_root(tmp_path)
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(app_settings(model_dir)))
    err_path = tmp_path / "serve.err"
    with open(err_path, "w") as err:
        serve = subprocess.Popen([sys.executable, "-m", "discomfort", "--config", str(config), "serve"],
                                 stdout=subprocess.DEVNULL, stderr=err,
                                 env=dict(os.environ, DISCOMFORT_ROOT=str(root)))
        try:
            _wait_for(lambda: "starting a headless ComfyUI" in err_path.read_text(), 60,
                      "serve starting", serve)
            serve.send_signal(signal.SIGINT)
            assert serve.wait(timeout=240) == 0, err_path.read_text()
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait(timeout=30)
    text = err_path.read_text()
    assert "SIGINT: stopping once the server has started" in text and "stopped" in text, text
    assert "Traceback" not in text and not state_path(root).exists()
