"""Registries of earlier schema versions upgrade in place on `init`: every row and file survives and
the upgraded schema has exactly the tables, indexes and constraints of a new registry."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from continual_adapters.core.errors import SchemaVersionError
from continual_adapters.registry import SCHEMA_VERSION, EvaluationDraft, Registry
from tests.registry.helpers import DOWNGRADE_TO_2, DOWNGRADE_TO_4, add_task

B_REGISTERED = EvaluationDraft("b", "test", "accuracy", 0.6)


def ready(backend) -> Registry:
    reg = backend.registry()
    reg.init()
    return reg


def schema_shape(reg: Registry) -> dict:
    """Tables with their columns, indexes and named constraints, as the database reports them."""
    found = inspect(reg._engine)
    return {
        table: (
            sorted(c["name"] for c in found.get_columns(table)),
            sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(table)),
            sorted(str(u["name"]) for u in found.get_unique_constraints(table)),
            sorted(str(c["name"]) for c in found.get_check_constraints(table)),
            sorted(str(f["name"]) for f in found.get_foreign_keys(table)),
        )
        for table in found.get_table_names()
    }


def test_version_2_registry_is_migrated_in_place(backend):
    reg = ready(backend)
    add_task(reg, "a")
    add_task(reg, "b", [EvaluationDraft("a", "test", "accuracy", 0.4, kind="reeval"), B_REGISTERED])
    before, fresh = reg.dump(), schema_shape(reg)
    assert "ck_task_artifacts_kind" in fresh["task_artifacts"][3] and "confirmation" in fresh["evaluations"][0]
    reg.close()
    for statement in DOWNGRADE_TO_2:
        backend.execute(statement)
    reg = backend.registry()
    with pytest.raises(SchemaVersionError, match="version 2, older.*cadapt upgrade"):
        reg.tasks()
    assert "task_artifacts" not in schema_shape(reg) and "confirmation" not in schema_shape(reg)["evaluations"][0]
    reg.init()
    assert backend.execute("SELECT value FROM cadapt_meta") == [(str(SCHEMA_VERSION),)] and SCHEMA_VERSION == 5
    assert schema_shape(reg) == fresh, "a migrated registry has exactly the tables and indexes of a new one"
    assert reg.dump() == before, "every row and file survives the migration"
    assert reg.confirmations() == (["a", "b"], [["registration", None], ["full", "registration"]])
    assert reg.add_artifact("a", reg.write_artifact("a", "probe", b"backfilled")).task == "a"
    add_task(reg, "c", [EvaluationDraft("a", "test", "accuracy", 0.4, kind="reeval", confirmation="probe")])
    assert [e.confirmation for e in reg.evaluations("a", kind="reeval")] == [None, "probe"]
    reg.init()
    assert reg.fsck().ok
    reg.close()


def downgrade_to_3(backend) -> None:
    """Turns a schema-4 registry back into the schema-3 one of the previous release: artifact kinds
    probe and centroids only (SQLite keeps its CHECK in the table's DDL, so the table is rebuilt)."""
    for statement in DOWNGRADE_TO_4:
        backend.execute(statement)
    old_check = "kind IN ('probe', 'centroids')"
    if backend.kind == "postgresql":
        backend.execute("ALTER TABLE task_artifacts DROP CONSTRAINT ck_task_artifacts_kind")
        backend.execute(f"ALTER TABLE task_artifacts ADD CONSTRAINT ck_task_artifacts_kind CHECK ({old_check})")
    else:
        [(ddl,)] = backend.execute("SELECT sql FROM sqlite_master WHERE name = 'task_artifacts'")
        widened = "kind IN ('probe', 'centroids', 'fisher', 'replay')"
        assert widened in ddl
        backend.execute("ALTER TABLE task_artifacts RENAME TO old_artifacts")
        backend.execute(ddl.replace(widened, old_check))
        backend.execute("INSERT INTO task_artifacts SELECT * FROM old_artifacts")
        backend.execute("DROP TABLE old_artifacts")
    backend.execute("UPDATE cadapt_meta SET value = '3' WHERE key = 'schema_version'")


def test_version_3_registry_is_migrated_to_take_method_state(backend):
    reg = ready(backend)
    add_task(reg, "a")
    assert reg.add_artifact("a", reg.write_artifact("a", "probe", b"probe bytes")).task == "a"
    before, fresh = reg.dump(), schema_shape(reg)
    reg.close()
    downgrade_to_3(backend)
    reg = backend.registry()
    with pytest.raises(SchemaVersionError, match="version 3, older.*cadapt upgrade"):
        reg.tasks()
    reg.init()
    reg.init()  # idempotent
    assert backend.execute("SELECT value FROM cadapt_meta") == [(str(SCHEMA_VERSION),)]
    assert schema_shape(reg) == fresh, "a migrated registry has exactly the tables and indexes of a new one"
    assert reg.dump() == before, "every row and file survives the migration"
    assert reg.read_artifact("a", "probe") == b"probe bytes"
    for kind in ("fisher", "replay"):
        assert reg.add_artifact("a", reg.write_artifact("a", kind, kind.encode())).kind == kind
    with pytest.raises(SQLIntegrityError):
        backend.execute(
            "INSERT INTO task_artifacts (task_id, kind, path, sha256, size_bytes, created_at) "
            "SELECT task_id, 'other', path, sha256, size_bytes, created_at FROM task_artifacts WHERE kind = 'probe'"
        )
