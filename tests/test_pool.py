"""DiscomfortPool on two real managed servers (started once for the module): results in input
order and equal to one-by-one runs, a killed server's job done elsewhere, a checkpoint loaded
at most once per server, failing jobs in their slots; and the per-server settings as a unit."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import TINY_CHECKPOINT, app_settings, ported_sleeper
from discomfort.errors import (
    ComfyServerDied,
    ConfigError,
    ExecutionError,
    InvalidArgumentError,
    PortTypeError,
    UnknownInputError,
    WrongTypeError,
)
from discomfort.pool import DiscomfortPool, recipe_digest, server_settings
from jobs_support import FAILER, LOAD, SAMPLE, picture
from sd_support import tiny_checkpoint

SMALL = {"steps": 1, "width": 64, "height": 64, "negative": "text, watermark"}


async def until(condition, seconds: float) -> None:
    """Poll ``condition`` until it holds; fail (not hang) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def pool(model_dir):
    pool = await DiscomfortPool.create(servers=2, **app_settings(model_dir))
    try:
        yield pool
    finally:
        await pool.shutdown()


@pytest.fixture
async def all_up(pool):
    """Every server up (a replacement from an earlier test may still be starting)."""
    await until(lambda: all(s.state == "up" for s in pool.status()), 180)
    return pool


def fresh_names(model_dir: Path, count: int) -> list[str]:
    """Checkpoint names no server has loaded: the loader's count starts at zero."""
    names = []
    for _ in range(count):
        name = f"tiny-pool-{uuid.uuid4().hex[:8]}.safetensors"
        (model_dir / "checkpoints" / name).symlink_to(tiny_checkpoint())
        names.append(name)
    return names


# --- on the servers -----------------------------------------------------------------------

@pytest.mark.server
async def test_twenty_jobs_match_one_by_one_runs_in_order(all_up):
    pool = all_up
    models = await pool.run([LOAD], {"checkpoint": TINY_CHECKPOINT})
    jobs = [dict(models, prompt="a lighthouse at dusk", seed=seed, **SMALL) for seed in range(20)]
    results = await pool.map([SAMPLE], jobs, progress=False)
    reports = pool.last_map
    assert [r.index for r in reports] == list(range(20))
    assert all(r.ok and r.attempts == 1 for r in reports)
    assert {r.server for r in reports} == {0, 1}
    assert len({results[i]["image"].sum().item() for i in range(20)}) == 20  # order matters
    for index, job in enumerate(jobs):
        # One by one, each on the server that did NOT run it in the pool: computed afresh.
        other = pool.servers[1 - reports[index].server]
        with other.Context() as context:
            for key in ("model", "clip", "vae"):
                context.save(key, job[key], pass_by="ref")
            alone = await other.run([SAMPLE], {k: v for k, v in job.items()
                                               if k not in ("model", "clip", "vae")},
                                    context=context, progress=False)
        assert other.last_run.executions("KSampler") == 1
        assert torch.equal(alone["image"], results[index]["image"]), index


@pytest.mark.server
async def test_concurrent_runs_from_tasks_share_the_servers(all_up):
    pool = all_up

    async def one(i: int):
        result = await pool.run(ported_sleeper(3, 0.1), {"img": picture(0.1 + i / 100)})
        return result, pool.last_run  # this task's own report

    pairs = await asyncio.gather(*(one(i) for i in range(4)))
    for i, (result, report) in enumerate(pairs):
        assert torch.equal(result["slept"], picture(0.1 + i / 100))
        assert report.ok and report.index is None
    assert {report.server for _, report in pairs} == {0, 1}
    assert len({report.report.prompt_ids[0] for _, report in pairs}) == 4


@pytest.mark.server
async def test_a_failing_job_comes_back_in_its_slot_and_is_not_retried(all_up):
    pool = all_up
    jobs = [{"img": picture(0.2), "fail": False}, {"img": picture(0.3), "fail": True},
            {"img": picture(0.4), "fial": False}, {"img": picture(0.5), "fail": "yes"},
            {"img": picture(0.6), "fail": False}]
    results = await pool.map(FAILER, jobs, progress=False)
    assert torch.equal(results[0]["out"], picture(0.2))
    assert torch.equal(results[4]["out"], picture(0.6))
    assert isinstance(results[1], ExecutionError) and "fails on purpose" in str(results[1])
    assert isinstance(results[2], UnknownInputError) and "did you mean 'fail'" in str(results[2])
    assert isinstance(results[3], PortTypeError) and "'fail'" in str(results[3])
    assert [r.attempts for r in pool.last_map] == [1, 1, 1, 1, 1]
    assert [r.ok for r in pool.last_map] == [True, False, False, False, True]
    with pytest.raises(ExecutionError, match="fails on purpose"):  # the first, in input order
        await pool.map(FAILER, jobs, progress=False, return_exceptions=False)
    assert [r.ok for r in pool.last_map] == [True, False, False, False, True]  # all ended


@pytest.mark.server
async def test_ten_jobs_sharing_a_checkpoint_load_it_at_most_once_per_server(all_up, model_dir):
    pool = all_up
    [name] = fresh_names(model_dir, 1)
    models = await pool.run([LOAD], {"checkpoint": name})
    loaded = pool.last_run
    assert loaded.executions("CheckpointLoaderSimple") == 1
    jobs = [dict(models, prompt="a fox in the snow", seed=seed, **SMALL) for seed in range(10)]
    results = await pool.map([SAMPLE], jobs, progress=False)
    assert all(isinstance(r, dict) for r in results)
    loads = Counter({loaded.server: 1})
    for report in pool.last_map:
        loads[report.server] += report.executions("CheckpointLoaderSimple")
    print("loader executions per server:", dict(loads))
    assert {r.server for r in pool.last_map} == {0, 1}
    assert loads == {0: 1, 1: 1}  # once on each server that ran jobs, never once per job


@pytest.mark.server
async def test_a_job_goes_to_the_server_that_holds_its_recipe(all_up, model_dir):
    pool = all_up
    first, second = fresh_names(model_dir, 2)
    a = await pool.run([LOAD], {"checkpoint": first})
    holds_a = pool.last_run.server
    b = await pool.run([LOAD], {"checkpoint": second})
    holds_b = pool.last_run.server
    assert holds_a != holds_b  # an idle server took the second load
    loads = 0
    for seed, (models, holder) in enumerate([(a, holds_a), (a, holds_a), (a, holds_a),
                                             (b, holds_b), (b, holds_b), (a, holds_a)]):
        await pool.run([SAMPLE], dict(models, prompt="a boat", seed=seed, **SMALL))
        assert pool.last_run.server == holder, seed
        loads += pool.last_run.executions("CheckpointLoaderSimple")
    assert loads == 0
    assert recipe_digest(a["model"]) != recipe_digest(b["model"])


@pytest.mark.server
async def test_a_server_killed_mid_job_is_replaced_and_its_job_done_elsewhere(all_up):
    pool = all_up
    sleeper = ported_sleeper(10, 0.1)  # 1 s a job
    started = time.monotonic()
    await pool.map(sleeper, [{"img": picture(0.01 * i)} for i in range(6)], progress=False)
    baseline = time.monotonic() - started

    victim = pool.servers[0]
    pid = victim.Worker.server.pid  # the process this pool started for server 0
    running = asyncio.Event()

    def on_event(event):
        if event.type == "progress" and victim.last_run is not None \
                and event.data.get("prompt_id") in victim.last_run.prompt_ids:
            running.set()  # server 0 is mid-job

    async def go():
        jobs = [{"img": picture(0.5 + 0.01 * i)} for i in range(6)]
        return await pool.map(sleeper, jobs, progress=False, on_event=on_event), pool.last_map

    started = time.monotonic()
    task = asyncio.ensure_future(go())
    await asyncio.wait_for(running.wait(), 60)
    os.kill(pid, signal.SIGKILL)
    results, reports = await asyncio.wait_for(task, 120)
    extra = time.monotonic() - started - baseline
    print(f"6 jobs: {baseline:.1f} s; with server 0 killed mid-job: {extra:+.1f} s extra")
    assert [isinstance(r, dict) for r in results] == [True] * 6  # error count 0
    for i, result in enumerate(results):
        assert torch.equal(result["slept"], picture(0.5 + 0.01 * i))
    rerun = [r for r in reports if r.attempts == 2]
    assert len(rerun) == 1 and isinstance(rerun[0].faults[0], ComfyServerDied)
    assert rerun[0].server == 1  # again, on the other server
    assert all(r.attempts == 1 for r in reports if r is not rerun[0])
    assert extra < 60  # a liveness bound, not a benchmark
    await until(lambda: pool.status()[0].state == "up", 180)
    status = pool.status()[0]
    assert status.replacements == 1 and status.pid not in (None, pid)
    again = await pool.map(sleeper, [{"img": picture(0.9 + 0.01 * i)} for i in range(4)],
                           progress=False)
    assert all(isinstance(r, dict) for r in again)
    assert {r.server for r in pool.last_map} == {0, 1}  # the replacement takes jobs


@pytest.mark.server
async def test_a_job_whose_server_dies_twice_fails_with_it_once_rerun(all_up):
    pool = all_up
    killed: list[int] = []
    servers = list(pool.servers)  # as they are now: each one's process, started by the pool
    replaced = [s.replacements for s in pool.status()]

    def on_event(event):  # kill whichever server runs the job, as soon as it runs
        if event.type != "progress":
            return
        for discomfort in servers:
            if discomfort.last_run is not None and event.data.get("prompt_id") in \
                    discomfort.last_run.prompt_ids and discomfort.Worker.server.pid not in killed:
                killed.append(discomfort.Worker.server.pid)
                os.kill(killed[-1], signal.SIGKILL)

    started = time.monotonic()
    [result] = await asyncio.wait_for(pool.map(ported_sleeper(50, 0.1), [{"img": picture(0.77)}],
                                               progress=False, on_event=on_event), 120)
    [report] = pool.last_map
    assert isinstance(result, ComfyServerDied) and report.error is result
    assert report.attempts == 2 and len(report.faults) == 2 and len(killed) == 2
    assert time.monotonic() - started < 60  # the job's 5 s sleep never finished: no hang
    await until(lambda: all(s.state == "up" for s in pool.status()), 180)
    assert [s.replacements for s in pool.status()] == [n + 1 for n in replaced]


@pytest.mark.server
async def test_one_progress_bar_over_all_jobs(all_up, capsys):
    pool = all_up
    await pool.map(FAILER, [{"img": picture(0.01 * i), "fail": False} for i in range(3)])
    bar = capsys.readouterr().err
    assert "jobs" in bar and "3/3" in bar and "prompt " not in bar  # no per-prompt bars
    await pool.map(FAILER, [{"img": picture(0.02), "fail": False}], progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.server
async def test_bad_calls_raise_before_anything_runs(all_up):
    pool = all_up
    with pytest.raises(WrongTypeError, match="one dict per job"):
        await pool.map(FAILER, {"img": picture(0.1)})
    with pytest.raises(WrongTypeError, match="inputs\\[1\\] must be a dict"):
        await pool.map(FAILER, [{}, [1, 2]])
    with pytest.raises(WrongTypeError, match="did you mean 'iterations'"):
        await pool.map(FAILER, [{}], iteratons=2)
    with pytest.raises(InvalidArgumentError, match="2 entries for 1 jobs"):
        await pool.map(FAILER, [{}], contexts=[None, None])
    with pool.servers[0].Context() as shared:
        with pytest.raises(InvalidArgumentError, match="several jobs"):
            await pool.map(FAILER, [{}, {}], contexts=[shared, shared])


# --- without a server: the per-server settings --------------------------------------------

def test_each_server_is_pinned_to_its_own_cuda_device():
    settings = server_settings(4, devices=[0, 1], options={"extra_args": ["--fast"],
                                                           "cache_lru": 8})
    assert [s["extra_args"] for s in settings] == [
        ["--fast", "--cuda-device", "0"], ["--fast", "--cuda-device", "1"],
        ["--fast", "--cuda-device", "0"], ["--fast", "--cuda-device", "1"]]
    assert all(s["cache_lru"] == 8 and "OMP_NUM_THREADS" not in s["env"] for s in settings)
    found = server_settings(devices=None, cuda_devices=3)  # one server per device found
    assert [s["extra_args"] for s in found] == [["--cuda-device", str(i)] for i in range(3)]


def test_cpu_servers_share_the_cores():
    settings = server_settings(2, devices=None, cuda_devices=0, cores=8)
    assert [s["env"]["OMP_NUM_THREADS"] for s in settings] == ["4", "4"]
    assert all("--cuda-device" not in s["extra_args"] for s in settings)
    assert server_settings(3, devices="cpu", cores=2)[0]["env"]["OMP_NUM_THREADS"] == "1"
    own = server_settings(2, devices=[], cpu_threads=3, options={"env": {"A": "1"}},
                          per_server=[{"env": {"OMP_NUM_THREADS": "2"}}, {"extra_args": ["-x"]}])
    assert own[0]["env"] == {"A": "1", "OMP_NUM_THREADS": "2"}  # the caller's choice stands
    assert own[1]["env"]["OMP_NUM_THREADS"] == "3" and own[1]["extra_args"] == ["-x"]


def test_attached_servers_follow_the_managed_ones():
    settings = server_settings(1, urls=["http://127.0.0.1:8188"], devices="cpu",
                               options={"token": "t", "model_paths": {"checkpoints": "/m"}})
    assert settings[0]["model_paths"] == {"checkpoints": "/m"} and "url" not in settings[0]
    assert settings[1] == {"token": "t", "url": "http://127.0.0.1:8188"}
    assert len(server_settings(urls=["http://a:1", "http://b:2"], devices="cpu")) == 2


@pytest.mark.parametrize("kwargs, error, message", [
    ({"servers": 0}, InvalidArgumentError, "at least one server"),
    ({"servers": -1}, InvalidArgumentError, "servers must be"),
    ({"servers": True}, InvalidArgumentError, "servers must be"),
    ({"servers": 2, "devices": [-1]}, InvalidArgumentError, "CUDA device ids"),
    ({"servers": 2, "devices": ["0"]}, InvalidArgumentError, "CUDA device ids"),
    ({"servers": 2, "per_server": [{}]}, InvalidArgumentError, "list of 2 dicts"),
    ({"servers": 2, "cpu_threads": 0}, InvalidArgumentError, "cpu_threads"),
    ({"servers": 1, "devices": [0], "options": {"extra_args": ["--cuda-device", "1"]}},
     ConfigError, "one or the other"),
    ({"servers": 1, "options": {"url": "http://x:1"}}, ConfigError, "urls="),
    ({"servers": 1, "urls": "http://x:1"}, WrongTypeError, "list of server URLs"),
    ({"servers": 1, "options": {"extra_args": "--fast"}}, WrongTypeError, "extra_args"),
])
def test_bad_settings_are_refused(kwargs, error, message):
    kwargs.setdefault("cuda_devices", 0)
    with pytest.raises(error, match=message):
        server_settings(**kwargs)


async def test_create_refuses_bad_settings_before_starting_a_server():
    with pytest.raises(ConfigError, match="unknown server setting"):
        await DiscomfortPool.create(servers=2, devices="cpu", bogus=1)
    with pytest.raises(InvalidArgumentError, match="at least one server"):
        await DiscomfortPool.create(servers=0, devices="cpu")
