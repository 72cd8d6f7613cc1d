"""Builders shared by the registry tests: a fresh registry, tasks through the full commit
protocol, raw SQL on the SQLite file, and a pid that is certainly dead.

Bundle bytes are random: the registry only cares that the file on disk is the one the row names.
"""

import os
import sqlite3
import subprocess
from pathlib import Path

from continual_adapters.registry import BundleDraft, EvaluationDraft, Registry


def make_registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry.db")
    reg.init()
    return reg


def begin(reg: Registry, name: str, **data):
    return reg.begin_task(
        name,
        labels=["neg", "pos"],
        head="classification",
        primary_metric="accuracy",
        data={"source": f"{name}.jsonl", "sizes": {"train": 10}, **data},
    )


def draft(rel: str, sha: str, size: int) -> BundleDraft:
    return BundleDraft(
        path=rel,
        sha256=sha,
        size_bytes=size,
        config={"adapter_size": 8},
        param_counts={"adapter": 6, "layer_norm": 2, "head": 2, "total": 10, "bytes": 40},
        hyperparameters={"lr": 1e-3},
        seed=7,
        library_versions={"torch": "2.x"},
        git_commit="abc123",
        wall_time_s=1.5,
    )


def add_task(
    reg: Registry, name: str, evals: list[EvaluationDraft] | None = None, payload: bytes | None = None, **data
):
    begin(reg, name, **data)
    rel, sha, size = reg.write_file(name, payload if payload is not None else os.urandom(64))
    evals = evals if evals is not None else [EvaluationDraft(name, "test", "accuracy", 0.5)]
    return reg.finish_task(name, draft(rel, sha, size), evals, {"before": {}, "after": {}})


# What turns a schema-5 registry back into the schema-4 one of the release before task versions, on
# either backend: its tables, columns and index, and alembic's bookkeeping, which schema 4 predates.
DOWNGRADE_TO_4 = (
    "DROP TABLE task_aliases",
    "DROP TABLE task_promotions",
    "DROP TABLE cadapt_alembic_version",
    "DROP INDEX ix_tasks_family_version",
    "ALTER TABLE tasks DROP COLUMN family",
    "ALTER TABLE tasks DROP COLUMN version",
    "ALTER TABLE tasks DROP COLUMN retired_at",
    "UPDATE cadapt_meta SET value = '4' WHERE key = 'schema_version'",
)

# What turns a schema-5 registry back into the schema-2 one, on either backend.
DOWNGRADE_TO_2 = DOWNGRADE_TO_4 + (
    "DROP TABLE task_artifacts",
    "DROP INDEX ix_evaluations_kind_task_id",
    "ALTER TABLE evaluations DROP COLUMN confirmation",
    "UPDATE cadapt_meta SET value = '2' WHERE key = 'schema_version'",
)


def sql(reg: Registry, statement: str, *args) -> list[tuple]:
    with sqlite3.connect(reg._db_file) as conn:
        return conn.execute(statement, args).fetchall()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
