"""Task versions in the registry (registry/versions.py): each version a full member of the stream,
references resolved to one of them, promotion with its history, aliases, and every refusal typed.

On both backends (PostgreSQL when CADAPT_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import pytest

from continual_adapters.core.errors import (
    ConfigError,
    TaskExistsError,
    TaskNotFoundError,
    UnknownVersionError,
    VersionNotReadyError,
    VersionRetiredError,
)
from continual_adapters.registry import EvaluationDraft, Registry
from tests.registry.helpers import add_task, begin


def stream(backend) -> Registry:
    """a, b, then a's version 2: three rows of the stream, two versions of a."""
    reg = backend.registry()
    reg.init()
    add_task(reg, "a")
    add_task(reg, "b")
    add_task(reg, "a@2", [EvaluationDraft("a@2", "test", "accuracy", 0.75)])
    return reg


def test_a_new_version_joins_the_stream_beside_the_old_one(backend):
    reg = stream(backend)
    first = reg.task("a")
    assert [(t.name, t.family, t.version, t.position) for t in reg.tasks()] == [
        ("a", "a", 1, 1),
        ("b", "b", 1, 2),
        ("a@2", "a", 2, 3),
    ]
    assert reg.accuracy_matrix()[0] == ["a", "b", "a@2"], "every stored version has its column"
    assert reg.task("a") == first and reg.task("a@2").ref == "a@2" and first.ref == "a@1"
    assert reg.key_for("a", new_version=True) == "a@3" and reg.key_for("c") == "c"
    with pytest.raises(TaskExistsError, match="--new-version"):
        reg.key_for("a")
    with pytest.raises(TaskNotFoundError, match="without --new-version"):
        reg.key_for("c", new_version=True)
    reg.close()


def test_version_numbers_are_decided_under_the_write_lock(backend):
    reg = stream(backend)
    with pytest.raises(TaskExistsError, match="versions up to 2; the next is 3, not 4"):
        begin(reg, "a@4")
    with pytest.raises(TaskExistsError):
        begin(reg, "a@2")
    with pytest.raises(TaskNotFoundError, match="needs a version 1"):
        begin(reg, "c@2")
    assert begin(reg, "a@3").version == 3
    reg.abort_task("a@3")
    reg.close()


def test_references_resolve_to_one_version(backend):
    reg = stream(backend)
    assert reg.resolve("a").name == "a", "a task never promoted serves its first version"
    assert reg.resolve("a@1").name == "a" and reg.resolve("a@2").name == "a@2"
    assert reg.resolve("a@current").name == "a" and reg.resolve("b").name == "b"
    with pytest.raises(UnknownVersionError, match="no version 7 \\(versions: 1, 2\\)"):
        reg.resolve("a@7")
    with pytest.raises(UnknownVersionError, match="no alias 'prod'"):
        reg.resolve("a@prod")
    with pytest.raises(TaskNotFoundError, match="unknown task 'zzz'"):
        reg.resolve("zzz")
    with pytest.raises(ConfigError):
        reg.resolve("a@0")
    reg.close()


def test_promotion_moves_current_atomically_and_keeps_its_history(backend):
    reg = stream(backend)
    assert [t.name for t in reg.current_tasks()] == ["a", "b"]
    promoted = reg.promote("a@2", by="ci-job-17")
    assert (promoted.key, promoted.version, promoted.promoted_by) == ("a@2", 2, "ci-job-17")
    assert reg.resolve("a").name == "a@2" and [t.name for t in reg.current_tasks()] == ["b", "a@2"]
    reg.promote("a@1")  # rollback
    assert reg.resolve("a").name == "a"
    again = reg.promote("a@1")
    assert again.version == 1 and len(reg.promotions("a")) == 2, "promoting the current version records nothing"
    reg.promote("a@2")
    history = reg.promotions("a")
    assert [p.version for p in history] == [2, 1, 2] and history[1].promoted_by.count("@") == 1
    assert [p.promoted_at for p in history] == sorted(p.promoted_at for p in history)
    assert [t.name for t in reg.tasks()] == ["a", "b", "a@2"], "promotion changes no row of the stream"
    assert reg.fsck().ok
    reg.close()


def test_promotion_refuses_unfinished_and_retired_versions(backend):
    reg = stream(backend)
    begin(reg, "a@3")
    with pytest.raises(VersionNotReadyError, match="a@3: it is pending"):
        reg.promote("a@3")
    with pytest.raises(VersionNotReadyError):
        reg.set_alias("a", "next", 3)
    with pytest.raises(VersionNotReadyError):
        reg.resolve_ready(["a@3"])
    reg.abort_task("a@3")
    reg.remove_task("a@2")
    with pytest.raises(VersionRetiredError, match="a@2: it is retired"):
        reg.promote("a@2")
    with pytest.raises(VersionRetiredError):
        reg.set_alias("a", "production", 2)
    with pytest.raises(VersionRetiredError):
        reg.resolve_ready(["a", "a@2"])
    assert [p.version for p in reg.promotions("a")] == [] and reg.aliases("a") == []
    reg.close()


def test_aliases_pin_a_version_and_move_or_go(backend):
    reg = stream(backend)
    made = reg.set_alias("a", "production", 1, by="release-4")
    assert (made.task, made.alias, made.key, made.set_by) == ("a", "production", "a", "release-4")
    assert reg.resolve("a@production").name == "a"
    reg.promote("a@2")
    assert reg.resolve("a@production").name == "a", "an alias pins; promotion does not move it"
    assert reg.set_alias("a", "production", "current").key == "a@2"
    assert reg.set_alias("a", "canary", "production").version == 2
    assert [(x.alias, x.version) for x in reg.aliases("a")] == [("canary", 2), ("production", 2)]
    assert [(x.task, x.alias) for x in reg.aliases()] == [("a", "canary"), ("a", "production")]
    assert reg.resolve_ready(["a@canary", "b"]) == {"a@canary": reg.task("a@2"), "b": reg.task("b")}
    assert reg.remove_alias("a", "canary").version == 2
    with pytest.raises(UnknownVersionError):
        reg.remove_alias("a", "canary")
    with pytest.raises(ConfigError, match="promote"):
        reg.set_alias("a", "current", 1)
    with pytest.raises(UnknownVersionError):
        reg.set_alias("a", "later", 9)
    reg.close()


def test_versions_lists_status_current_aliases_and_storage(backend):
    reg = stream(backend)
    reg.promote("a@2")
    reg.set_alias("a", "production", 1)
    reg.remove_task("b")
    rows = {v.key: v for v in reg.versions()}
    assert list(rows) == ["a", "a@2", "b"], "tasks in stream order, then by version"
    assert (rows["a"].current, rows["a"].aliases, rows["a@2"].current) == (False, ["production"], True)
    assert (rows["a@2"].score, rows["a"].score, rows["a"].bundle_bytes) == (0.75, 0.5, 64)
    assert (rows["b"].status, rows["b"].restorable, rows["b"].retired_at is not None) == ("retired", True, True)
    assert [v.key for v in reg.versions("a@2")] == ["a", "a@2"], "any reference names its task's versions"
    assert [t.name for t in reg.current_tasks()] == ["a@2"], "a retired current version serves nothing"
    with pytest.raises(TaskNotFoundError):
        reg.versions("zzz")
    reg.close()
