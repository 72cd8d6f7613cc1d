"""Tampering: every mutation of a bundle file or a registry row is detected by `cadapt fsck` or
`cadapt audit`, and untouched registries raise no alarm.

Two small real registries (three tasks each, tiny random encoder) are built once: one plain,
one signed with `CADAPT_REGISTRY_KEY`. Each mutation is applied to a fresh copy. Row edits that
leave every hash consistent (moving a task's position, a hyperparameter, a bundle replaced
together with its recorded hash and size) are only detectable with the key: they are run against
the signed copy, where fsck and the audit must both catch them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import ConfigError, RegistryError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry.registry import EvaluationDraft, Registry
from continual_adapters.registry.signing import KEY_ENV, canonical, sign, verify
from continual_adapters.stream.runner import Runner
from tests.support.reliability import write_tiny_data

KEY = "test-key-kept-outside-the-registry"
TASKS = ("t1", "t2", "t3")


def _build(folder: Path, encoder: str) -> Path:
    files = write_tiny_data(folder)
    spec = DataSpec(train=str(files["train"]), validation=str(files["validation"]), test=str(files["test"]))
    runner = Runner(Registry(folder / "registry.db"), encoder=encoder, progress=False)
    for name in TASKS:
        runner.add_task(name, spec, train=TrainConfig(epochs=1, max_length=32))
    return folder


@pytest.fixture(scope="module")
def templates(tmp_path_factory, tiny_encoder_dir):
    plain = _build(tmp_path_factory.mktemp("plain"), tiny_encoder_dir)
    os.environ[KEY_ENV] = KEY
    try:
        signed = _build(tmp_path_factory.mktemp("signed"), tiny_encoder_dir)
    finally:
        del os.environ[KEY_ENV]
    return {"plain": plain, "signed": signed}


def _copy(templates, which: str, tmp_path: Path) -> Path:
    """A copy at the same absolute data paths: provenance records absolute file paths."""
    target = tmp_path / which
    shutil.copytree(templates[which], target)
    return target / "registry.db"


def _sql(db: Path, statement: str, *args) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(statement, args)


def _json_edit(db: Path, table: str, column: str, task: str, fn) -> None:
    key = "id" if table == "tasks" else "task_id"
    with sqlite3.connect(db) as conn:
        task_id = conn.execute("SELECT id FROM tasks WHERE name = ?", (task,)).fetchone()[0]
        value = json.loads(conn.execute(f"SELECT {column} FROM {table} WHERE {key} = ?", (task_id,)).fetchone()[0])
        fn(value)
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (json.dumps(value), task_id))


def detect(db: Path) -> dict:
    """`cadapt fsck` and `cadapt audit`, as a person would run them; exit 1 means an alarm."""
    fsck = CliRunner().invoke(cli, ["--registry", str(db), "fsck", "--json"])
    result = CliRunner().invoke(cli, ["--registry", str(db), "audit", "--json"])
    assert fsck.exit_code in (0, 1) and result.exit_code in (0, 1), (fsck.output, result.output)
    report = json.loads(result.stdout) if result.stdout.startswith("{") else {"tasks": []}
    return {
        "fsck": fsck.exit_code == 1,
        "audit": result.exit_code == 1,
        "audit_failed": sorted(t["task"] for t in report["tasks"] if not t["ok"]),
    }


def _bundle(db: Path, task: str) -> Path:
    return Registry(db).bundle_path(task)


def _flip(db: Path, task: str, seed: int) -> None:
    path = _bundle(db, task)
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def _truncate(db: Path, task: str, keep: float) -> None:
    path = _bundle(db, task)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _swap_files(db: Path) -> None:
    a, b = _bundle(db, "t1"), _bundle(db, "t2")
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def _symlink(db: Path) -> None:
    path = _bundle(db, "t2")
    copy = path.parent.parent / "elsewhere.safetensors"
    copy.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(copy)


def _swap_bundle_rows(db: Path) -> None:
    """Each task's row now names the other's file, hash and size: every hash still matches."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT b.task_id, b.path, b.sha256, b.size_bytes FROM bundles b JOIN tasks t "
            "ON t.id = b.task_id WHERE t.name IN ('t1', 't2') ORDER BY t.name"
        ).fetchall()
        for (task_id, *_), (_, path, sha, size) in zip(rows, rows[::-1], strict=True):
            conn.execute(
                "UPDATE bundles SET path = ?, sha256 = ?, size_bytes = ? WHERE task_id = ?", (path, sha, size, task_id)
            )


def _task_sql(column_expr: str, task: str = "t2") -> callable:
    return lambda db: _sql(db, f"UPDATE tasks SET {column_expr} WHERE name = ?", task)


def _eval_sql(expr: str, kind: str, task: str = "t1", after: int | None = None) -> callable:
    where = f" AND after_tasks = {after:d}" if after else ""
    return lambda db: _sql(
        db,
        f"UPDATE evaluations SET {expr} WHERE kind = ? AND metric = 'accuracy'{where} AND "
        "task_id = (SELECT id FROM tasks WHERE name = ?)",
        kind,
        task,
    )


def _bundle_sql(expr: str, task: str = "t3") -> callable:
    return lambda db: _sql(db, f"UPDATE bundles SET {expr} WHERE task_id = (SELECT id FROM tasks WHERE name = ?)", task)


MUTATIONS = {
    **{f"bundle-bit-flip-{t}-{s}": (lambda db, t=t, s=s: _flip(db, t, s)) for t in TASKS for s in range(2)},
    **{f"bundle-truncated-to-{k}": (lambda db, k=k: _truncate(db, "t2", k)) for k in (0.0, 0.5, 0.99)},
    "bundle-appended-bytes": lambda db: _bundle(db, "t3").write_bytes(_bundle(db, "t3").read_bytes() + b"\0"),
    "bundle-deleted": lambda db: _bundle(db, "t1").unlink(),
    "bundle-files-swapped": _swap_files,
    "bundle-replaced-by-symlink": _symlink,
    "registration-score-edited": _eval_sql("value = value + 0.01", "registration"),
    "registration-row-deleted": lambda db: _sql(
        db, "DELETE FROM evaluations WHERE kind = 'registration' AND task_id = (SELECT id FROM tasks WHERE name = 't2')"
    ),
    "predictions-hash-edited": _eval_sql("predictions_sha256 = '" + "0" * 64 + "'", "registration"),
    "reeval-score-edited": _eval_sql("value = value - 0.25", "reeval", after=3),
    "bundle-hash-edited": _bundle_sql("sha256 = '" + "1" * 64 + "'"),
    "bundle-size-edited": _bundle_sql("size_bytes = size_bytes + 1"),
    "bundle-rows-swapped-with-hashes": _swap_bundle_rows,
    "param-counts-edited": lambda db: _json_edit(
        db, "bundles", "param_counts", "t2", lambda v: v.update(total=v["total"] - 1)
    ),
    "labels-reordered": lambda db: _json_edit(db, "tasks", "labels", "t1", lambda v: v.reverse()),
    "golden-logits-edited": lambda db: _json_edit(
        db, "tasks", "proof", "t3", lambda v: v["golden"]["logits"][0].__setitem__(0, 0.5)
    ),
    "proof-hash-edited": lambda db: _json_edit(
        db,
        "tasks",
        "proof",
        "t3",
        lambda v: [p["bundle_files"].__setitem__("t1", "2" * 64) for p in (v["before"], v["after"])],
    ),
    "eval-data-hash-edited": lambda db: _json_edit(
        db, "tasks", "data", "t2", lambda v: v["splits"]["test"].update(sha256="3" * 64)
    ),
    "base-model-hash-edited": lambda db: _sql(db, "UPDATE base_models SET sha256 = ?", "4" * 64),
}
# Consistent forgeries: no hash disagrees with any other, so only the signature can tell.
SIGNED_ONLY = {
    "positions-swapped": lambda db: [
        _sql(db, s)
        for s in (
            "UPDATE tasks SET position = -1 WHERE name = 't1'",
            "UPDATE tasks SET position = 1 WHERE name = 't2'",
            "UPDATE tasks SET position = 2 WHERE name = 't1'",
        )
    ],
    "hyperparameters-edited": lambda db: _json_edit(db, "bundles", "hyperparameters", "t1", lambda v: v.update(lr=0.5)),
    "bundle-rows-swapped-with-hashes": _swap_bundle_rows,
    "registration-score-edited": _eval_sql("value = value + 0.01", "registration"),
    "signature-removed": _task_sql("signature = NULL"),
    "signature-copied-from-another-task": lambda db: _sql(
        db, "UPDATE tasks SET signature = (SELECT signature FROM tasks WHERE name = 't1') WHERE name = 't2'"
    ),
    "data-provenance-edited": lambda db: _json_edit(db, "tasks", "data", "t3", lambda v: v["sizes"].update(train=99)),
}
TALLY: dict[str, dict] = {}


@pytest.mark.parametrize("which", ["plain", "signed"])
def test_clean_registries_raise_no_alarm(templates, tmp_path, monkeypatch, which):
    if which == "signed":
        monkeypatch.setenv(KEY_ENV, KEY)
    found = detect(_copy(templates, which, tmp_path))
    assert found == {"fsck": False, "audit": False, "audit_failed": []}


@pytest.mark.parametrize("name", MUTATIONS)
def test_every_mutation_is_detected(templates, tmp_path, name):
    db = _copy(templates, "plain", tmp_path)
    MUTATIONS[name](db)
    found = detect(db)
    TALLY[f"plain/{name}"] = found
    assert found["fsck"] or found["audit"], name


@pytest.mark.parametrize("name", SIGNED_ONLY)
def test_consistent_forgeries_are_caught_by_the_signature(templates, tmp_path, monkeypatch, name):
    db = _copy(templates, "signed", tmp_path)
    SIGNED_ONLY[name](db)
    monkeypatch.setenv(KEY_ENV, KEY)
    found = detect(db)
    TALLY[f"signed/{name}"] = found
    assert found["fsck"] and found["audit"], name
    assert Registry(db).fsck().signature_mismatches


def test_tally_figures():
    """Prints the measured figures quoted in docs/reliability.md (runs last in this module)."""
    detected = sum(f["fsck"] or f["audit"] for f in TALLY.values())
    figures = {
        "mutations": len(TALLY),
        "detected": detected,
        "by_fsck": sum(f["fsck"] for f in TALLY.values()),
        "by_audit": sum(f["audit"] for f in TALLY.values()),
    }
    print(f"\nFIGURES tamper {json.dumps(figures)}")
    assert detected == len(TALLY)


def test_signing_is_canonical_and_keyed():
    fields = {"b": [1, 2.5, None], "a": {"y": "é", "x": 1}}
    assert canonical(fields) == canonical(json.loads(json.dumps(fields)))
    assert canonical(fields).isascii() and b" " not in canonical(fields)
    signature = sign(b"k" * 16, fields)
    assert verify(b"k" * 16, fields, signature)
    assert not verify(b"j" * 16, fields, signature)
    assert not verify(b"k" * 16, {**fields, "b": [1, 2.5]}, signature)
    assert not verify(b"k" * 16, fields, None)


def test_signed_registry_refuses_writers_without_the_key(templates, tmp_path, monkeypatch):
    db = _copy(templates, "signed", tmp_path)
    registry = Registry(db)
    before = registry.dump()
    with pytest.raises(RegistryError, match=KEY_ENV):
        registry.add_evaluations([EvaluationDraft("t1", "test", "accuracy", 0.5, kind="audit")], after_tasks=3)
    assert registry.dump() == before
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        registry.fsck()
    monkeypatch.setenv(KEY_ENV, KEY)
    registry.add_evaluations([EvaluationDraft("t1", "test", "accuracy", 0.5, kind="audit")], after_tasks=3)
    assert registry.fsck().ok


def test_an_unsigned_registry_is_signed_on_request(templates, tmp_path, monkeypatch):
    db = _copy(templates, "plain", tmp_path)
    monkeypatch.setenv(KEY_ENV, KEY)
    registry = Registry(db)
    assert registry.fsck().signature_mismatches == list(TASKS)
    assert registry.sign_tasks() == list(TASKS)
    assert registry.fsck().ok
    monkeypatch.setenv(KEY_ENV, KEY + "-other")
    assert registry.fsck().signature_mismatches == list(TASKS)
