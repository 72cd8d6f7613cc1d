"""Running the registry's alembic migrations (migrations/) through alembic's API, and the SQLite
backup taken before them.

Why the API and not the ``alembic`` command: a registry is upgraded by whoever opens it (`cadapt
upgrade`, or `add-task` on an older file), from any working directory, so nothing may depend on an
alembic.ini beside them; the script location is this package's ``migrations`` folder. Why on the
caller's connection: the registry runs them inside its write transaction, under the writers' lock
(engine.py), so a migration, its version stamp and the check that it was needed commit as one.

Registries older than alembic (schema 1 to 4, which recorded only ``cadapt_meta.schema_version``)
are first stamped at the revision of the version they record, ``schema<N>``; every revision then
writes its version number there too, so releases before this one still read a version they can
refuse ("newer than this code") instead of a database they do not understand.

alembic is imported inside the functions: commands that only read a registry of the current schema
never load it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from continual_adapters.core.errors import SchemaVersionError
from continual_adapters.registry.schema import SCHEMA_VERSION

#: Where the migrations live, as alembic's package-resource spelling (no path on disk needed).
SCRIPT_LOCATION = "continual_adapters.registry:migrations"
#: Alembic's bookkeeping table, prefixed so that a database shared with another alembic-managed
#: application keeps the two apart.
VERSION_TABLE = "cadapt_alembic_version"


def revision_for(schema_version: int) -> str:
    """The alembic revision that leaves a registry at `schema_version`."""
    return f"schema{schema_version}"


def has_revision(schema_version: int) -> bool:
    return 1 <= schema_version <= SCHEMA_VERSION


def _config(connection: Connection):  # type: ignore[no-untyped-def]  # alembic's Config, imported lazily
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def stamp_newest(connection: Connection) -> None:
    """Marks a registry just created from schema.py as being at the newest revision."""
    from alembic import command

    command.stamp(_config(connection), revision_for(SCHEMA_VERSION))


def upgrade(connection: Connection, stored: int) -> None:
    """Takes a registry recording schema `stored` to the newest, on `connection`, in its transaction."""
    from alembic import command

    config = _config(connection)
    if not inspect(connection).has_table(VERSION_TABLE):
        command.stamp(config, revision_for(stored))
    command.upgrade(config, revision_for(SCHEMA_VERSION))


def record_schema_version(version: int) -> None:
    """Called by each revision's upgrade: the version older releases (and every session) check."""
    from alembic import op

    op.execute(text("UPDATE cadapt_meta SET value = :v WHERE key = 'schema_version'").bindparams(v=str(version)))


def refuse_downgrade(version: int) -> None:
    """Registries only move forward: going back is restoring the backup taken before the upgrade."""
    raise SchemaVersionError(
        f"schema {version} is not downgraded in place: restore the copy `cadapt upgrade` made before "
        "upgrading (SQLite), or your own database backup"
    )


def backup_sqlite(db_file: Path, version: int) -> Path:
    """A consistent copy of the SQLite database beside it, named after the version it holds, through
    SQLite's online backup (committed pages, the write-ahead log included). The artifact folder is
    not copied: an upgrade changes no file in it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = db_file.with_name(f"{db_file.name}.schema{version}-{stamp}.bak")
    counter = 1
    while target.exists():
        counter += 1
        target = db_file.with_name(f"{db_file.name}.schema{version}-{stamp}-{counter}.bak")
    source, copy = sqlite3.connect(db_file), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return target
