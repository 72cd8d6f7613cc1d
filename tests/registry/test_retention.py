"""Retention (registry/retention.py): retiring keeps a version's files for `restore`, purging and
`gc` delete them for good, and fsck tells the files kept for retired versions from orphans."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from continual_adapters.core.errors import (
    ConfigError,
    IntegrityError,
    LifecycleError,
    TaskNotFoundError,
    VersionNotReadyError,
    VersionPurgedError,
    VersionRetiredError,
)
from continual_adapters.registry import Registry
from continual_adapters.registry.schema import utc_now
from tests.registry.helpers import add_task, begin, make_registry, sql


def with_probe(reg: Registry, name: str) -> None:
    add_task(reg, name)
    reg.add_artifact(name, reg.write_artifact(name, "probe", f"probe of {name}".encode()))


def digests(reg: Registry, name: str) -> dict[str, str]:
    """sha256 of the bytes on disk of a version's bundle and artifacts, by relative path."""
    paths = [reg.bundle(name).path] + [a.path for a in reg.artifacts(name)]
    return {rel: hashlib.sha256((reg.root / rel).read_bytes()).hexdigest() for rel in paths}


def test_remove_retires_and_restore_gives_back_the_same_bytes(backend):
    reg = backend.registry()
    reg.init()
    for name in ("a", "b"):
        with_probe(reg, name)
    before, rows = digests(reg, "a"), (reg.bundle("a"), reg.artifacts("a"))
    retired = reg.remove_task("a")
    assert retired.status == "retired" and retired.retired_at is not None
    assert [t.name for t in reg.tasks()] == ["b"] and digests(reg, "a") == before, "nothing deleted"
    assert (reg.bundle("a"), reg.artifacts("a")) == rows
    report = reg.fsck()
    assert report.ok and report.orphan_files == [] and report.retired_files == sorted(before)
    assert reg.fsck(repair=True).retired_files == sorted(before) and digests(reg, "a") == before
    restored = reg.restore("a")
    assert (restored.status, restored.retired_at, restored.position) == ("ready", None, 1)
    assert digests(reg, "a") == before and reg.verify_bundle("a") == rows[0], "byte-identical"
    assert [t.name for t in reg.tasks()] == ["a", "b"] and reg.fsck().retired_files == []
    reg.close()


def test_restore_refuses_changed_files_and_changes_nothing(tmp_path):
    reg = make_registry(tmp_path)
    with_probe(reg, "a")
    reg.remove_task("a")
    probe = reg.root / reg.artifacts("a")[0].path
    probe.write_bytes(b"edited while retired")
    assert reg.fsck().checksum_mismatches == ["a:probe"], "a retired version's files are checked too"
    with pytest.raises(IntegrityError, match="cannot restore a@1: its probe"):
        reg.restore("a")
    assert reg.task("a").status == "retired"
    probe.unlink()
    assert reg.fsck().missing_files == ["a:probe"]
    with pytest.raises(IntegrityError, match="missing"):
        reg.restore("a")


def test_purge_deletes_files_for_good_and_is_final(tmp_path):
    reg = make_registry(tmp_path)
    for name in ("a", "b"):
        with_probe(reg, name)
    files = digests(reg, "a")
    evaluations = reg.evaluations("a")
    reg.remove_task("a")
    purged = reg.purge("a@1")
    assert purged.status == "retired" and all(not (reg.root / rel).exists() for rel in files)
    assert reg.artifacts("a") == [] and reg.evaluations("a") == evaluations, "history stays"
    assert reg.fsck().ok and reg.fsck().retired_files == []
    with pytest.raises(VersionPurgedError):
        reg.restore("a")
    with pytest.raises(VersionPurgedError):
        reg.remove_task("a", purge=True)
    kept = digests(reg, "b")
    direct = reg.remove_task("b", purge=True)
    assert direct.status == "retired" and not any((reg.root / rel).exists() for rel in kept), "ready to purged"


def test_removal_refusals_are_typed(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    begin(reg, "b")
    with pytest.raises(VersionNotReadyError, match="b@1 is pending"):
        reg.remove_task("b")
    with pytest.raises(LifecycleError, match="ready, not retired"):
        reg.restore("a")
    reg.remove_task("a")
    with pytest.raises(VersionRetiredError, match="retired already"):
        reg.remove_task("a")
    with pytest.raises(TaskNotFoundError):
        reg.remove_task("zzz")


def test_gc_purges_only_versions_retired_longer_than_the_period(tmp_path):
    reg = make_registry(tmp_path)
    for name in ("old", "recent", "kept"):
        with_probe(reg, name)
    old_files, recent_files = digests(reg, "old"), digests(reg, "recent")
    reg.remove_task("old")
    reg.remove_task("recent")
    later = utc_now() + timedelta(days=31)
    assert reg.gc(timedelta(days=30)).deleted == [], "both retired just now"
    # 31 days on, "old" was retired 31 days ago and "recent" (as if retired later) 2 days ago:
    stamp = (later - timedelta(days=2)).replace(tzinfo=None).isoformat(sep=" ")
    sql(reg, "UPDATE tasks SET retired_at = ? WHERE name = 'recent'", stamp)
    dry = reg.gc(timedelta(days=30), dry_run=True, now=later)
    assert (dry.deleted, dry.kept, dry.dry_run) == (["old"], ["recent"], True)
    assert dry.files == sorted(old_files) and dry.bytes_freed == sum(
        len((reg.root / f).read_bytes()) for f in old_files
    )
    assert all((reg.root / rel).exists() for rel in old_files), "a dry run deletes nothing"
    done = reg.gc(timedelta(days=30), now=later)
    assert (done.deleted, done.kept, done.files) == (["old"], ["recent"], dry.files)
    assert not any((reg.root / rel).exists() for rel in old_files)
    assert all((reg.root / rel).exists() for rel in recent_files) and reg.bundle("kept")
    assert reg.fsck().ok and reg.fsck().retired_files == sorted(recent_files)
    with pytest.raises(VersionPurgedError):
        reg.restore("old")
    assert reg.restore("recent").status == "ready"
    assert reg.gc(timedelta(0), now=later).deleted == [], "ready and purged versions are never collected"
    with pytest.raises(ConfigError):
        reg.gc(timedelta(days=-1))


def test_retiring_and_restoring_a_signed_registry_keeps_signatures_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("CADAPT_REGISTRY_KEY", "k" * 32)
    reg = make_registry(tmp_path)
    with_probe(reg, "a")
    with_probe(reg, "b")
    reg.remove_task("a")
    assert reg.fsck().signature_mismatches == []
    reg.restore("a")
    reg.remove_task("b", purge=True)
    assert reg.fsck().ok and reg.verify_bundle("a")
