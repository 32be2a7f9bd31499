"""WorkflowContext across processes: concurrency, killed writers, crashed owners."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from discomfort import WorkflowContext
from discomfort.store import shm
from torch_support import FULL_SOURCE, equal, full

HAMMER = FULL_SOURCE + """
import sys, threading
from discomfort import WorkflowContext
ctx = WorkflowContext(run_id={run_id!r}, create=False)
errors = []
def work(t):
    try:
        for i in range({per_thread}):
            key = f"p{proc}-t{{t}}-{{i}}"
            value = full((16,), float(i)) if i % 3 == 0 else (key, i)
            ctx.save(key, value, use_ram=(i % 2 == 0))
            ctx.save("shared", (key, i))
            ctx.load("shared")
            ctx.list_keys()
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
ctx.shutdown()
print("errors:", errors)
sys.exit(1 if errors else 0)
"""


def test_16_threads_in_each_of_2_processes_lose_no_write(run_python):
    per_thread = 25
    with WorkflowContext(run_id="hammer") as ctx:
        procs = [run_python(HAMMER.format(run_id="hammer", per_thread=per_thread, proc=p), wait=False)
                 for p in range(2)]
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
        keys = set(ctx.list_keys())
        expected = {f"p{p}-t{t}-{i}" for p in range(2) for t in range(16) for i in range(per_thread)}
        assert expected <= keys and len(keys) == len(expected) + 1
        for key in expected:
            i = int(key.rsplit("-", 1)[1])
            value = ctx.load(key)
            if i % 3 == 0:
                assert equal(value, full((16,), float(i)))
            else:
                assert value == (key, i)
        assert ctx.load("shared")[0] in expected


WRITER = FULL_SOURCE + """
from discomfort import WorkflowContext
ctx = WorkflowContext(run_id={run_id!r}, create=False)
i = 0
while True:
    i += 1
    ctx.save("k", full(({n},), float(i)), use_ram={use_ram})
    print(i, flush=True)
"""


@pytest.mark.parametrize("use_ram", [True, False], ids=["ram", "disk"])
def test_a_writer_killed_mid_save_leaves_the_old_value(run_python, use_ram):
    n = 16 * 1024 * 1024  # 64 MB: a save takes long enough to be killed in the middle
    rng = random.Random(7)
    with WorkflowContext(run_id=f"killed-writer-{use_ram}") as ctx:
        ctx.save("k", full((n,), 0.0), use_ram=use_ram)
        for _ in range(3):
            writer = run_python(WRITER.format(run_id=ctx.run_id, n=n, use_ram=use_ram), wait=False)
            committed = [int(writer.stdout.readline()) for _ in range(2)]
            time.sleep(rng.uniform(0, 0.05))
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            value = ctx.load("k")
            assert value.shape == (n,) and bool((value == value[0]).all()), "a torn value"
            assert value[0].item() >= committed[-1]
        # What the killed saves had allocated is freed, not leaked.
        ram_keys = 1 if use_ram else 0
        assert len(shm.list_tagged(_tag(ctx))) <= 2 * ram_keys
        assert len(list((ctx.path / "data").iterdir())) == (0 if use_ram else 1)


def _tag(ctx) -> str:
    import json

    return json.loads((ctx.path / "run.json").read_text())["tag"]


OWNER = FULL_SOURCE + """
import json, time
from discomfort import WorkflowContext
ctx = WorkflowContext(run_id={run_id!r})
ctx.save("ram", full((1024,), 1.0))
ctx.save("ram2", "x")
ctx.save("disk", full((8,), 1.0), use_ram=False)
tag = json.loads((ctx.path / "run.json").read_text())["tag"]
print(json.dumps({{"path": str(ctx.path), "tag": tag}}), flush=True)
time.sleep(600)
"""


def _start_owner(run_python, run_id: str) -> tuple[object, dict]:
    import json

    owner = run_python(OWNER.format(run_id=run_id), wait=False)
    info = json.loads(owner.stdout.readline())
    assert len(shm.list_tagged(info["tag"])) == 2
    return owner, info


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_crashed_owners_run_is_reaped_at_the_next_open(run_python):
    from pathlib import Path

    owner, info = _start_owner(run_python, "crashed-owner")
    _kill(owner)
    assert Path(info["path"]).exists()  # nothing cleans up on SIGKILL...
    WorkflowContext().shutdown()        # ...until the next open reaps it
    assert not Path(info["path"]).exists()
    assert shm.list_tagged(info["tag"]) == []


def test_a_crashed_run_whose_index_memory_was_wiped_is_reaped(run_python):
    """After a reboot /dev/shm is empty but the run's directory on disk may remain."""
    import shutil
    from pathlib import Path

    from discomfort.store.index import memory_dir

    owner, info = _start_owner(run_python, "wiped-memory")
    _kill(owner)
    mem = memory_dir(Path(info["path"]))
    if mem is None or not mem.is_dir():
        pytest.skip("this machine keeps the index in the run directory")
    shutil.rmtree(mem)
    with pytest.raises(FileNotFoundError):  # the open reaps it first: its owner is dead
        WorkflowContext.open("wiped-memory")
    assert not Path(info["path"]).exists() and shm.list_tagged(info["tag"]) == []


def test_a_run_with_a_live_attacher_is_left_alone(run_python):
    from pathlib import Path

    owner, info = _start_owner(run_python, "attached-orphan")
    attached = WorkflowContext(run_id="attached-orphan", create=False)
    _kill(owner)
    WorkflowContext().shutdown()
    assert Path(info["path"]).exists() and attached.load("ram2") == "x"
    attached.shutdown()
    WorkflowContext().shutdown()
    assert not Path(info["path"]).exists() and shm.list_tagged(info["tag"]) == []


def test_a_dead_attachers_leftover_does_not_keep_a_run(run_python):
    from pathlib import Path

    owner, info = _start_owner(run_python, "dead-attacher")
    attacher = run_python(
        "import time\nfrom discomfort import WorkflowContext\n"
        "c = WorkflowContext(run_id='dead-attacher', create=False)\nprint('ok', flush=True)\n"
        "time.sleep(600)", wait=False)
    assert attacher.stdout.readline().strip() == "ok"
    _kill(attacher)
    _kill(owner)
    WorkflowContext().shutdown()
    assert not Path(info["path"]).exists()


def test_a_forked_child_does_not_share_its_parents_lock():
    with WorkflowContext() as ctx:
        ctx.save("k", 1)
        with ctx.locked():  # the parent holds the run's lock...
            pid = os.fork()
            if pid == 0:        # ...so the child must wait for it, not slip through
                from discomfort.errors import StoreLockTimeout

                try:
                    with ctx.locked(timeout=0.2):
                        os._exit(1)
                except StoreLockTimeout:
                    os._exit(0)
                os._exit(2)
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert ctx.load("k") == 1  # released: the parent goes on
