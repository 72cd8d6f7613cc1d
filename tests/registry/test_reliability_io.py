"""I/O faults: disk full and I/O errors injected at each write, fsync and rename of the commit
protocol give a typed error naming the step, and leave the registry (rows and files) as it was.

Faults are injected at the os-call level, only for descriptors and paths inside the registry's
bundle folder, so everything else (SQLite, pytest) runs normally.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sqlalchemy import event

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import BundleError, CadaptError, RegistryError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.files.atomic import atomic_write
from continual_adapters.files.bundle import save_task
from continual_adapters.registry.registry import BundleDraft, EvaluationDraft, Registry
from continual_adapters.stream.runner import Runner
from tests.support.reliability import write_tiny_data
from tests.support.tiny import tiny_model

ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EDQUOT": errno.EDQUOT}
STEPS = ("create", "write", "fsync", "rename", "directory fsync")


def _inside(target, folder: Path) -> bool:
    if isinstance(target, int):
        try:
            target = os.readlink(f"/proc/self/fd/{target}")
        except OSError:
            return False
    return str(target).startswith(str(folder))


def inject(monkeypatch, folder: Path, step: str, code: int) -> list[str]:
    """Makes the os call behind `step` fail with `code` for paths or descriptors under `folder`."""
    hits: list[str] = []
    real = {name: getattr(os, name) for name in ("open", "write", "fsync", "replace")}

    def fail(name):
        hits.append(name)
        raise OSError(code, os.strerror(code))

    def fake_open(path, flags, *args, **kwargs):
        if step == "create" and _inside(path, folder) and flags & os.O_CREAT:
            fail("create")
        return real["open"](path, flags, *args, **kwargs)

    def fake_write(fd, data):
        if step == "write" and _inside(fd, folder):
            fail("write")
        return real["write"](fd, data)

    def fake_fsync(fd):
        is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
        if _inside(fd, folder) and step == ("directory fsync" if is_dir else "fsync"):
            fail("fsync")
        return real["fsync"](fd)

    def fake_replace(src, dst, *args, **kwargs):
        if step == "rename" and _inside(dst, folder):
            fail("rename")
        return real["replace"](src, dst, *args, **kwargs)

    for name, fake in (("open", fake_open), ("write", fake_write), ("fsync", fake_fsync), ("replace", fake_replace)):
        monkeypatch.setattr(os, name, fake)
    return hits


def snapshot(reg: Registry) -> tuple:
    files = {p.relative_to(reg.root).as_posix(): p.read_bytes() for p in sorted(reg.root.rglob("*")) if p.is_file()}
    return reg.dump(), files


def make_registry(tmp_path) -> Registry:
    reg = Registry(tmp_path / "registry.db")
    reg.init()
    reg.begin_task("a", labels=["x", "y"], head="classification", primary_metric="accuracy", data={})
    rel, sha, size = reg.write_file("a", os.urandom(256))
    reg.finish_task(
        "a",
        BundleDraft(rel, sha, size, {}, {}, {}, 0, {}, None, 0.0),
        [EvaluationDraft("a", "test", "accuracy", 0.5)],
        {},
    )
    return reg


@pytest.mark.parametrize("code", ERRNOS)
@pytest.mark.parametrize("step", STEPS)
def test_fault_at_each_write_step_is_typed_and_leaves_registry_unchanged(tmp_path, monkeypatch, step, code):
    reg = make_registry(tmp_path)
    before = snapshot(reg)
    reg.begin_task("b", labels=["x", "y"], head="classification", primary_metric="accuracy", data={})
    hits = inject(monkeypatch, reg.root / "bundles", step, ERRNOS[code])
    with pytest.raises(RegistryError) as info:
        reg.write_file("b", os.urandom(4096))
    monkeypatch.undo()
    assert hits, "the fault was never reached"
    message = str(info.value)
    assert f"{step} failed" in message and os.strerror(ERRNOS[code]) in message and "task 'b'" in message
    assert not [e for e in os.listdir(reg.root / "bundles") if e.startswith((".tmp-b", "b-"))]
    reg.abort_task("b")
    assert snapshot(reg) == before


def test_short_writes_still_write_the_whole_file(tmp_path, monkeypatch):
    reg = make_registry(tmp_path)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    payload = os.urandom(1000)
    rel, _, size = reg.write_file("b", payload)
    monkeypatch.undo()
    assert (reg.root / rel).read_bytes() == payload and size == 1000


def _full_database(reg: Registry) -> None:
    """SQLite's own limit on the database size: the next page it needs fails as a full disk would."""

    @event.listens_for(reg._engine, "connect")
    def _cap(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    reg._engine.dispose()


def test_full_database_at_commit_is_typed_and_commits_nothing(tmp_path):
    reg = make_registry(tmp_path)
    before = snapshot(reg)
    reg.begin_task("b", labels=["x", "y"], head="classification", primary_metric="accuracy", data={})
    rel, sha, size = reg.write_file("b", os.urandom(256))
    _full_database(reg)
    with pytest.raises(RegistryError, match="database or disk is full"):
        reg.finish_task(
            "b",
            BundleDraft(rel, sha, size, {}, {}, {"big": "x" * 200_000}, 0, {}, None, 0.0),
            [EvaluationDraft("b", "test", "accuracy", 0.5)],
            {},
        )
    reg = Registry(reg._db_file)
    assert reg.task("b").status == "pending" and [t.name for t in reg.tasks()] == ["a"]
    reg.abort_task("b")
    assert snapshot(reg) == before


@pytest.mark.parametrize("step", ["write", "rename"])
def test_add_task_with_a_full_disk_fails_cleanly(tmp_path, monkeypatch, tiny_encoder_dir, step):
    """End to end: the runner's error is the registry's typed one and its abort restores everything."""
    files = write_tiny_data(tmp_path)
    reg = Registry(tmp_path / "registry.db")
    runner = Runner(reg, encoder=tiny_encoder_dir, progress=False)
    spec = DataSpec(train=str(files["train"]), validation=str(files["validation"]), test=str(files["test"]))
    runner.add_task("a", spec, train=TrainConfig(epochs=1))
    before = snapshot(reg)
    inject(monkeypatch, reg.root / "bundles", step, errno.ENOSPC)
    with pytest.raises(CadaptError, match="No space left on device"):
        runner.add_task("b", spec, train=TrainConfig(epochs=1))
    monkeypatch.undo()
    assert snapshot(reg) == before
    assert runner.add_task("b", spec, train=TrainConfig(epochs=1)).task.position == 2


@pytest.mark.parametrize("step", ["create", "write", "fsync", "rename", "directory fsync"])
def test_save_task_fault_is_a_bundle_error(tmp_path, monkeypatch, step):
    from continual_adapters.core.config import AdapterConfig, TaskSpec

    model = tiny_model()
    model.add_task(TaskSpec("a", labels=("x", "y"), adapter=AdapterConfig(bottleneck=4)))
    folder = tmp_path / "out"
    folder.mkdir()
    hits = inject(monkeypatch, folder, step, errno.EIO)
    with pytest.raises(BundleError, match="Input/output error") as info:
        save_task(model, "a", folder / "a.safetensors")
    monkeypatch.undo()
    assert hits and str(folder / "a.safetensors") in str(info.value)
    assert os.listdir(folder) == [] or step == "directory fsync"
    assert atomic_write(folder / "b.bin", b"ok").read_bytes() == b"ok"
