"""Registry checks: fsck and verify_bundle after injected faults, dead or foreign pending rows,
tampered, missing or symlinked bundle files, and bundle paths that try to leave the artifact root.

The write protocol itself is tested in test_registry.py; builders in helpers.py.
"""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import continual_adapters.registry.registry as registry_module
from continual_adapters.core.config import validate_task_name
from continual_adapters.core.errors import ConfigError, IntegrityError, RegistryError, TaskNotFoundError
from continual_adapters.registry import Registry
from tests.registry.helpers import add_task, begin, dead_pid, make_registry, sql


def test_fault_before_commit_then_fsck(tmp_path, monkeypatch):
    reg = make_registry(tmp_path)
    add_task(reg, "a")

    def fault(step: str) -> None:
        if step == "before_commit":
            raise RuntimeError("injected")

    monkeypatch.setattr(registry_module, "_fault_hook", fault)
    with pytest.raises(RuntimeError, match="injected"):
        add_task(reg, "b")
    monkeypatch.setattr(registry_module, "_fault_hook", None)
    assert [t.name for t in reg.tasks()] == ["a"] and reg.task("b").status == "pending"
    assert reg.fsck().ok, "a pending row of a live process and its file are work in progress, not debris"

    sql(reg, "UPDATE tasks SET owner_pid = ? WHERE name = 'b'", dead_pid())
    report = reg.fsck()
    assert report.dead_pending == ["b"] and len(report.orphan_files) == 1 and not report.ok
    orphan = reg.root / report.orphan_files[0]
    assert orphan.exists() and orphan.name.startswith("b-")
    assert reg.fsck(repair=True).repaired and not orphan.exists()
    with pytest.raises(TaskNotFoundError):
        reg.task("b")
    assert reg.fsck() == registry_module.FsckReport([], [], [], [], False)
    assert add_task(reg, "b").position == 2 and reg.verify_bundle("b")


def test_pending_rows_of_other_hosts_expire_by_age(tmp_path):
    reg = make_registry(tmp_path)
    begin(reg, "a")
    sql(reg, "UPDATE tasks SET owner_host = 'elsewhere', owner_pid = ?", dead_pid())
    assert reg.fsck().dead_pending == []
    assert reg.fsck(stale_after=0).dead_pending == ["a"]


def test_tampered_or_missing_bundle_is_reported(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    add_task(reg, "b")
    path = reg.bundle_path("a")
    original = path.read_bytes()
    data = bytearray(original)
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"task 'a'.*a-[0-9a-f]{16}\.safetensors.*sha256"):
        reg.verify_bundle("a")
    path.write_bytes(bytes(data) + b"x")
    with pytest.raises(IntegrityError, match="size"):
        reg.verify_bundle("a")
    reg.bundle_path("b").unlink()
    report = reg.fsck(repair=True)
    assert (report.checksum_mismatches, report.missing_files, report.ok) == (["a"], ["b"], False)
    assert path.exists(), "fsck must not delete evidence it cannot repair"

    target = tmp_path / "elsewhere.bin"
    target.write_bytes(original)
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(IntegrityError, match="symlink"):
        reg.verify_bundle("a")


def test_symlinked_bundles_dir_is_refused(tmp_path):
    reg = make_registry(tmp_path)
    outside = tmp_path / "outside"
    (reg.root / "bundles").rename(outside)
    (reg.root / "bundles").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError, match="symlink"):
        reg.write_file("a", b"payload")
    assert list(outside.iterdir()) == []
    with pytest.raises(IntegrityError, match="symlink"):
        reg._safe_path("bundles/a-0123456789abcdef.safetensors")
    with pytest.raises(IntegrityError):
        reg._safe_path("../escape.safetensors")


# -- names and paths ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(name=st.text(st.sampled_from("abz09_-./\\ \x00Aé~"), min_size=0, max_size=70))
def test_any_accepted_name_stays_inside_the_root(tmp_path_factory, name):
    reg = Registry(tmp_path_factory.mktemp("names") / "registry.db")
    try:
        validate_task_name(name)
    except ConfigError:
        with pytest.raises(ConfigError):
            reg.write_file(name, b"x")
        return
    rel, _, _ = reg.write_file(name, b"x")
    path = reg._safe_path(rel)
    assert path.resolve().parent == (reg.root / "bundles").resolve() and path.read_bytes() == b"x"


@pytest.mark.parametrize(
    "rel", ["../escape.safetensors", "/etc/passwd", "bundles/../../x", "", ".", "bundles/sub/../../../x"]
)
def test_edited_bundle_path_never_leaves_the_root(tmp_path, rel):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    sql(reg, "UPDATE bundles SET path = ?", rel)
    with pytest.raises(IntegrityError):
        reg.bundle_path("a")
    with pytest.raises(IntegrityError):
        reg.verify_bundle("a")
    assert reg.fsck().checksum_mismatches == ["a"]


def test_symlinks_are_never_followed(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"do not overwrite")
    payload = b"bundle bytes"
    planted = reg.root / "bundles" / f"b-{hashlib.sha256(payload).hexdigest()[:16]}.safetensors"
    planted.symlink_to(secret)
    rel, _, _ = reg.write_file("b", payload)
    assert not (reg.root / rel).is_symlink() and (reg.root / rel).read_bytes() == payload
    assert secret.read_bytes() == b"do not overwrite"
    (reg.root / "bundles" / "sub").symlink_to(outside, target_is_directory=True)
    sql(reg, "UPDATE bundles SET path = 'bundles/sub/secret'")
    with pytest.raises(IntegrityError, match="symlink"):
        reg.verify_bundle("a")
    link = reg.root / "bundles" / "orphan-link"
    link.symlink_to(secret)
    reg.fsck(repair=True)
    assert not link.exists() and secret.read_bytes() == b"do not overwrite"
