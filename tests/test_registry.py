"""Registry tests: round trips, refusals that leave the registry untouched, concurrency, crashes.

Bundle bytes are random: the registry only cares that the file on disk is the one the row names.
"""
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import continual_adapters.registry as registry_module
from continual_adapters.errors import (ConfigError, IntegrityError, RegistryError, SchemaVersionError,
                                       TaskExistsError, TaskNotFoundError)
from continual_adapters.registry import (CRASH_POINTS, BundleDraft, EvaluationDraft, Registry, resolve_url,
                                         validate_name)

ROOT = Path(__file__).resolve().parents[1]


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
    assert dump["meta"] == {"schema_version": "1"} and dump["tasks"][0]["created_at"].endswith("+00:00")
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


@pytest.mark.parametrize("stored, word", [("2", "newer"), ("0", "older")])
def test_schema_version_mismatch(tmp_path, stored, word):
    reg = make_registry(tmp_path)
    sql(reg, "UPDATE cadapt_meta SET value = ? WHERE key = 'schema_version'", stored)
    with pytest.raises(SchemaVersionError, match=word):
        Registry(reg._db_file).tasks()
    with pytest.raises(SchemaVersionError):
        reg.init()


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
            validate_name(bad)
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


def _concurrent_worker(db: str, prefix: str, start) -> None:
    start.wait()
    with Registry(db) as reg:
        for i in range(5):
            add_task(reg, f"{prefix}-{i}")


def test_two_processes_add_tasks_concurrently(tmp_path):
    reg = make_registry(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_concurrent_worker, args=(str(reg._db_file), p, start)) for p in ("x", "y")]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    tasks = reg.tasks()
    assert sorted(t.name for t in tasks) == sorted(f"{p}-{i}" for p in "xy" for i in range(5))
    assert [t.position for t in tasks] == list(range(1, 11)) and {t.status for t in tasks} == {"ready"}
    assert sql(reg, "PRAGMA integrity_check") == [("ok",)]
    assert reg.fsck().ok and all(reg.verify_bundle(t.name) for t in tasks)


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


CRASH_SCRIPT = textwrap.dedent("""
    import sys
    from continual_adapters.registry import BundleDraft, EvaluationDraft, Registry
    reg = Registry(sys.argv[1])
    reg.begin_task("t", labels=["x"], head="classification", primary_metric="accuracy", data={})
    rel, sha, size = reg.write_file("t", b"crash test bytes")
    draft = BundleDraft(rel, sha, size, {}, {}, {}, 0, {}, None, 0.0)
    reg.finish_task("t", draft, [EvaluationDraft("t", "test", "accuracy", 1.0)], {})
""")


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_hard_crash_leaves_only_what_fsck_cleans(tmp_path, step):
    reg = make_registry(tmp_path)
    add_task(reg, "a")
    env = {**os.environ, "CADAPT_CRASH_AT": step, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(reg._db_file)], env=env, capture_output=True)
    assert proc.returncode == 97, proc.stderr.decode()
    report = reg.fsck()
    if step == "after_commit":
        assert report.ok and reg.verify_bundle("t") and reg.task("t").position == 2
        return
    assert [t.name for t in reg.tasks()] == ["a"]
    assert report.dead_pending == ["t"] and len(report.orphan_files) == 1
    assert report.orphan_files[0].startswith("bundles/.tmp-t-" if step in ("after_tmp_write", "after_fsync")
                                              else "bundles/t-")
    reg.fsck(repair=True)
    assert reg.fsck().ok and os.listdir(reg.root / "bundles") == [reg.bundle_path("a").name]
    assert add_task(reg, "t").position == 2


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
