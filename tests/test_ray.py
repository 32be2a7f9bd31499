"""RayPool on a real two-node Ray cluster that this module starts on this machine (a head and
a second node, each `ray start`ed in its own session with its own DISCOMFORT_ROOT and temp
dir): a job on each node, values crossing as plain data, errors in their slots, a checkpoint
recipe sampled on both nodes alike, an actor killed mid-job and its job done elsewhere, the
docs' example, and every process the module started gone at the end."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch

from conftest import app_settings, ported_sleeper
from discomfort.errors import (
    ComfyServerDied,
    ComfyStartError,
    ExecutionError,
    RayNotInstalledError,
    RemoteValueError,
    UnknownInputError,
)
from jobs_support import FAILER, LOAD, REPO, SAMPLE, picture

ray = pytest.importorskip("ray")
from discomfort.ray import RayPool, from_plain, to_plain  # noqa: E402
from ray_support import LocalCluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    made = LocalCluster()
    try:
        made.start()
        ray.init(address=made.address, logging_level="warning", log_to_driver=False)
        yield made
    finally:
        made.stop()
        shutil.rmtree(made.root, ignore_errors=True)


@pytest.fixture(scope="module")
async def pool(cluster, model_dir):
    started = time.monotonic()
    made = await RayPool.create(**app_settings(model_dir))
    print(f"2 actors with their servers up in {time.monotonic() - started:.1f} s")
    try:
        yield made
    finally:
        await made.shutdown()


# --- no cluster needed --------------------------------------------------------------------

def test_values_travel_as_plain_data_and_tensors_come_back_as_tensors():
    value = {"image": picture(0.25), "latent": {"samples": torch.zeros(1, 4, 2, 2)},
             "sizes": (64, 64), "name": "x", "scale": 1.5, "none": None, "array": np.ones(3)}
    plain = to_plain(value)

    def kinds(item):
        if isinstance(item, dict):
            return set().union({dict}, *(kinds(v) for v in item.values()))
        if isinstance(item, list):
            return set().union({list}, *(kinds(v) for v in item))
        return {type(item)}

    assert kinds(plain) <= {dict, list, str, int, float, type(None), np.ndarray}
    back = from_plain(plain)
    assert torch.equal(back["image"], value["image"])
    assert torch.equal(back["latent"]["samples"], value["latent"]["samples"])
    assert back["sizes"] == [64, 64] and back["scale"] == 1.5 and back["none"] is None
    assert isinstance(back["array"], np.ndarray)
    with pytest.raises(RemoteValueError, match=r"inputs\['ctx'\].*WorkflowContext"):
        from discomfort import WorkflowContext
        to_plain({"ctx": WorkflowContext.__new__(WorkflowContext)}, "inputs")


async def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    with pytest.raises(RayNotInstalledError, match=r"pip install 'discomfort\[ray\]'"):
        await RayPool.create()


# --- on the cluster -----------------------------------------------------------------------

@pytest.mark.server
async def test_one_actor_per_node_each_with_its_own_store_root(cluster, pool):
    status = pool.status()
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(status) == 2 and {s["node"] for s in status} == nodes
    assert sorted(s["store_root"] for s in status) == sorted(str(r) for r in cluster.roots)
    for s in status:  # the server itself runs with its node's root
        env = psutil.Process(s["server_pid"]).environ()
        assert env["DISCOMFORT_ROOT"] == s["store_root"]


@pytest.mark.server
async def test_jobs_run_on_both_nodes_and_come_back_in_order(pool):
    jobs = [{"img": picture(0.1 * i)} for i in range(6)]
    results = await pool.map(ported_sleeper(3, 0.1), jobs, progress=False)
    for i, result in enumerate(results):
        assert isinstance(result["slept"], torch.Tensor)
        assert torch.equal(result["slept"], picture(0.1 * i)), i
    reports = pool.last_map
    assert [r.index for r in reports] == list(range(6))
    assert all(r.ok and r.attempts == 1 for r in reports)
    assert {r.node for r in reports} == {s["node"] for s in pool.status()}
    assert all(r.executions("DiscomfortTestSleep") == 1 for r in reports)


@pytest.mark.server
async def test_failing_jobs_come_back_in_their_slots_as_discomforts_errors(pool):
    jobs = [{"img": picture(0.2), "fail": False}, {"img": picture(0.3), "fail": True},
            {"img": picture(0.4), "fial": False}]
    results = await pool.map(FAILER, jobs, progress=False)
    assert torch.equal(results[0]["out"], picture(0.2))
    assert isinstance(results[1], ExecutionError) and "fails on purpose" in str(results[1])
    assert isinstance(results[2], UnknownInputError) and "did you mean 'fail'" in str(results[2])
    assert [r.attempts for r in pool.last_map] == [1, 1, 1]
    with pytest.raises(RemoteValueError, match="cannot travel"):  # refused before it is sent
        await pool.map(FAILER, [{"img": object(), "fail": False}], progress=False)


@pytest.mark.server
async def test_a_checkpoint_recipe_samples_alike_on_both_nodes(pool, fresh_checkpoint):
    models = await pool.run([LOAD], {"checkpoint": fresh_checkpoint})
    assert all(isinstance(models[k], dict) for k in ("model", "clip", "vae"))  # recipes, as data
    loaded_on = pool.last_run.node
    job = dict(models, prompt="a lighthouse at dusk", negative="text", seed=3, steps=2,
               width=64, height=64)
    first, second = await pool.map([SAMPLE], [job, job], progress=False)
    reports = pool.last_map
    assert {r.node for r in reports} == {s["node"] for s in pool.status()}
    assert tuple(first["image"].shape) == (1, 64, 64, 3)
    assert torch.equal(first["image"], second["image"])  # the same picture on either node
    loads = {r.node: r.executions("CheckpointLoaderSimple") for r in reports}
    assert loads[loaded_on] == 0  # that node holds it: not loaded again


SCALING = (REPO / "docs" / "scaling.md").read_text()


@pytest.mark.server
def test_the_docs_ray_example_runs_on_the_cluster(cluster, scratch):
    [code] = re.findall(r"```text\n(import asyncio\n.*?discomfort\.ray.*?)```", SCALING, re.S)
    env = dict(os.environ, RAY_ADDRESS=cluster.address)  # its ray.init() connects here
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=scratch, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line.strip() for line in done.stdout.splitlines()]
    for line in code.splitlines():
        expected = re.search(r"^\s*print\(.*\)\s+#\s*(.+)$", line)
        if expected:
            assert expected.group(1).strip() in printed, (expected.group(1), printed)


@pytest.mark.server
async def test_servers_that_cannot_start_raise_comfy_start_error(pool, model_dir):
    with pytest.raises(ComfyStartError, match="did not start"):
        await RayPool.create(**app_settings(model_dir), extra_args=["--no-such-comfyui-flag"])
    # (the last test checks that nothing of it is left running)


@pytest.mark.server
async def test_an_actor_killed_mid_job_has_its_job_done_on_the_other(pool):
    status = pool.status()
    victim = status[0]
    jobs = [{"img": picture(0.7)}, {"img": picture(0.8)}]
    task = asyncio.ensure_future(
        pool.map(ported_sleeper(20, 0.1), jobs, progress=False))  # 2 s a job
    deadline = time.monotonic() + 30
    while not all(s["busy"] for s in pool.status()):
        assert time.monotonic() < deadline, "the jobs never started"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # mid-job
    ray.kill(pool.actor(0))
    results = await asyncio.wait_for(task, 60)
    assert torch.equal(results[0]["slept"], picture(0.7))
    assert torch.equal(results[1]["slept"], picture(0.8))
    reports = pool.last_map
    rerun = [r for r in reports if r.attempts == 2]
    assert len(rerun) == 1 and all(r.ok for r in reports)
    assert isinstance(rerun[0].faults[0], ComfyServerDied)
    assert rerun[0].node == status[1]["node"] != victim["node"]
    assert [s["state"] for s in pool.status()] == ["retired", "up"]
    deadline = time.monotonic() + 10  # the killed actor's server goes with it (its watchdog)
    while psutil.pid_exists(victim["server_pid"]) and \
            psutil.Process(victim["server_pid"]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed actor's ComfyUI is still running"
        time.sleep(0.2)


@pytest.mark.server
async def test_shutdown_and_stopping_the_cluster_leave_no_process(cluster, pool):
    servers = [s["server_pid"] for s in pool.status()]
    assert cluster.processes()  # the cluster is up: the check below can fail
    await pool.shutdown()
    cluster.stop()
    assert cluster.processes() == []
    assert not [pid for pid in servers if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
