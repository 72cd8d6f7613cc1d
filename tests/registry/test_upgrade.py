"""A registry written by the release before task versions (schema 4; tests/fixtures/registry_schema4,
made by its build.py with that release's code) upgrades in place through the alembic migrations
(registry/migrate.py) and then passes `fsck` and `audit`, on SQLite and on PostgreSQL.

The fixture holds tasks alpha and beta (ready) and gamma (removed by the old release: its files
deleted). Its tasks were trained on the tiny encoder in its `encoder/` folder, which the registry
records by a relative path, so each test runs from a copy of the folder.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from continual_adapters.cli import cli
from continual_adapters.core.errors import SchemaVersionError
from continual_adapters.registry import SCHEMA_VERSION, Registry
from continual_adapters.registry.schema import Base
from continual_adapters.training.probe import CROSS_DEVICE_TOLERANCE
from tests.registry.helpers import DOWNGRADE_TO_4
from tests.support.cli import cli_ok
from tests.support.versions import data_args

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "registry_schema4"
#: The tables of schema 4, in an order their foreign keys accept, and their columns then.
TABLES = ("cadapt_meta", "base_models", "tasks", "bundles", "evaluations", "task_artifacts")


def restore_database(target: Path) -> Path:
    """The old release's registry.db, from the SQL text it was dumped to (registry.sql: the same
    rows, types and schema; a database file is not kept in the repository)."""
    with sqlite3.connect(target) as conn:
        conn.executescript((FIXTURE / "registry.sql").read_text(encoding="utf-8"))
    return target


@pytest.fixture
def old_registry(tmp_path, monkeypatch) -> Path:
    """A copy of the fixture, the working directory there (the registry names its encoder `encoder`)."""
    folder = tmp_path / "old"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("*.py", "*.sql", "__pycache__"))
    restore_database(folder / "registry.db")
    monkeypatch.chdir(folder)
    return folder


def sqlite_rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}


def audit_passes(*registry_args) -> dict:
    report = json.loads(cli_ok(*registry_args, "audit", "--json").output)
    assert report["ok"] and [t["task"] for t in report["tasks"]] == ["alpha", "beta"], report
    return report


def test_the_fixture_is_what_the_old_release_wrote(tmp_path):
    with sqlite3.connect(restore_database(tmp_path / "registry.db")) as conn:
        assert conn.execute("SELECT value FROM cadapt_meta").fetchall() == [("4",)]
        assert conn.execute("SELECT name, status FROM tasks ORDER BY position").fetchall() == [
            ("alpha", "ready"),
            ("beta", "ready"),
            ("gamma", "retired"),
        ]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == set(TABLES), "no table of schema 5, no alembic bookkeeping"
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 300_000


def test_cadapt_upgrade_migrates_the_old_release_registry_and_it_passes_fsck_and_audit(old_registry):
    before = sqlite_rows(old_registry / "registry.db")
    with pytest.raises(SchemaVersionError, match="schema version 4, older.*cadapt upgrade"):
        Registry("registry.db").tasks()
    report = json.loads(cli_ok("--registry", "registry.db", "upgrade", "--json").output)
    assert (report["from_version"], report["to_version"], report["upgraded"]) == (4, SCHEMA_VERSION, True)
    backup = Path(report["backup"])
    assert backup.parent == old_registry and backup.name.startswith("registry.db.schema4-")
    assert sqlite_rows(backup) == before, "the backup is the registry as it was"

    after = sqlite_rows(old_registry / "registry.db")
    for table in TABLES[1:]:
        width = len(before[table][0])
        assert [row[:width] for row in after[table]] == before[table], f"{table}: every old row and value survives"
    reg = Registry("registry.db")
    assert [(t.name, t.family, t.version, t.status) for t in reg.tasks(include_retired=True)] == [
        ("alpha", "alpha", 1, "ready"),
        ("beta", "beta", 1, "ready"),
        ("gamma", "gamma", 1, "retired"),
    ]
    gamma = {v.key: v for v in reg.versions()}["gamma"]
    assert not gamma.restorable and gamma.retired_at == reg.task("gamma").updated_at, "removed before: purged"
    assert json.loads(cli_ok("--registry", "registry.db", "fsck", "--json").output)["ok"]
    audit_passes("--registry", "registry.db")
    again = cli_ok("--registry", "registry.db", "upgrade").output
    assert "at schema 5 already: nothing to do" in again


def test_the_upgraded_registry_takes_a_new_version_and_promotes_it(old_registry):
    cli_ok("--registry", "registry.db", "upgrade")
    args = data_args(old_registry / "new-data", 5)
    common = ["--epochs", "1", "--adapter-size", "4", "--max-length", "16", "--quiet"]
    added = json.loads(
        cli_ok("--registry", "registry.db", "add-task", "alpha", "--new-version", *args, *common, "--json").output
    )
    assert (added["task"], added["version"], added["position"], added["unchanged"]) == ("alpha@2", 2, 4, True)
    # The old release recorded its probes as plain "cpu", on whatever CPU built the fixture: they are
    # held to the cross-device tolerance, not bit identity (training/probe.py).
    assert set(added["probes"]) == {"alpha", "beta"}, "the old release's tasks confirmed by their probes"
    assert max(added["probes"].values()) <= CROSS_DEVICE_TOLERANCE
    cli_ok("--registry", "registry.db", "promote", "alpha@2")
    assert Registry("registry.db").resolve("alpha").name == "alpha@2"
    report = json.loads(cli_ok("--registry", "registry.db", "audit", "--json").output)
    assert report["ok"] and [t["task"] for t in report["tasks"]] == ["alpha", "beta", "alpha@2"]


def test_opening_an_old_sqlite_registry_from_the_command_line_upgrades_it_after_a_backup(old_registry):
    result = CliRunner().invoke(cli, ["--registry", "registry.db", "tasks", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Note: upgraded registry" in result.stderr and "from schema 4 to 5 (backup: " in result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["alpha", "beta"]
    assert len(list(old_registry.glob("registry.db.schema4-*.bak"))) == 1
    quiet = CliRunner().invoke(cli, ["--registry", "registry.db", "tasks"], catch_exceptions=False)
    assert quiet.exit_code == 0 and "Note:" not in quiet.stderr, "upgraded once"


def load_into_postgres(backend, source: Path) -> None:
    """The fixture's rows in a schema-4 PostgreSQL registry: the newest schema with the steps since
    4 undone, then every row copied with its id (and each id sequence moved past it)."""
    reg = backend.registry()
    reg.init()
    reg.close()
    for statement in (*DOWNGRADE_TO_4, "ALTER TABLE tasks ALTER COLUMN name TYPE VARCHAR(64)"):
        backend.execute(statement)
    old = create_engine(f"sqlite:///{source}")
    new = create_engine(backend.url)
    with old.connect() as reading, new.begin() as writing:
        for name in TABLES[1:]:
            table = Base.metadata.tables[name]
            columns = [c["name"] for c in reading.execute(text(f"PRAGMA table_info({name})")).mappings()]
            rows = [dict(r) for r in reading.execute(select(*(table.c[c] for c in columns))).mappings()]
            writing.execute(table.insert(), rows)
            writing.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
            )
    old.dispose()
    new.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_old_release_registry_upgrades_on_postgresql_too(backend, old_registry):
    load_into_postgres(backend, old_registry / "registry.db")
    shutil.copytree(old_registry / "registry", backend.artifacts, dirs_exist_ok=True)
    args = backend.cli_args()
    with pytest.raises(SchemaVersionError, match="version 4, older"):
        backend.registry().tasks()
    refused = CliRunner().invoke(cli, [*args, "tasks"])
    assert refused.exit_code == 1 and "cadapt upgrade" in refused.stderr, "a server database is never upgraded unasked"
    report = json.loads(cli_ok(*args, "upgrade", "--json").output)
    assert (report["from_version"], report["upgraded"], report["backup"]) == (4, True, None)
    assert backend.execute("SELECT value FROM cadapt_meta") == [(str(SCHEMA_VERSION),)]
    assert json.loads(cli_ok(*args, "fsck", "--json").output)["ok"]
    audit_passes(*args)
    reg = backend.registry()
    assert [(t.name, t.version) for t in reg.tasks()] == [("alpha", 1), ("beta", 1)]
    assert reg.set_alias("beta", "production", 1).key == "beta" and reg.resolve("beta@production").name == "beta"
    reg.close()
