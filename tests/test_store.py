"""WorkflowContext in one process: every call of the spec, its exceptions, and the store contract."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import discomfort
from discomfort import WorkflowContext
from discomfort.errors import (
    ConfigError,
    ContextClosedError,
    DiscomfortWarning,
    InvalidIdError,
    UnsafeStoreError,
)
from discomfort.store import context as context_module, index as index_module, shm
from torch_support import equal, full, is_tensor, needs_torch, ones, rand, randn, torch, zeros

GIB = 1024 ** 3


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A root of this test's own (not yet created: the store makes it)."""
    path = tmp_path / "root"
    monkeypatch.setenv("DISCOMFORT_ROOT", str(path))
    return path


@pytest.fixture
def ctx(root):
    with WorkflowContext() as context:
        yield context


def write_config(tmp_path: Path, **values) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return path


def segments(context: WorkflowContext) -> list[str]:
    return shm.list_tagged(json.loads((context.path / "run.json").read_text())["tag"])


def test_the_library_is_the_checkouts_discomfort_package():
    library = Path(__file__).resolve().parents[1] / "discomfort" / "__init__.py"
    assert Path(discomfort.__file__).resolve() == library


# --- save / load --------------------------------------------------------------------------

VALUES = {
    "str": "a lighthouse at dusk",
    "int": 12345,
    "float": 7.5,
    "none": None,
    "dict": {"seed": 1, "cfg": [7.5, 8.0], "nested": {"a": "b"}},
    "list_of_tensors": [ones(2, 2), zeros(3)],
    "latent": {"samples": randn(1, 4, 8, 8)},
}


def same(a, b) -> bool:
    if is_tensor(a):
        return is_tensor(b) and a.dtype == b.dtype and equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("use_ram", [True, False])
@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_round_trip(ctx, name, use_ram):
    ctx.save(name, VALUES[name], use_ram=use_ram)
    loaded = ctx.load(name)
    assert same(loaded, VALUES[name])
    assert ctx.get_storage_info(name)["storage_type"] == ("ram" if use_ram else "disk")


TENSORS = {  # made in the test: without torch, the test skips
    "image": lambda: torch.rand(1, 16, 16, 3),
    "int64": lambda: torch.arange(12, dtype=torch.int64).reshape(3, 4),
    "bfloat16": lambda: torch.randn(5, dtype=torch.bfloat16),
    "scalar": lambda: torch.tensor(3.5),
    "empty": lambda: torch.empty(0, 4),
    "strided": lambda: torch.rand(4, 6)[:, ::2],  # not contiguous
}


@needs_torch
@pytest.mark.parametrize("use_ram", [True, False])
@pytest.mark.parametrize("make", TENSORS.values(), ids=TENSORS.keys())
def test_tensors_round_trip_raw_and_are_copies(ctx, make, use_ram):
    tensor = make()
    ctx.save("t", tensor, use_ram=use_ram)
    first, second = ctx.load("t"), ctx.load("t")
    assert first.dtype == tensor.dtype and first.shape == tensor.shape
    assert torch.equal(first, tensor)
    if first.numel():
        first.mul_(0)  # a loaded value is its own copy: mutating it changes nothing stored
        assert torch.equal(second, tensor) and torch.equal(ctx.load("t"), tensor)


def test_numpy_arrays_round_trip(ctx):
    for array in (np.arange(10, dtype=np.uint16), np.random.rand(3, 4).astype(np.float32).T,
                  np.array(["a", "bc"]), np.array([{"x": 1}], dtype=object)):
        ctx.save("a", array)
        loaded = ctx.load("a")
        assert loaded.dtype == array.dtype and np.array_equal(loaded, array)


@pytest.mark.parametrize("use_ram", [True, False])
def test_a_0d_array_loads_as_0d(ctx, use_ram):
    for array in (np.array(2.5), np.array(7, dtype=np.int16), np.float32(1.5)):
        ctx.save("a", array, use_ram=use_ram)
        loaded = ctx.load("a")
        assert type(loaded) is type(array) and loaded.shape == () and loaded.dtype == array.dtype
        assert loaded == array
    assert ctx.entry("a").shape is None  # a numpy scalar (not an array) goes by pickle
    ctx.save("a", np.array(2.5), use_ram=use_ram)
    assert ctx.entry("a").shape == ()


def test_load_of_a_missing_key_is_a_key_error(ctx):
    ctx.save("present", 1)
    with pytest.raises(KeyError, match="'absent' is not in run"):
        ctx.load("absent")


def test_unique_ids_are_any_printable_text(ctx):
    for uid in ("a/../../b", "名前 with spaces", "x" * 128, "C:\\path"):
        ctx.save(uid, uid)
        assert ctx.load(uid) == uid
    for bad in ("", "x" * 129, "tab\there", "nul\0", 5):
        with pytest.raises(InvalidIdError):
            ctx.save(bad, 1)


def test_pass_by_must_be_val_or_ref(ctx):
    with pytest.raises(ValueError, match="pass_by"):
        ctx.save("k", 1, pass_by="pointer")


def test_ref_values_are_json_recipes(ctx):
    recipe = {"prompt": {"1": {"class_type": "UpscaleModelLoader", "inputs": {}}}, "output": ["1", 0]}
    ctx.save("model", recipe, pass_by="ref")
    assert ctx.load("model") == recipe
    assert ctx.get_storage_info("model")["pass_by"] == "ref"
    with pytest.raises(TypeError):
        ctx.save("model", "not a dict", pass_by="ref")
    with pytest.raises(TypeError):
        ctx.save("model", {"tensor": ones(1)}, pass_by="ref")
    assert ctx.load("model") == recipe  # a refused save changes nothing


def test_a_value_that_cannot_be_pickled_changes_nothing(ctx):
    ctx.save("k", "old")
    import threading

    with pytest.raises(TypeError):  # cloudpickle: cannot pickle '_thread.lock'
        ctx.save("k", threading.Lock())
    assert ctx.load("k") == "old"


def test_delete(ctx):
    ctx.save("k", ones(3))
    ctx.delete("k")
    assert ctx.list_keys() == [] and segments(ctx) == []
    with pytest.raises(KeyError):
        ctx.delete("k")


# --- storage info, keys, usage ------------------------------------------------------------

def test_get_storage_info_shapes(ctx):
    ctx.save("ram", ones(10))
    ctx.save("disk", ones(10), use_ram=False)
    ram, disk = ctx.get_storage_info("ram"), ctx.get_storage_info("disk")
    assert ram["storage_type"] == "ram" and ram["shm_name"].startswith("/dsc_") and "path" not in ram
    assert len(ram["shm_name"]) <= 31  # macOS's limit
    assert disk["storage_type"] == "disk" and Path(disk["path"]).is_file() and "shm_name" not in disk
    assert ram["size"] == disk["size"] > 40 and ram["pass_by"] == "val"
    assert stat.S_IMODE(os.stat(disk["path"]).st_mode) == 0o600
    assert ctx.get_storage_info("nothing") is None


def test_entry_describes_a_value_without_loading_it(ctx):
    ctx.save("img", zeros(1, 8, 8, 3))
    ctx.save("arr", np.zeros((2, 3), np.int16), use_ram=False)
    ctx.save("text", "a lighthouse", stamp="prompt-1", source={"class_type": "X", "inputs": [1]})
    ctx.save("model", {"nodes": {}}, pass_by="ref")
    img, arr, text, model = (ctx.entry(k) for k in ("img", "arr", "text", "model"))
    assert (img.key, img.storage, img.pass_by, img.shape, img.dtype, img.is_array) == \
        ("img", "shm", "val", (1, 8, 8, 3), "float32", True)
    assert img.nbytes == 8 * 8 * 3 * 4 < img.size and img.location.startswith("/dsc_")
    assert (arr.kind, arr.storage, arr.shape, arr.dtype) == ("numpy", "disk", (2, 3), "int16")
    assert Path(arr.location).is_file() and arr.nbytes == 12
    assert (text.kind, text.shape, text.dtype, text.nbytes, text.is_array) == \
        ("pickle", None, None, None, False)
    assert text.stamp == "prompt-1" and img.stamp is None
    assert text.source == {"class_type": "X", "inputs": (1,)}
    with pytest.raises(TypeError):
        text.source["class_type"] = "Y"  # read-only, like the entry itself
    with pytest.raises(AttributeError):
        text.size = 0
    assert model.is_ref and not img.is_ref and model.kind == "json"
    # what get_storage_info (the spec's dict) says is what the entry says
    for entry in (img, arr, text, model):
        info = ctx.get_storage_info(entry.key)
        assert info == entry.storage_info()
        assert (info["size"], info["pass_by"], info["version"]) == (entry.size, entry.pass_by, entry.version)
    assert ctx.get_storage_info("text")["source"] == {"class_type": "X", "inputs": [1]}
    with pytest.raises(KeyError, match="'nothing' is not in run"):
        ctx.entry("nothing")


def test_entry_fingerprint_is_computed_only_when_asked(ctx):
    big = zeros(64 * 1024)  # 256 KB: above what gets its digest as it is saved
    ctx.save("big", big)
    ctx.save("small", "x")
    assert ctx.entry("small").fingerprint == ctx.fingerprint("small")
    assert ctx.entry("big").fingerprint is None
    assert ctx.entry("big", fingerprint=True).fingerprint == ctx.fingerprint("big")
    assert ctx.entry("big").fingerprint == ctx.fingerprint("big")  # known from now on
    ctx.save("big", ones(64 * 1024))
    assert ctx.entry("big").fingerprint is None  # a new value: not known yet


def test_two_handles_in_one_process_see_each_others_writes(ctx):
    with WorkflowContext.open(ctx.run_id) as other:
        for i in range(5):
            ctx.save("k", i)
            assert other.load("k") == i
            other.save("k", -i)
            assert ctx.load("k") == -i and ctx.entry("k").version == other.entry("k").version
        other.delete("k")
        assert "k" not in ctx.list_keys()


def test_list_keys_in_save_order(ctx):
    for key in ("b", "a", "c"):
        ctx.save(key, key)
    ctx.save("b", "again")
    assert ctx.list_keys() == ["b", "a", "c"]


def test_get_usage_reports_every_key(ctx):
    ctx.save("ram", ones(1024))
    ctx.save("disk", ones(2048), use_ram=False)
    usage = ctx.get_usage()
    assert set(usage) == {"ram_usage_bytes", "ram_capacity_bytes", "ram_usage_gb", "ram_capacity_gb",
                          "temp_disk_usage_bytes", "temp_disk_usage_mb", "stored_keys_count"}
    assert usage["ram_usage_bytes"] == ctx.get_storage_info("ram")["size"]
    assert usage["temp_disk_usage_bytes"] == ctx.get_storage_info("disk")["size"]
    assert usage["ram_usage_gb"] == usage["ram_usage_bytes"] / GIB
    assert usage["temp_disk_usage_mb"] == usage["temp_disk_usage_bytes"] / 1024 ** 2
    assert usage["stored_keys_count"] == 2


# --- RAM budget and the loop case ---------------------------------------------------------

def test_ram_budget_falls_back_to_disk(root):
    with WorkflowContext(max_ram_gb=1 / 1024) as ctx:  # 1 MiB
        ctx.save("small", ones(1000))
        ctx.save("big", ones(1024 * 1024))  # 4 MiB
        assert ctx.get_storage_info("small")["storage_type"] == "ram"
        assert ctx.get_storage_info("big")["storage_type"] == "disk"
        assert equal(ctx.load("big"), ones(1024 * 1024))
        assert ctx.get_usage()["ram_capacity_bytes"] == 1024 ** 2


def test_a_full_shared_memory_filesystem_falls_back_to_disk(ctx, monkeypatch):
    def full(name, size):
        raise shm.SegmentFull(errno.ENOSPC, "no room")

    monkeypatch.setattr(shm, "create", full)
    ctx.save("k", ones(100))
    assert ctx.get_storage_info("k")["storage_type"] == "disk"
    # the segment it tried is neither left behind nor counted (pending storage counts as used)
    assert ctx.get_usage()["ram_usage_bytes"] == 0 and segments(ctx) == []


def test_memory_error_only_when_neither_ram_nor_disk_can_hold_it(ctx, monkeypatch):
    ctx.save("k", "old", use_ram=False)
    real_open = os.open

    def disk_full(path, flags, mode=0o777, **kw):
        if "/data/" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(context_module.os, "open", disk_full)
    with pytest.raises(MemoryError, match="'k'"):
        ctx.save("k", "new", use_ram=False)
    ctx.save("k2", "fits in RAM")  # RAM still works
    monkeypatch.undo()
    assert ctx.load("k") == "old" and ctx.load("k2") == "fits in RAM"


def test_the_loop_case_reuses_two_buffers(ctx):
    names = []
    for i in range(6):
        ctx.save("hot", full((64, 64), float(i)))
        names.append(ctx.get_storage_info("hot")["shm_name"])
        assert equal(ctx.load("hot"), full((64, 64), float(i)))
    assert len(set(names)) == 2 and names[2:] == names[:2] * 2
    assert len(segments(ctx)) == 2


def test_a_key_that_changes_size_or_storage_frees_the_old(ctx):
    ctx.save("k", ones(10))
    ctx.save("k", ones(10))
    ctx.save("k", ones(100_000))  # no buffer fits: a new one; the idle one is freed
    assert len(segments(ctx)) == 2
    ctx.save("k", ones(10), use_ram=False)
    assert segments(ctx) == []
    ctx.save("k", ones(10))
    assert list((ctx.path / "data").iterdir()) == []


def test_versions_increase_on_every_save(ctx):
    versions = []
    for value in ("a", "b", "b"):
        ctx.save("k", value)
        versions.append(ctx.get_storage_info("k")["version"])
    assert versions == sorted(set(versions))


def test_fingerprint_depends_on_content_only(ctx, root):
    ctx.save("a", ones(8))
    ctx.save("b", ones(8), use_ram=False)
    assert ctx.fingerprint("a") == ctx.fingerprint("b")
    with WorkflowContext() as other:
        other.save("a", ones(8))
        assert other.fingerprint("a") == ctx.fingerprint("a")
    ctx.save("a", zeros(8))
    assert ctx.fingerprint("a") != ctx.fingerprint("b")


# --- export -------------------------------------------------------------------------------

def test_export_writes_a_cloudpickle_and_removes_the_key(ctx, tmp_path):
    ctx.save("img", rand(2, 2))
    expected = ctx.load("img")
    dest = tmp_path / "new" / "dir" / "img.pkl"
    ctx.export_data("img", str(dest))
    assert equal(cloudpickle.loads(dest.read_bytes()), expected)
    assert "img" not in ctx.list_keys() and segments(ctx) == []


def test_a_refused_export_keeps_the_value(ctx, tmp_path):
    dest = tmp_path / "taken.pkl"
    dest.write_text("keep me")
    ctx.save("k", "value")
    with pytest.raises(FileExistsError):
        ctx.export_data("k", dest)
    assert ctx.load("k") == "value" and dest.read_text() == "keep me"
    ctx.export_data("k", dest, overwrite=True)
    assert cloudpickle.loads(dest.read_bytes()) == "value" and ctx.list_keys() == []


def test_export_of_ref_data_is_a_type_error_and_keeps_it(ctx, tmp_path):
    ctx.save("model", {"recipe": 1}, pass_by="ref")
    with pytest.raises(TypeError, match="pass-by-reference"):
        ctx.export_data("model", tmp_path / "m.pkl")
    assert ctx.load("model") == {"recipe": 1} and not (tmp_path / "m.pkl").exists()


def test_export_of_a_missing_key_is_a_key_error(ctx, tmp_path):
    with pytest.raises(KeyError):
        ctx.export_data("nope", tmp_path / "x.pkl")


# --- lifecycle ----------------------------------------------------------------------------

def test_shutdown_cleans_up_and_is_idempotent(root):
    ctx = WorkflowContext()
    ctx.save("ram", ones(10))
    ctx.save("disk", "x", use_ram=False)
    tagged = segments(ctx)
    assert tagged and all(os.path.exists(shm.LINUX_SHM_DIR + name) for name in tagged)
    ctx.shutdown()
    ctx.shutdown()
    assert not ctx.path.exists()
    assert not any(os.path.exists(shm.LINUX_SHM_DIR + name) for name in tagged)
    assert shm.list_tagged(json.dumps(None)) == []
    with pytest.raises(ContextClosedError):
        ctx.load("ram")


def test_context_manager_shuts_down_on_error(root):
    with pytest.raises(RuntimeError):
        with WorkflowContext() as ctx:
            ctx.save("k", ones(2))
            raise RuntimeError("boom")
    assert not ctx.path.exists()


def test_create_false_reattaches_and_never_deletes_the_owners_data(root):
    with WorkflowContext(run_id="shared-run") as owner:
        owner.save("k", "owner's")
        attached = WorkflowContext(run_id="shared-run", create=False)
        assert attached.load("k") == "owner's" and not attached.is_owner
        attached.save("k2", ones(3))  # belongs to the run, outlives the handle
        attached.shutdown()
        attached.shutdown()
        assert owner.load("k") == "owner's" and equal(owner.load("k2"), ones(3))
    assert not (root / "contexts" / "shared-run").exists()


def test_the_three_ways_to_open_a_run(root):
    with WorkflowContext(run_id="roles") as owner:
        owner.save("k", "v")
        user = WorkflowContext.open("roles")
        port = WorkflowContext.attach("roles", "contexts")
        assert (owner.is_owner, user.is_owner, port.is_owner) == (True, False, False)
        assert user.load("k") == port.load("k") == "v"
        port.save("from port", 1)
        port.shutdown()
        user.shutdown()
        assert owner.load("from port") == 1  # neither shutdown deleted anything
        with pytest.raises(FileNotFoundError):
            WorkflowContext.attach("roles", "other_dir")
        with pytest.raises(InvalidIdError):
            WorkflowContext.attach("roles", "../contexts")
        with pytest.raises(InvalidIdError):
            WorkflowContext(create=False)  # re-attach to what?
    with pytest.raises(FileNotFoundError):
        WorkflowContext.open("roles")


def test_create_false_for_an_unknown_run_is_file_not_found(root):
    with pytest.raises(FileNotFoundError, match="no run 'ghost'"):
        WorkflowContext(run_id="ghost", create=False)


def test_create_true_on_an_existing_run_refuses_and_keeps_it(root):
    with WorkflowContext(run_id="mine") as owner:
        owner.save("k", 1)
        with pytest.raises(FileExistsError, match="create=False"):
            WorkflowContext(run_id="mine")
        assert owner.load("k") == 1


@pytest.mark.parametrize("run_id", ["../x", "/abs/path", "", "r" * 300, "nul\0id", "a/b", "..", ".hidden", 7])
def test_bad_run_ids_are_refused_before_any_file_is_touched(root, run_id):
    with pytest.raises(InvalidIdError):
        WorkflowContext(run_id=run_id)
    with pytest.raises(InvalidIdError):
        WorkflowContext(run_id=run_id, create=False)
    assert not root.exists()


# --- configuration ------------------------------------------------------------------------

def test_config_percent_gb_both_and_override(root, tmp_path):
    import psutil

    total = psutil.virtual_memory().total
    cases = [({"MAX_RAM_PERCENT": 10}, None, int(total * 0.10)),
             ({"MAX_RAM_GB": 0.5}, None, GIB // 2),
             ({"MAX_RAM_GB": 0.5, "MAX_RAM_PERCENT": 1}, None, min(GIB // 2, int(total * 0.01))),
             ({"MAX_RAM_GB": 0.5, "MAX_RAM_PERCENT": 90}, None, GIB // 2),
             ({"MAX_RAM_PERCENT": 10}, 2.0, 2 * GIB)]
    for config, override, expected in cases:
        with WorkflowContext(config_path=write_config(tmp_path, **config), max_ram_gb=override) as ctx:
            assert ctx.get_usage()["ram_capacity_bytes"] == expected, config


def test_config_contexts_dir_name(root, tmp_path):
    with WorkflowContext(config_path=write_config(tmp_path, CONTEXTS_DIR_NAME="my_runs")) as ctx:
        assert ctx.path.parent == root / "my_runs" and ctx.contexts_dir_name == "my_runs"


@pytest.mark.parametrize("config, match", [
    ({"MAX_RAM_PERCENT": 150}, "MAX_RAM_PERCENT"), ({"MAX_RAM_GB": -1}, "MAX_RAM_GB"),
    ({"MAX_RAM_GB": "8"}, "MAX_RAM_GB"), ({"CONTEXTS_DIR_NAME": "../up"}, "CONTEXTS_DIR_NAME"),
    ({"MAX_RAM": 1}, "unknown key"),
])
def test_bad_configs_are_refused(root, tmp_path, config, match):
    with pytest.raises(ConfigError, match=match):
        WorkflowContext(config_path=write_config(tmp_path, **config))


def test_missing_or_malformed_config_file(root, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        WorkflowContext(config_path=tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        WorkflowContext(config_path=bad)


def test_shipped_default_config_is_the_code_default():
    from discomfort.store.config import DEFAULTS, PACKAGED_CONFIG

    shipped = json.loads(PACKAGED_CONFIG.read_text())
    assert {k: DEFAULTS[k] for k in shipped} == shipped


# --- the private root ---------------------------------------------------------------------

def test_root_and_run_are_private(ctx, root):
    for path in (root, ctx.path.parent, ctx.path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_a_root_open_to_others_is_refused(root):
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    with pytest.raises(UnsafeStoreError, match="chmod 700"):
        WorkflowContext()


def test_a_symlinked_root_is_refused(root, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    root.symlink_to(target)
    with pytest.raises(UnsafeStoreError, match="not a plain directory"):
        WorkflowContext()


def test_a_segment_open_to_others_is_refused(ctx):
    ctx.save("k", ones(4))
    name = ctx.get_storage_info("k")["shm_name"]
    os.chmod(f"/dev/shm{name}", 0o644)
    with WorkflowContext.open(ctx.run_id) as other:  # a handle with no mapping of it yet
        with pytest.raises(UnsafeStoreError, match="not private"):
            other.load("k")


# --- the index on a memory filesystem -------------------------------------------------------

on_linux_shm = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")


def _memory_dirs(base: Path) -> list[Path]:
    """The run directories (``<tag>/<contexts>/<run_id>``) under a memory base."""
    return [p for p in base.glob("*/*/*") if p.is_dir()] if base.is_dir() else []


@pytest.fixture
def memory_base(tmp_path, monkeypatch) -> Path:
    """A memory filesystem of this test's own (a tmp dir standing in for /dev/shm)."""
    fs = tmp_path / "shm"
    fs.mkdir()
    monkeypatch.setattr(index_module, "LINUX_MEMORY_FS", str(fs))
    return fs / f"discomfort-{os.geteuid()}"


@on_linux_shm
def test_the_index_and_lock_live_on_the_memory_filesystem(root, memory_base):
    with WorkflowContext() as ctx:
        ctx.save("k", "v", use_ram=False)
        assert sorted(p.name for p in ctx.path.iterdir()) == ["attach", "data", "run.json"]
        (mem,) = _memory_dirs(memory_base)
        assert mem.name == ctx.run_id and sorted(p.name for p in mem.iterdir()) == ["index.json", "lock"]
        for path in (memory_base, mem):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(mem / "index.json").st_mode) == 0o600
        assert Path(ctx.entry("k").location).parent == ctx.path / "data"  # values stay on disk
    assert not mem.exists()


@on_linux_shm
def test_a_memory_base_open_to_others_keeps_the_index_in_the_run(root, memory_base):
    memory_base.mkdir(mode=0o755)
    os.chmod(memory_base, 0o755)
    with pytest.warns(DiscomfortWarning, match="index on disk"):
        ctx = WorkflowContext()
    with ctx:
        ctx.save("k", "v")
        with WorkflowContext.open(ctx.run_id) as other:  # finds it where the owner put it
            assert other.load("k") == "v"
        assert "index.json" in {p.name for p in ctx.path.iterdir()}
    assert _memory_dirs(memory_base) == []


@on_linux_shm
def test_an_attacher_refuses_a_memory_dir_made_public(root, memory_base):
    with WorkflowContext() as ctx:
        os.chmod(memory_base, 0o755)
        with pytest.raises(UnsafeStoreError, match="chmod 700"):
            WorkflowContext.open(ctx.run_id)
        os.chmod(memory_base, 0o700)


@on_linux_shm
def test_memory_dirs_of_deleted_runs_and_roots_are_removed(root, memory_base, tmp_path, monkeypatch):
    import shutil

    ctx = WorkflowContext(run_id="deleted-behind-our-back")
    (mem,) = _memory_dirs(memory_base)
    shutil.rmtree(ctx.path)  # deleted some other way than its shutdown
    WorkflowContext().shutdown()
    assert mem.exists()  # recent: maybe a run being made
    os.utime(mem, (1, 1))
    WorkflowContext().shutdown()
    assert not mem.exists()
    ctx.shutdown()  # finds nothing left to delete, and says nothing

    monkeypatch.setattr(index_module, "SWEEP_EVERY_S", 0)  # other roots: looked over every open
    other_root = tmp_path / "other-root"
    monkeypatch.setenv("DISCOMFORT_ROOT", str(other_root))
    gone = WorkflowContext(run_id="its-root-goes")
    tags_before = {p.name for p in memory_base.iterdir()}
    shutil.rmtree(other_root)
    monkeypatch.setenv("DISCOMFORT_ROOT", str(root))
    WorkflowContext().shutdown()
    assert {p.name for p in memory_base.iterdir()} < tags_before
    gone.shutdown()


@pytest.mark.skipif(not os.path.isdir(shm.LINUX_SHM_DIR), reason="looks into /dev/shm")
def test_a_new_segment_is_exclusive_private_and_its_space_reserved():
    """What shm.py keeps doing by hand on every Python (its docstring says why not through
    SharedMemory): O_EXCL, mode 0600, the space allocated at once, unlink by name even empty."""
    name, size = shm.new_name("shmtest0"), 3 * 1024 * 1024 + 5
    path = f"{shm.LINUX_SHM_DIR}{name}"
    mm = shm.create(name, size)
    try:
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_size) == (os.geteuid(), 0o600, size)
        assert st.st_blocks * 512 >= size  # reserved, not sparse: a full /dev/shm fails here
        with pytest.raises(FileExistsError):
            shm.create(name, 16)
        assert os.stat(path).st_size == size  # a refused create leaves the segment alone
    finally:
        mm.close()
        shm.unlink(name)
    assert not os.path.exists(path)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))  # a killed writer's leftover
    shm.unlink(name)
    assert not os.path.exists(path)
