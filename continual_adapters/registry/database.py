"""One registry's database and artifact store: where they are, sessions on them, the schema version.

Split out of registry.py so the write protocol there reads on its own: everything here is about
reaching the database at all (URL, engine, artifact store), turning driver failures into
RegistryError, and making sure the schema is the one this code speaks (``init`` creates or
migrates it, every session checks it). `RegistryQueries`, `RegistryChecks` and `Registry` build
on `RegistryDatabase` for their sessions.
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from continual_adapters.core.errors import ConfigError, RegistryError, SchemaVersionError
from continual_adapters.files.storage import ArtifactStore, LocalStore, open_store
from continual_adapters.registry import migrate
from continual_adapters.registry.artifacts import BUNDLES, prepare_folder, safe_path
from continual_adapters.registry.engine import make_engine, take_write_lock
from continual_adapters.registry.records import UpgradeReport
from continual_adapters.registry.schema import SCHEMA_VERSION, Base, MetaRow

# Lets ``with Registry(...) as reg`` and ``Registry(...).ensure()`` keep the subclass type.
DatabaseT = TypeVar("DatabaseT", bound="RegistryDatabase")


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """Made absolute so a later chdir cannot silently point the same object at another database."""
    url = os.fspath(url or os.environ.get("CADAPT_REGISTRY") or "registry.db")
    return url if "://" in url else f"sqlite:///{os.path.abspath(os.path.expanduser(url))}"


class RegistryDatabase:
    """A registry database plus its artifact store, and the sessions every registry method runs in.

    `artifacts` is a folder or a URL (``s3://bucket/prefix``, ``gs://``, ``az://``: files/storage.py);
    `storage_options` are fsspec's options for a URL (credentials, an endpoint), which otherwise come
    from the file system's own environment variables (AWS_ENDPOINT_URL and the like)."""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        artifacts: str | os.PathLike[str] | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ):
        self.url = resolve_url(url)
        try:
            parsed = make_url(self.url)
        except sa_exc.ArgumentError as err:
            raise RegistryError(f"cannot parse registry URL {self.url!r}: {err}") from err
        self._shown = parsed.render_as_string(hide_password=True)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self._db_file: Path | None = None
        if self._sqlite and parsed.database not in (None, "", ":memory:"):
            self._db_file = Path(os.path.abspath(parsed.database))
            parsed = parsed.set(database=str(self._db_file))
        self.store = self._artifact_store(artifacts, storage_options)
        try:
            self._engine = make_engine(parsed, self._sqlite)
        except (sa_exc.NoSuchModuleError, ImportError) as err:
            raise RegistryError(f"no database driver for {self._shown}: {err}") from err
        self._write_engine = self._engine.execution_options(cadapt_write=True)

    def _artifact_store(
        self, artifacts: str | os.PathLike[str] | None, options: Mapping[str, Any] | None
    ) -> ArtifactStore:
        if artifacts is not None:
            return open_store(artifacts, options)
        if self._db_file is not None:
            if options:
                raise ConfigError("storage options are for artifacts at a URL: pass artifacts= as well")
            stem = self._db_file.with_suffix("")
            return LocalStore(
                stem if stem != self._db_file else self._db_file.with_name(f"{self._db_file.name}.artifacts")
            )
        if os.environ.get("CADAPT_ARTIFACTS"):
            return open_store(os.environ["CADAPT_ARTIFACTS"], options)
        raise RegistryError(
            f"registry {self._shown} is not a SQLite file, so bundle files need a home: "
            "pass artifacts= or set CADAPT_ARTIFACTS to a shared folder or a bucket URL"
        )

    @property
    def root(self) -> Path:
        """The local artifact folder. Artifacts on a remote file system have none, and code that would
        open their files by path gets a RegistryError instead of reading some other folder."""
        root = self.store.local_root
        if root is None:
            raise RegistryError(f"the artifacts of registry {self._shown} are at {self.store.url}, not in a folder")
        return root

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shown!r}, artifacts={self.store.url!r})"

    def __enter__(self: DatabaseT) -> DatabaseT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _session(self, write: bool, check: bool = True) -> Iterator[Session]:
        """Unreachable servers, lock timeouts, a full disk or a corrupt file become RegistryError so
        the CLI reports them plainly; constraint violations stay sa IntegrityError for the callers
        that turn a lost race into TaskExistsError."""
        if check and self._db_file is not None and not self._db_file.exists():
            raise self._not_initialised()
        try:
            with Session(self._write_engine if write else self._engine, expire_on_commit=False) as s, s.begin():
                if write:
                    take_write_lock(s)
                if check:
                    self._check_version(self._stored_version(s))
                yield s
        except sa_exc.IntegrityError:
            raise
        except sa_exc.DBAPIError as err:
            raise RegistryError(f"registry {self._shown} cannot be used: {err.orig}") from err

    def _write(self) -> AbstractContextManager[Session]:
        return self._session(write=True)

    def _read(self) -> AbstractContextManager[Session]:
        return self._session(write=False)

    def _safe_path(self, rel: str) -> Path:
        return safe_path(self.root, rel)

    def _not_initialised(self) -> RegistryError:
        return RegistryError(f"registry not initialised at {self._shown}; run `cadapt init`")

    @staticmethod
    def _stored_version(s: Session) -> str | None:
        if not inspect(s.connection()).has_table(MetaRow.__tablename__):
            return None
        row = s.get(MetaRow, "schema_version")
        return None if row is None else row.value

    def _check_version(self, stored: str | None) -> None:
        if stored is None:
            raise self._not_initialised()
        if stored != str(SCHEMA_VERSION):
            age = "newer" if stored.isdigit() and int(stored) > SCHEMA_VERSION else "older"
            hint = "; run `cadapt upgrade` to migrate it"
            hint = hint if self._migratable(stored) else "; use a matching cadapt release"
            raise SchemaVersionError(
                f"registry at {self._shown} has schema version {stored}, {age} than this code "
                f"(version {SCHEMA_VERSION}){hint}"
            )

    @staticmethod
    def _migratable(stored: str) -> bool:
        return stored.isdigit() and int(stored) < SCHEMA_VERSION and migrate.has_revision(int(stored))

    def initialized(self) -> bool:
        if self._db_file is not None and not self._db_file.exists():
            return False
        with self._session(write=False, check=False) as s:
            return self._stored_version(s) is not None

    def schema_version(self) -> int | None:
        """The schema version the database records (None before `init`), whatever this code speaks."""
        if self._db_file is not None and not self._db_file.exists():
            return None
        with self._session(write=False, check=False) as s:
            stored = self._stored_version(s)
        return int(stored) if stored is not None and stored.isdigit() else None

    def init(self) -> UpgradeReport | None:
        """Creates the schema, or upgrades an older one (`upgrade`, with its backup), exactly once
        even when many processes start together: the version is read and the DDL run inside one
        write transaction, under the writers' lock. Idempotent. Returns the upgrade made, if any."""
        if self._db_file is not None:
            self._db_file.parent.mkdir(parents=True, exist_ok=True)
        with self._session(write=True, check=False) as s:
            created = self._stored_version(s) is None
            if created:
                Base.metadata.create_all(s.connection())
                s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
                s.flush()
                migrate.stamp_newest(s.connection())
        report = None if created else self.upgrade()
        prepare_folder(self.store, BUNDLES)
        return report if report is not None and report.upgraded else None

    def upgrade(self, backup: bool = True) -> UpgradeReport:
        """Migrates a registry of an older schema to this code's, in place, through the alembic
        revisions in migrations/ (migrate.py), in one write transaction under the writers' lock.

        With `backup` a SQLite registry is first copied beside itself (`UpgradeReport.backup`),
        taken under that lock so it is exactly the state the migration started from; a server
        database is the operator's to back up (pg_dump), and says so by a None backup. A registry
        already at this schema is left alone; a newer one raises SchemaVersionError."""
        with self._session(write=True, check=False) as s:
            stored = self._stored_version(s)
            if stored is None:
                raise self._not_initialised()
            if stored == str(SCHEMA_VERSION):
                return UpgradeReport(SCHEMA_VERSION, SCHEMA_VERSION, upgraded=False)
            if not self._migratable(stored):
                self._check_version(stored)
            copy = None
            if backup and self._db_file is not None:
                copy = str(migrate.backup_sqlite(self._db_file, int(stored)))
            migrate.upgrade(s.connection(), int(stored))
        return UpgradeReport(int(stored), SCHEMA_VERSION, upgraded=True, backup=copy)

    def upgrade_if_older(self) -> UpgradeReport | None:
        """The automatic upgrade the command line makes when it opens a SQLite registry of an older
        schema: backed up first, then migrated (`upgrade`); None when there was nothing to do. A
        server database is never upgraded behind its operator's back: its sessions keep refusing,
        with the hint to run `cadapt upgrade`."""
        if self._db_file is None or not self._db_file.exists():
            return None
        stored = self.schema_version()
        if stored is None or stored >= SCHEMA_VERSION or not migrate.has_revision(stored):
            return None
        report = self.upgrade(backup=True)
        return report if report.upgraded else None

    def ensure(self: DatabaseT) -> DatabaseT:
        """Creates a missing registry and upgrades an older one (a SQLite file backed up first), so
        `add-task` needs no separate `init`."""
        if self._db_file is None or self._db_file.exists():
            with self._session(write=False, check=False) as s:
                if self._stored_version(s) == str(SCHEMA_VERSION):
                    return self
        self.init()
        return self
