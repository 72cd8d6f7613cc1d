"""Registry tests: round trips, refusals that leave the registry untouched, concurrency, crashes.

Bundle bytes are random: the registry only cares that the file on disk is the one the row names.
"""
import hashlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import continual_adapters.registry.registry as registry_module
from continual_adapters.core.errors import (ConfigError, IntegrityError, RegistryError, SchemaVersionError,
                                       TaskExistsError, TaskNotFoundError)
from continual_adapters.core.config import validate_task_name
from continual_adapters.registry import SCHEMA_VERSION, BundleDraft, EvaluationDraft, Registry, resolve_url

def make_registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry.db")
    reg.init()
    return reg


def begin(reg: Registry, name: str, **data):
    return reg.begin_task(name, labels=["neg", "pos"], head="classification", primary_metric="accuracy",
                          data={"source": f"{name}.jsonl", "sizes": {"train": 10}, **data})


def draft(rel: str, sha: str, size: int) -> BundleDraft:
    return BundleDraft(path=rel, sha256=sha, size_bytes=size, config={"adapter_size": 8},
                       param_counts={"adapter": 6, "layer_norm": 2, "head": 2, "total": 10, "bytes": 40},
                       hyperparameters={"lr": 1e-3}, seed=7, library_versions={"torch": "2.x"},
                       git_commit="abc123", wall_time_s=1.5)


def add_task(reg: Registry, name: str, evals: list[EvaluationDraft] | None = None, payload: bytes | None = None,
             **data):
    begin(reg, name, **data)
    rel, sha, size = reg.write_file(name, payload if payload is not None else os.urandom(64))
    evals = evals if evals is not None else [EvaluationDraft(name, "test", "accuracy", 0.5)]
    return reg.finish_task(name, draft(rel, sha, size), evals, {"before": {}, "after": {}})


def sql(reg: Registry, statement: str, *args) -> list[tuple]:
    with sqlite3.connect(reg._db_file) as conn:
        return conn.execute(statement, args).fetchall()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_init_is_idempotent_and_required(tmp_path):
    reg = Registry(tmp_path / "registry.db")
    assert not reg.initialized()
    with pytest.raises(RegistryError, match="not initialised.*cadapt init"):
        reg.tasks()
    assert not (tmp_path / "registry.db").exists(), "a failed read must not create an empty database"
    reg.init()
    add_task(reg, "a")
    reg.init()
    assert reg.initialized()
    assert reg.root == tmp_path / "registry" and (reg.root / "bundles").is_dir()
    assert [t.name for t in reg.tasks()] == ["a"]
    assert Registry(tmp_path / "other.db").ensure().initialized()
    dump = json.loads(json.dumps(reg.dump()))
    assert dump["meta"] == {"schema_version": str(SCHEMA_VERSION)} and dump["tasks"][0]["created_at"].endswith("+00:00")
    assert [f["path"] for f in dump["files"]] == [reg.bundle("a").path]


def test_url_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CADAPT_REGISTRY", raising=False)
    monkeypatch.delenv("CADAPT_ARTIFACTS", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path}/registry.db"
    monkeypatch.setenv("CADAPT_REGISTRY", "sub/r.db")
    assert resolve_url(None) == f"sqlite:///{tmp_path}/sub/r.db"
    assert resolve_url("postgresql://u@host/db") == "postgresql://u@host/db"
    with pytest.raises(RegistryError, match="CADAPT_ARTIFACTS"):
        Registry("postgresql://u@host/db")


@pytest.mark.parametrize("stored, word", [(str(SCHEMA_VERSION + 1), "newer"), ("0", "older")])
def test_schema_version_mismatch(tmp_path, stored, word):
    reg = make_registry(tmp_path)
    sql(reg, "UPDATE cadapt_meta SET value = ? WHERE key = 'schema_version'", stored)
    with pytest.raises(SchemaVersionError, match=word):
        Registry(reg._db_file).tasks()
    with pytest.raises(SchemaVersionError):
        reg.init()


def test_version_1_registry_is_migrated_once(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    sql(reg, "ALTER TABLE tasks DROP COLUMN signature")
    sql(reg, "UPDATE cadapt_meta SET value = '1'")
    with pytest.raises(SchemaVersionError, match="older.*cadapt init"):
        Registry(reg._db_file).tasks()
    Registry(reg._db_file).ensure()
    assert [t.name for t in Registry(reg._db_file).tasks()] == ["a"]
    assert sql(reg, "SELECT value FROM cadapt_meta") == [(str(SCHEMA_VERSION),)]
    assert "signature" in [row[1] for row in sql(reg, "PRAGMA table_info(tasks)")]


def test_named_constraints(tmp_path):
    reg = make_registry(tmp_path)
    ddl = " ".join(row[0] for row in sql(reg, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    for name in ("uq_tasks_name", "uq_tasks_position", "ck_tasks_status", "uq_bundles_task_id",
                 "fk_bundles_task_id_tasks", "uq_evaluations_task_id_after_tasks_split_metric_kind"):
        assert name in ddl
    assert sql(reg, "PRAGMA journal_mode") == [("wal",)]


def test_base_model_round_trip(tmp_path):
    reg = make_registry(tmp_path)
    assert reg.base_model() is None
    stored = reg.set_base_model("bert-base", "a" * 64, 110_000_000, "bert", 768, 12, revision="main")
    assert reg.base_model() == stored and stored.created_at.tzinfo is not None
    assert reg.set_base_model("renamed", "a" * 64, 1, "bert", 1, 1) == stored
    with pytest.raises(IntegrityError, match="built on base bert-base"):
        reg.set_base_model("roberta", "b" * 64, 1, "roberta", 768, 12)
    with pytest.raises(ConfigError):
        reg.set_base_model("x", "not-a-hash", 1, "bert", 1, 1)


def test_stream_round_trip_and_accuracy_matrix(tmp_path):
    reg = make_registry(tmp_path)
    payload = os.urandom(100)
    a = add_task(reg, "a", [EvaluationDraft("a", "test", "accuracy", 0.9, "f" * 64),
                            EvaluationDraft("a", "validation", "accuracy", 0.8)], payload=payload)
    add_task(reg, "b", [EvaluationDraft("a", "test", "accuracy", 0.85), EvaluationDraft("b", "test", "accuracy", 0.7),
                        EvaluationDraft("b", "test", "macro_f1", 0.6)])
    add_task(reg, "c", [EvaluationDraft("a", "test", "accuracy", 0.8), EvaluationDraft("c", "test", "accuracy", 0.95)])
    reg.add_evaluations([EvaluationDraft("b", "test", "accuracy", 0.1, kind="audit")], after_tasks=3)

    assert (a.position, a.status, a.labels, a.proof) == (1, "ready", ["neg", "pos"], {"before": {}, "after": {}})
    assert reg.task("a") == a and a.data["sizes"] == {"train": 10} and a.owner_pid == os.getpid()
    assert [t.position for t in reg.tasks()] == [1, 2, 3]
    record = reg.bundle("a")
    assert (record.task, record.seed, record.git_commit, record.param_counts["total"]) == ("a", 7, "abc123", 10)
    assert reg.bundle_path("a").read_bytes() == payload and reg.bundle_path("a").is_absolute()
    assert reg.verify_bundle("a") == record

    evals = reg.evaluations()
    assert [(e.after_tasks, e.task, e.metric, e.split) for e in evals] == [
        (1, "a", "accuracy", "test"), (1, "a", "accuracy", "validation"), (2, "a", "accuracy", "test"),
        (2, "b", "accuracy", "test"), (2, "b", "macro_f1", "test"), (3, "a", "accuracy", "test"),
        (3, "b", "accuracy", "test"), (3, "c", "accuracy", "test")]
    assert evals[0].predictions_sha256 == "f" * 64 and evals[0].created_at.tzinfo is not None
    assert [e.value for e in reg.evaluations(task="b", kind="audit")] == [0.1]

    names, matrix = reg.accuracy_matrix()
    assert names == ["a", "b", "c"]
    assert matrix == [[0.9, None, None], [0.85, 0.7, None], [0.8, None, 0.95]]
    assert reg.accuracy_matrix(split="validation")[1] == [[0.8, None, None], [None] * 3, [None] * 3]
    assert reg.accuracy_matrix(metric="macro_f1")[1][1] == [None, 0.6, None]

    reg.add_evaluations([EvaluationDraft("b", "test", "accuracy", 0.65, kind="reeval")], after_tasks=3)
    assert reg.accuracy_matrix()[1][2] == [0.8, 0.65, 0.95]
    reg.add_evaluations([EvaluationDraft("b", "test", "accuracy", 0.2, kind="audit")], after_tasks=3)
    assert [e.value for e in reg.evaluations(task="b", kind="audit")] == [0.2]
    with pytest.raises(ConfigError):
        reg.add_evaluations([EvaluationDraft("b", "test", "accuracy", 0.2, kind="audit")], after_tasks=4)
    with pytest.raises(ConfigError):
        reg.add_evaluations([EvaluationDraft("b", "test", "accuracy", 0.2)], after_tasks=3)


def test_matrix_reads_each_task_on_its_recorded_split(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a", [EvaluationDraft("a", "test", "accuracy", 0.9),
                        EvaluationDraft("a", "validation", "accuracy", 0.7)], eval_split="validation")
    add_task(reg, "b", [EvaluationDraft("a", "validation", "accuracy", 0.6, kind="reeval"),
                        EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval"),
                        EvaluationDraft("b", "test", "accuracy", 0.8), EvaluationDraft("b", "test", "f1", 0.4)])
    assert reg.accuracy_matrix() == (["a", "b"], [[0.7, None], [0.6, 0.8]])
    assert reg.accuracy_matrix(split="test") == (["a", "b"], [[0.9, None], [0.5, 0.8]])
    with pytest.raises(ConfigError, match="nan"):
        reg.add_evaluations([EvaluationDraft("a", "test", "accuracy", float("nan"), kind="audit")], after_tasks=2)


def test_refusals_leave_registry_unchanged(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    before = reg.dump()
    with pytest.raises(TaskExistsError, match="status ready"):
        begin(reg, "a")
    for bad in ("Bad", "-x", "a" * 65, "a/b", "", "a.b"):
        with pytest.raises(ConfigError):
            validate_task_name(bad)
        with pytest.raises(ConfigError):
            begin(reg, bad)
        with pytest.raises(ConfigError):
            reg.write_file(bad, b"x")
    with pytest.raises(TaskNotFoundError, match="known tasks: a"):
        reg.task("nope")
    assert reg.dump() == before

    begin(reg, "b")
    with pytest.raises(TaskExistsError, match="status pending"):
        begin(reg, "b")
    rel, sha, size = reg.write_file("b", b"bytes")
    a_file = reg.bundle("a")
    with pytest.raises(IntegrityError, match="as write_file names it"):
        reg.finish_task("b", draft(a_file.path, a_file.sha256, a_file.size_bytes), [], {})
    pending = reg.dump()
    (reg.root / rel).write_bytes(b"BYTES")
    with pytest.raises(IntegrityError, match="sha256 is"):
        reg.finish_task("b", draft(rel, sha, size), [], {})
    (reg.root / rel).write_bytes(b"bytes")
    with pytest.raises(TaskNotFoundError):
        reg.finish_task("b", draft(rel, sha, size), [EvaluationDraft("ghost", "test", "accuracy", 1.0)], {})
    with pytest.raises(RegistryError, match="not pending"):
        reg.finish_task("a", draft(rel, sha, size), [], {})
    assert reg.dump() == pending and reg.task("b").status == "pending"


def test_failed_row_is_replaced_on_rerun(tmp_path):
    reg = make_registry(tmp_path)
    begin(reg, "a")
    sql(reg, "UPDATE tasks SET status = 'failed' WHERE name = 'a'")
    assert reg.tasks(include_pending=True)[0].status == "failed"
    assert add_task(reg, "a").status == "ready"


def test_abort_restores_previous_state(tmp_path):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    before = reg.dump()
    begin(reg, "b")
    reg.write_file("b", b"abandoned")
    (reg.root / "bundles" / ".tmp-b-0123456789abcdef").write_bytes(b"partial")
    reg.abort_task("b")
    reg.abort_task("never-existed")
    assert reg.dump() == before
    with pytest.raises(RegistryError, match="remove_task"):
        reg.abort_task("a")
    assert add_task(reg, "b").position == 2


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


def test_remove_task_retires_and_keeps_history(tmp_path):
    reg = make_registry(tmp_path)
    for name in ("a", "b", "c"):
        add_task(reg, name)
    path, evals = reg.bundle_path("b"), reg.evaluations(task="b")
    others = {n: (reg.task(n), reg.bundle(n)) for n in ("a", "c")}
    removed = reg.remove_task("b")
    assert removed.status == "retired" and removed.position == 2 and not path.exists()
    assert reg.evaluations(task="b") == evals
    assert {n: (reg.task(n), reg.bundle(n)) for n in ("a", "c")} == others
    assert [t.name for t in reg.tasks()] == ["a", "c"]
    assert [t.name for t in reg.tasks(include_retired=True)] == ["a", "b", "c"]
    assert reg.accuracy_matrix()[0] == ["a", "b", "c"]
    with pytest.raises(RegistryError, match="no bundle"):
        reg.bundle("b")
    with pytest.raises(RegistryError, match="retired"):
        reg.remove_task("b")
    with pytest.raises(TaskNotFoundError):
        reg.remove_task("zzz")
    assert reg.fsck().ok and add_task(reg, "d").position == 4


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


# -- both backends: SQLite always, PostgreSQL when CADAPT_TEST_POSTGRES_URL is set (see backends.py) --


def test_protocol_round_trip_on_each_backend(backend):  # noqa: F811
    reg = backend.registry()
    reg.init()
    reg.init()
    a = add_task(reg, "a", payload=b"first bundle")
    add_task(reg, "b", [EvaluationDraft("a", "test", "accuracy", 0.4, kind="reeval"),
                        EvaluationDraft("b", "test", "accuracy", 0.7)])
    assert (a.position, reg.task("b").position) == (1, 2)
    assert reg.bundle_path("a").read_bytes() == b"first bundle" and reg.verify_bundle("b")
    assert reg.accuracy_matrix() == (["a", "b"], [[0.5, None], [0.4, 0.7]])
    before = reg.dump()
    with pytest.raises(TaskExistsError):
        begin(reg, "a")
    begin(reg, "c")
    reg.write_file("c", b"abandoned")
    reg.abort_task("c")
    assert reg.dump() == before
    begin(reg, "d")
    reg.write_file("d", b"left behind")
    backend.execute("UPDATE tasks SET owner_pid = :pid WHERE name = 'd'", pid=dead_pid())
    report = reg.fsck()
    assert report.dead_pending == ["d"] and len(report.orphan_files) == 1 and not report.ok
    assert reg.fsck(repair=True).repaired and reg.fsck().ok and reg.dump() == before
    assert reg.remove_task("b").status == "retired" and [t.name for t in reg.tasks()] == ["a"]
    reg.close()


def _protocol_writer(url: str, artifacts: str | None, prefix: str, count: int, start) -> None:
    start.wait()
    with Registry(url, artifacts) as reg:
        for i in range(count):
            add_task(reg, f"{prefix}-{i}", payload=f"{prefix}-{i}".encode())


def _init_caller(url: str, artifacts: str | None, start) -> None:
    start.wait()
    with Registry(url, artifacts) as reg:
        reg.init()
        add_task(reg, f"by-{os.getpid()}")


def _run_together(target, args_list: list[tuple]) -> list[int]:
    """Forked, not spawned: the children only touch the database and files, and forking skips
    re-importing torch in each, which on two cores costs more than the test itself."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, start)) for args in args_list]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(120)
    return [proc.exitcode for proc in procs]


def test_eight_writers_protocol_level(backend):  # noqa: F811
    """Eight processes, five tasks each, all through the commit protocol at once: every task lands
    exactly once at its own position, nothing fails on a lock, and the database is intact."""
    reg = backend.registry()
    reg.init()
    reg.close()
    artifacts = None if backend.kind == "sqlite" else str(backend.artifacts)
    prefixes = [f"w{i}" for i in range(8)]
    assert _run_together(_protocol_writer, [(backend.url, artifacts, p, 5) for p in prefixes]) == [0] * 8
    tasks = reg.tasks()
    assert sorted(t.name for t in tasks) == sorted(f"{p}-{i}" for p in prefixes for i in range(5))
    assert [t.position for t in tasks] == list(range(1, 41)) and {t.status for t in tasks} == {"ready"}
    assert all(reg.bundle_path(t.name).read_bytes() == t.name.encode() for t in tasks)
    if backend.kind == "sqlite":
        assert backend.execute("PRAGMA integrity_check") == [("ok",)]
    assert reg.fsck().ok


def test_init_runs_once_when_many_processes_start_together(backend):  # noqa: F811
    artifacts = None if backend.kind == "sqlite" else str(backend.artifacts)
    assert _run_together(_init_caller, [(backend.url, artifacts)] * 8) == [0] * 8
    reg = backend.registry()
    assert backend.execute("SELECT key, value FROM cadapt_meta") == [("schema_version", str(SCHEMA_VERSION))]
    assert len(reg.tasks()) == 8 and [t.position for t in reg.tasks()] == list(range(1, 9))


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


@pytest.mark.parametrize("rel", ["../escape.safetensors", "/etc/passwd", "bundles/../../x", "", ".",
                                 "bundles/sub/../../../x"])
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
