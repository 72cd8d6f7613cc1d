"""Per-task artifact files (probes, centroids) and schema 3: the write protocol and reads, fsck over
the artifact folders, abort/remove/replace, signatures, the 2 -> 3 migration, how each accuracy
matrix entry was confirmed, and the task table in a fixed number of queries.

Most tests run on each backend (``backend`` fixture: SQLite, and PostgreSQL in CI); builders in helpers.py.
"""

import os

import pytest
from sqlalchemy import event

import continual_adapters.registry.registry as registry_module
from continual_adapters.core.errors import ConfigError, IntegrityError, RegistryError
from continual_adapters.registry import ArtifactDraft, EvaluationDraft, Registry, TaskSummary
from continual_adapters.registry.signing import KEY_ENV
from tests.registry.helpers import add_task, begin, dead_pid, draft, make_registry

KEY = "test-key-kept-outside-the-registry"
PROOF = {"before": {}, "after": {}}
B_REGISTERED = EvaluationDraft("b", "test", "accuracy", 0.6)


def ready(backend) -> Registry:
    reg = backend.registry()
    reg.init()
    return reg


def add_with(reg: Registry, name: str, evals=None, **blobs: bytes):
    """A task through the full protocol, with one artifact per keyword (kind=bytes)."""
    begin(reg, name)
    rel, sha, size = reg.write_file(name, os.urandom(64))
    artifacts = [reg.write_artifact(name, kind, data) for kind, data in blobs.items()]
    evals = evals if evals is not None else [EvaluationDraft(name, "test", "accuracy", 0.5)]
    return reg.finish_task(name, draft(rel, sha, size), evals, PROOF, artifacts)


def files(reg: Registry, folder: str) -> list[str]:
    path = reg.root / folder
    return sorted(os.listdir(path)) if path.is_dir() else []


def test_write_finish_and_read(backend):
    reg = ready(backend)
    begin(reg, "a")
    rel, sha, size = reg.write_file("a", b"bundle")
    probe = reg.write_artifact("a", "probe", b"probe bytes")
    centroids = reg.write_artifact("a", "centroids", b"centroid bytes")
    assert probe.kind == "probe" and probe.size_bytes == len(b"probe bytes")
    assert probe.path == f"probes/a-{probe.sha256[:16]}.safetensors"
    assert centroids.path.startswith("centroids/a-"), "one folder per kind, named once (no 'centroidss')"

    before = reg.dump()
    wrong = ArtifactDraft("probe", centroids.path, centroids.sha256, centroids.size_bytes)
    with pytest.raises(IntegrityError, match="not probes/a-"):
        reg.finish_task("a", draft(rel, sha, size), [], PROOF, [wrong])
    with pytest.raises(ConfigError, match="same kind"):
        reg.finish_task("a", draft(rel, sha, size), [], PROOF, [probe, probe])
    with pytest.raises(ConfigError, match="artifact kind"):
        reg.finish_task("a", draft(rel, sha, size), [], PROOF, [ArtifactDraft("weights", probe.path, sha, 1)])
    assert reg.dump() == before and reg.task("a").status == "pending", "a refused finish records nothing"

    evals = [EvaluationDraft("a", "test", "accuracy", 0.5)]
    assert reg.finish_task("a", draft(rel, sha, size), evals, PROOF, [probe, centroids]).status == "ready"
    record = reg.artifact("a", "probe")
    assert (record.task, record.kind, record.path, record.sha256) == ("a", "probe", probe.path, probe.sha256)
    assert record.created_at.tzinfo is not None
    assert [a.kind for a in reg.artifacts("a")] == ["centroids", "probe"]
    assert reg.read_artifact("a", "probe") == b"probe bytes"
    assert reg.read_artifact("a", "centroids") == b"centroid bytes"
    assert reg.artifact_path("a", "probe") == reg.root / probe.path
    dumped = reg.dump()["artifacts"]
    assert [(a["task"], a["kind"]) for a in dumped] == [("a", "centroids"), ("a", "probe")]
    assert "id" not in dumped[0] and "task_id" not in dumped[0]
    assert reg.fsck().ok

    add_task(reg, "b")
    assert reg.artifact("b", "probe") is None and reg.artifacts("b") == []
    with pytest.raises(RegistryError, match="no probe artifact"):
        reg.read_artifact("b", "probe")
    with pytest.raises(RegistryError, match="no centroids artifact"):
        reg.artifact_path("b", "centroids")
    with pytest.raises(ConfigError, match="artifact kind"):
        reg.artifact("b", "probes")
    reg.close()


def test_write_artifact_is_atomic_and_typed(tmp_path, monkeypatch):
    reg = make_registry(tmp_path)
    begin(reg, "a")
    steps = []
    monkeypatch.setattr(registry_module, "_fault_hook", steps.append)
    reg.write_artifact("a", "probe", b"x")
    assert steps == ["after_tmp_write", "after_fsync", "after_rename", "after_dir_fsync"]

    def fault(step: str) -> None:
        if step == "after_fsync":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module, "_fault_hook", fault)
    with pytest.raises(RegistryError, match="cannot write the centroids of task 'a'.*nothing was recorded"):
        reg.write_artifact("a", "centroids", b"y")
    assert files(reg, "centroids") == [], "the temp file of a failed write is removed"
    monkeypatch.setattr(registry_module, "_fault_hook", None)
    (reg.root / "centroids").rmdir()
    (reg.root / "centroids").write_bytes(b"not a folder")
    with pytest.raises(RegistryError, match="cannot create the centroids folder"):
        reg.write_artifact("a", "centroids", b"y")
    with pytest.raises(ConfigError, match="artifact kind"):
        reg.write_artifact("a", "weights", b"z")


def test_altered_or_missing_artifact_is_caught(backend):
    reg = ready(backend)
    add_with(reg, "a", probe=b"probe of a", centroids=b"centroids of a")
    add_with(reg, "b", probe=b"probe of b")
    path = reg.artifact_path("a", "probe")
    path.write_bytes(b"probe of A")
    with pytest.raises(IntegrityError, match=rf"probe of task 'a' at .*{path.name}.*sha256"):
        reg.read_artifact("a", "probe")
    path.write_bytes(b"probe of a, longer")
    with pytest.raises(IntegrityError, match=rf"{path.name}.*size is 18 bytes, registry says 10"):
        reg.read_artifact("a", "probe")
    reg.artifact_path("b", "probe").unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.read_artifact("b", "probe")
    report = reg.fsck(repair=True)
    assert (report.checksum_mismatches, report.missing_files, report.ok) == (["a:probe"], ["b:probe"], False)
    assert path.exists() and reg.artifact("b", "probe") is not None, "fsck never repairs what only a person can"
    assert reg.read_artifact("a", "centroids") == b"centroids of a"
    assert reg.verify_bundle("a") and reg.verify_bundle("b")
    reg.close()


def test_fsck_finds_and_repairs_orphan_artifacts(backend):
    reg = ready(backend)
    add_with(reg, "a", probe=b"kept")
    orphan = reg.write_artifact("a", "probe", b"never attached")
    begin(reg, "b")
    live = reg.write_artifact("b", "centroids", b"work in progress")
    assert reg.fsck().orphan_files == [orphan.path], "a live pending task's files are never orphans"
    backend.execute("UPDATE tasks SET owner_pid = :pid WHERE name = 'b'", pid=dead_pid())
    report = reg.fsck()
    assert report.orphan_files == sorted([live.path, orphan.path]) and report.dead_pending == ["b"]
    assert reg.fsck(repair=True).repaired
    assert files(reg, "probes") == [reg.artifact_path("a", "probe").name] and files(reg, "centroids") == []
    assert reg.fsck().ok and reg.read_artifact("a", "probe") == b"kept"
    reg.close()


def test_abort_leaves_no_file_and_remove_deletes_them(backend):
    reg = ready(backend)
    add_with(reg, "a", probe=b"a probe")
    before = reg.dump()
    begin(reg, "b")
    reg.write_file("b", b"abandoned")
    reg.write_artifact("b", "probe", b"abandoned probe")
    reg.write_artifact("b", "centroids", b"abandoned centroids")
    reg.abort_task("b")
    assert reg.dump() == before and files(reg, "centroids") == [] and len(files(reg, "probes")) == 1

    path = reg.artifact_path("a", "probe")
    assert reg.remove_task("a", purge=True).status == "retired"
    assert not path.exists() and reg.artifacts("a") == [] and reg.dump()["artifacts"] == []
    assert files(reg, "probes") == [] and files(reg, "bundles") == [] and reg.fsck().ok
    reg.close()


def test_add_artifact_attaches_and_replaces(backend):
    reg = ready(backend)
    add_task(reg, "a")
    first = reg.write_artifact("a", "probe", b"first")
    assert reg.add_artifact("a", first).path == first.path and reg.read_artifact("a", "probe") == b"first"
    again = reg.write_artifact("a", "probe", b"first")
    assert reg.add_artifact("a", again) == reg.artifact("a", "probe") and (reg.root / first.path).exists()
    second = reg.write_artifact("a", "probe", b"second")
    record = reg.add_artifact("a", second)
    assert (record.path, record.sha256) == (second.path, second.sha256) and reg.artifact("a", "probe") == record
    assert not (reg.root / first.path).exists(), "the replaced file goes after the commit"
    assert reg.read_artifact("a", "probe") == b"second" and len(reg.dump()["artifacts"]) == 1

    begin(reg, "b")
    pending = reg.write_artifact("b", "probe", b"too early")
    with pytest.raises(RegistryError, match="pending.*only be added to ready tasks"):
        reg.add_artifact("b", pending)
    with pytest.raises(IntegrityError, match="not probes/a-"):
        reg.add_artifact("a", pending)
    gone = reg.write_artifact("a", "centroids", b"deleted before it is recorded")
    (reg.root / gone.path).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        reg.add_artifact("a", gone)
    assert reg.artifact("a", "centroids") is None and reg.read_artifact("a", "probe") == b"second"
    reg.close()


def test_signature_covers_artifacts(backend, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    reg = ready(backend)
    add_with(reg, "a", probe=b"signed probe")
    add_task(reg, "b")
    assert reg.fsck().ok and reg.read_artifact("a", "probe") == b"signed probe"
    forged = reg.write_artifact("a", "probe", b"forged probe")
    backend.execute(
        "UPDATE task_artifacts SET path = :path, sha256 = :sha, size_bytes = :size",
        path=forged.path,
        sha=forged.sha256,
        size=forged.size_bytes,
    )
    report = reg.fsck()
    assert report.signature_mismatches == ["a"] and report.checksum_mismatches == [], "file and row agree"
    with pytest.raises(IntegrityError, match="signature"):
        reg.read_artifact("a", "probe")
    assert reg.add_artifact("a", reg.write_artifact("a", "probe", b"signed probe")) and reg.fsck(repair=True).ok
    assert reg.add_artifact("b", reg.write_artifact("b", "centroids", b"backfilled")) and reg.fsck().ok
    backend.execute("UPDATE task_artifacts SET kind = 'probe' WHERE kind = 'centroids'")
    assert reg.fsck().signature_mismatches == ["b"]
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(RegistryError, match="is signed"):
        reg.add_artifact("a", reg.write_artifact("a", "centroids", b"unsigned"))
    reg.close()


def test_confirmations_of_a_hand_built_stream(backend):
    reg = ready(backend)
    add_task(reg, "a")
    b_f1 = EvaluationDraft("b", "test", "f1", 1.0)
    add_task(reg, "b", [EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval"), B_REGISTERED, b_f1])
    add_task(
        reg,
        "c",
        [
            EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval", confirmation="probe"),
            EvaluationDraft("b", "test", "accuracy", 0.0, kind="skipped"),
            EvaluationDraft("c", "test", "accuracy", 0.7),
        ],
    )
    names, how = reg.confirmations()
    assert names == ["a", "b", "c"] and how == [
        ["registration", None, None],
        ["full", "registration", None],
        ["probe", "skipped", "registration"],
    ]
    assert reg.accuracy_matrix() == (names, [[0.5, None, None], [0.5, 0.6, None], [0.5, None, 0.7]])
    assert [e.confirmation for e in reg.evaluations("a")] == [None, None, "probe"]
    reg.add_evaluations([EvaluationDraft("b", "test", "accuracy", 0.6, kind="reeval", confirmation="full")], 3)
    assert reg.confirmations()[1][2] == ["probe", "full", "registration"], "a score outranks a skipped row"
    assert reg.accuracy_matrix()[1][2] == [0.5, 0.6, 0.7]
    assert reg.confirmations(metric="f1")[1] == [[None] * 3, [None, "registration", None], [None] * 3]
    for bad in (
        EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval", confirmation="guessed"),
        EvaluationDraft("a", "test", "accuracy", 0.5, kind="skipped", confirmation="probe"),
    ):
        with pytest.raises(ConfigError, match="confirmation"):
            reg.add_evaluations([bad], after_tasks=3)
    begin(reg, "d")
    rel, sha, size = reg.write_file("d", b"d")
    with pytest.raises(ConfigError, match="confirmation"):
        reg.finish_task("d", draft(rel, sha, size), [EvaluationDraft("d", "t", "accuracy", 1, confirmation="full")], {})
    assert reg.task("d").status == "pending"
    reg.close()


def expected_table(reg: Registry, include_retired: bool, include_pending: bool) -> list[TaskSummary]:
    """What `cadapt tasks` put together from one tasks() call and two more calls per task."""
    rows = []
    for t in reg.tasks(include_retired=include_retired, include_pending=include_pending):
        scores = {
            e.split: e.value for e in reg.evaluations(t.name, kind="registration") if e.metric == t.primary_metric
        }
        split = t.data.get("eval_split") if t.data.get("eval_split") in scores else min(scores, default=None)
        bundle = reg.bundle(t.name) if t.status == "ready" else None
        rows.append(
            TaskSummary(
                position=t.position,
                name=t.name,
                status=t.status,
                method=t.method,
                num_labels=len(t.labels),
                primary_metric=t.primary_metric,
                score=None if split is None else scores[split],
                total_params=None if bundle is None else bundle.param_counts["total"],
                bundle_bytes=None if bundle is None else bundle.size_bytes,
            )
        )
    return rows


def statements_of(reg: Registry, call) -> list[str]:
    """Every SQL statement ``call`` sends, counted at the driver cursor."""
    seen: list[str] = []

    def record(conn, cursor, statement, *rest) -> None:
        seen.append(statement)

    event.listen(reg._engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(reg._engine, "before_cursor_execute", record)
    return seen


def test_task_table_matches_the_per_task_reads_in_fixed_queries(backend):
    reg = ready(backend)
    t0 = [("test", "accuracy", 0.25), ("validation", "accuracy", 0.75), ("validation", "f1", 0.1)]
    add_task(reg, "t0", [EvaluationDraft("t0", *e) for e in t0], eval_split="validation")
    add_task(reg, "t1", [EvaluationDraft("t1", "test", "accuracy", 0.5)])
    add_task(reg, "t2", [EvaluationDraft("t2", "test", "f1", 0.5)])
    reg.remove_task("t1", purge=True)
    begin(reg, "waiting")
    counts = {}
    for count in (3, 30):
        for i in range(len(reg.tasks(include_retired=True)), count):
            add_task(reg, f"t{i}", [EvaluationDraft(f"t{i}", "test", "accuracy", i / 100)])
        for flags in ((False, False), (True, False), (True, True)):
            assert reg.task_table(*flags) == expected_table(reg, *flags), flags
        table = reg.task_table(include_retired=True, include_pending=True)
        assert [r.name for r in table] == [f"t{i}" for i in range(count)] + ["waiting"]
        assert (table[0].score, table[0].total_params, table[0].bundle_bytes) == (0.75, 10, 64)
        assert (table[1].status, table[1].score, table[1].total_params, table[1].bundle_bytes) == (
            "retired",
            0.5,
            None,
            None,
        )
        assert table[2].score is None, "t2 has no score of its primary metric"
        assert (table[-1].position, table[-1].score, table[-1].num_labels, table[-1].status) == (
            None,
            None,
            2,
            "pending",
        )
        statements = statements_of(reg, lambda: reg.task_table(include_retired=True, include_pending=True))
        counts[count] = len(statements)
        assert len([s for s in statements if "evaluations" in s or "bundles" in s]) == 2, statements
    assert counts[3] == counts[30], counts
    reg.close()
