"""Registry tests: the schema and its version, the write protocol and the records it returns,
refusals that leave the registry untouched, and many writers at once on each backend.

Checks, crashes mid-protocol and path safety are in test_fsck.py; builders in helpers.py.
"""

import json
import multiprocessing
import os

import pytest

from continual_adapters.core.config import validate_task_name
from continual_adapters.core.errors import (
    ConfigError,
    IntegrityError,
    RegistryError,
    SchemaVersionError,
    TaskExistsError,
    TaskNotFoundError,
)
from continual_adapters.registry import SCHEMA_VERSION, EvaluationDraft, Registry, resolve_url
from tests.registry.helpers import DOWNGRADE_TO_2, add_task, begin, dead_pid, draft, make_registry, sql


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
    for statement in DOWNGRADE_TO_2:
        sql(reg, statement)
    sql(reg, "ALTER TABLE tasks DROP COLUMN signature")
    sql(reg, "UPDATE cadapt_meta SET value = '1'")
    with pytest.raises(SchemaVersionError, match="older.*cadapt upgrade"):
        Registry(reg._db_file).tasks()
    Registry(reg._db_file).ensure()
    assert [t.name for t in Registry(reg._db_file).tasks()] == ["a"]
    assert sql(reg, "SELECT value FROM cadapt_meta") == [(str(SCHEMA_VERSION),)]
    assert "signature" in [row[1] for row in sql(reg, "PRAGMA table_info(tasks)")]


def test_named_constraints(tmp_path):
    reg = make_registry(tmp_path)
    ddl = " ".join(row[0] for row in sql(reg, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    for name in (
        "uq_tasks_name",
        "uq_tasks_position",
        "ck_tasks_status",
        "uq_bundles_task_id",
        "fk_bundles_task_id_tasks",
        "uq_evaluations_task_id_after_tasks_split_metric_kind",
    ):
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
    a = add_task(
        reg,
        "a",
        [EvaluationDraft("a", "test", "accuracy", 0.9, "f" * 64), EvaluationDraft("a", "validation", "accuracy", 0.8)],
        payload=payload,
    )
    add_task(
        reg,
        "b",
        [
            EvaluationDraft("a", "test", "accuracy", 0.85),
            EvaluationDraft("b", "test", "accuracy", 0.7),
            EvaluationDraft("b", "test", "macro_f1", 0.6),
        ],
    )
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
        (1, "a", "accuracy", "test"),
        (1, "a", "accuracy", "validation"),
        (2, "a", "accuracy", "test"),
        (2, "b", "accuracy", "test"),
        (2, "b", "macro_f1", "test"),
        (3, "a", "accuracy", "test"),
        (3, "b", "accuracy", "test"),
        (3, "c", "accuracy", "test"),
    ]
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
    add_task(
        reg,
        "a",
        [EvaluationDraft("a", "test", "accuracy", 0.9), EvaluationDraft("a", "validation", "accuracy", 0.7)],
        eval_split="validation",
    )
    add_task(
        reg,
        "b",
        [
            EvaluationDraft("a", "validation", "accuracy", 0.6, kind="reeval"),
            EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval"),
            EvaluationDraft("b", "test", "accuracy", 0.8),
            EvaluationDraft("b", "test", "f1", 0.4),
        ],
    )
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


def test_purging_a_task_retires_it_deletes_its_files_and_keeps_history(tmp_path):
    reg = make_registry(tmp_path)
    for name in ("a", "b", "c"):
        add_task(reg, name)
    path, evals = reg.bundle_path("b"), reg.evaluations(task="b")
    others = {n: (reg.task(n), reg.bundle(n)) for n in ("a", "c")}
    removed = reg.remove_task("b", purge=True)
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


# -- both backends: SQLite always, PostgreSQL when CADAPT_TEST_POSTGRES_URL is set (see backends.py) --


def test_protocol_round_trip_on_each_backend(backend):  # noqa: F811
    reg = backend.registry()
    reg.init()
    reg.init()
    a = add_task(reg, "a", payload=b"first bundle")
    add_task(
        reg,
        "b",
        [EvaluationDraft("a", "test", "accuracy", 0.4, kind="reeval"), EvaluationDraft("b", "test", "accuracy", 0.7)],
    )
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
