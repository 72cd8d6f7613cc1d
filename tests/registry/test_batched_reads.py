"""The registry's batched reads: one query for many tasks, the same answers and checks as one at a time."""

import os

import pytest

from continual_adapters.core.errors import IntegrityError, TaskNotFoundError
from continual_adapters.registry import EvaluationDraft, Registry
from continual_adapters.registry.signing import KEY_ENV
from tests.registry.helpers import add_task, begin, draft


def add_with(reg: Registry, name: str, **blobs: bytes):
    begin(reg, name)
    rel, sha, size = reg.write_file(name, os.urandom(64))
    artifacts = [reg.write_artifact(name, kind, data) for kind, data in blobs.items()]
    evals = [EvaluationDraft(name, "test", "accuracy", 0.5)]
    return reg.finish_task(name, draft(rel, sha, size), evals, {"before": {}, "after": {}}, artifacts)


def test_batched_reads_equal_the_one_task_reads_and_check_the_same_things(backend, monkeypatch):
    """`bundles`, `read_artifacts` and `evaluations_of` serve many tasks with one query each (confirming
    200 tasks), and must answer exactly what `bundle`, `read_artifact` and `evaluations` answer."""
    reg = backend.registry()
    reg.init()
    add_with(reg, "a", probe=b"probe of a")
    add_with(reg, "b", probe=b"probe of b", centroids=b"centroids of b")
    add_task(reg, "c")
    names = ["c", "a", "b"]
    assert reg.bundles(names) == {n: reg.bundle(n) for n in names} and list(reg.bundles(names)) == names
    assert reg.read_artifacts("probe", names) == {"a": b"probe of a", "b": b"probe of b"}
    assert reg.read_artifacts("centroids", ["a"]) == {}
    assert reg.evaluations_of(["b", "a"]) == {"b": reg.evaluations("b"), "a": reg.evaluations("a")}
    with pytest.raises(TaskNotFoundError):
        reg.bundles(["a", "nope"])
    reg.artifact_path("b", "probe").write_bytes(b"probe of B")  # same size, other bytes
    with pytest.raises(IntegrityError, match="probe of task 'b'"):
        reg.read_artifacts("probe", names)
    monkeypatch.setenv(KEY_ENV, "a-key-of-at-least-16-characters")
    with pytest.raises(IntegrityError, match="not signed|signature"):
        reg.bundles(["a"])
    reg.close()


def test_full_only_keeps_the_rows_that_scored_a_task_in_full(backend):
    """Probe-carried rows (one per later addition) are what make a history grow with the stream."""
    reg = backend.registry()
    reg.init()
    for name in ("a", "b", "c"):
        add_with(reg, name)
    reg.add_evaluations([EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval", confirmation="probe")], 2)
    reg.add_evaluations([EvaluationDraft("a", "test", "accuracy", 0.4, kind="reeval", confirmation="full")], 3)
    every = reg.evaluations_of(["a"])["a"]
    full = reg.evaluations_of(["a"], full_only=True)["a"]
    assert [(e.kind, e.confirmation) for e in every] == [
        ("registration", None),
        ("reeval", "probe"),
        ("reeval", "full"),
    ]
    assert full == [every[0], every[2]]
    reg.close()


def test_reevals_unlike_registration_are_the_rows_an_audit_can_object_to(backend):
    """The audit checks that a task unchanged since registration still scores what it scored then;
    only a reeval row that differs from a registration row (value or predictions hash, same metric and
    split, the primary metric) can fail that, so the database hands back those and no others."""
    reg = backend.registry()
    reg.init()
    for name in ("a", "b", "c"):
        add_with(reg, name)
    same = EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval", confirmation="probe")
    reg.add_evaluations([same, EvaluationDraft("b", "test", "accuracy", 0.5, kind="reeval", confirmation="probe")], 3)
    assert reg.reevals_unlike_registration(["a", "b"]) == {"a": [], "b": []}
    reg.add_evaluations(
        [
            EvaluationDraft("a", "test", "accuracy", 0.25, kind="reeval", confirmation="full"),  # another score
            EvaluationDraft("a", "test", "macro_f1", 0.1, kind="reeval"),  # not the primary metric
            EvaluationDraft("a", "validation", "accuracy", 0.1, kind="reeval"),  # no registration on that split
            EvaluationDraft("b", "test", "accuracy", 0.5, "e" * 64, kind="reeval"),  # same score, other predictions
        ],
        2,
    )
    unlike = reg.reevals_unlike_registration(["a", "b", "c"])
    assert [(e.after_tasks, e.split, e.value) for e in unlike["a"]] == [(2, "test", 0.25)]
    assert [(e.after_tasks, e.predictions_sha256) for e in unlike["b"]] == [(2, "e" * 64)] and unlike["c"] == []
    assert unlike["a"][0] == next(e for e in reg.evaluations("a", kind="reeval") if e.value == 0.25)
    reg.close()


def test_artifacts_of_many_tasks_equal_the_one_task_reads(backend):
    reg = backend.registry()
    reg.init()
    add_with(reg, "a", probe=b"probe of a", fisher=b"fisher of a")
    add_with(reg, "b")
    add_with(reg, "c", replay=b"replay of c")
    names = ["c", "a", "b"]
    assert reg.artifacts_of(names) == {n: reg.artifacts(n) for n in names} and list(reg.artifacts_of(names)) == names
    kept = reg.artifacts_of(names, ["fisher", "replay"])
    assert {n: [a.kind for a in kept[n]] for n in names} == {"c": ["replay"], "a": ["fisher"], "b": []}
    reg.close()
