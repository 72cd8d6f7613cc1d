"""One registry's database and artifact folder: where they are, sessions on them, the schema version.

Split out of registry.py so the write protocol there reads on its own: everything here is about
reaching the database at all (URL, engine, artifact root), turning driver failures into
RegistryError, and making sure the schema is the one this code speaks (``init`` creates or
migrates it, every session checks it). `RegistryQueries`, `RegistryChecks` and `Registry` build
on `RegistryDatabase` for their sessions.
"""

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from continual_adapters.core.errors import RegistryError, SchemaVersionError
from continual_adapters.registry.artifacts import bundles_dir, safe_path
from continual_adapters.registry.engine import make_engine, take_write_lock
from continual_adapters.registry.schema import MIGRATIONS, SCHEMA_VERSION, Base, MetaRow

# Lets ``with Registry(...) as reg`` and ``Registry(...).ensure()`` keep the subclass type.
DatabaseT = TypeVar("DatabaseT", bound="RegistryDatabase")


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """Made absolute so a later chdir cannot silently point the same object at another database."""
    url = os.fspath(url or os.environ.get("CADAPT_REGISTRY") or "registry.db")
    return url if "://" in url else f"sqlite:///{os.path.abspath(os.path.expanduser(url))}"


class RegistryDatabase:
    """A registry database plus its artifact folder, and the sessions every registry method runs in."""

    def __init__(self, url: str | os.PathLike[str] | None = None, artifacts: str | os.PathLike[str] | None = None):
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
        self.root = self._artifact_root(artifacts)
        try:
            self._engine = make_engine(parsed, self._sqlite)
        except (sa_exc.NoSuchModuleError, ImportError) as err:
            raise RegistryError(f"no database driver for {self._shown}: {err}") from err
        self._write_engine = self._engine.execution_options(cadapt_write=True)

    def _artifact_root(self, artifacts: str | os.PathLike[str] | None) -> Path:
        if artifacts is not None:
            return Path(os.path.abspath(artifacts))
        if self._db_file is not None:
            stem = self._db_file.with_suffix("")
            return stem if stem != self._db_file else self._db_file.with_name(self._db_file.name + ".artifacts")
        if os.environ.get("CADAPT_ARTIFACTS"):
            return Path(os.path.abspath(os.environ["CADAPT_ARTIFACTS"]))
        raise RegistryError(
            f"registry {self._shown} is not a SQLite file, so bundle files need a home: "
            "pass artifacts= or set CADAPT_ARTIFACTS to a shared folder"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shown!r}, artifacts={str(self.root)!r})"

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
            hint = (
                "; run `cadapt init` to migrate it" if self._migratable(stored) else "; use a matching cadapt release"
            )
            raise SchemaVersionError(
                f"registry at {self._shown} has schema version {stored}, {age} than this code "
                f"(version {SCHEMA_VERSION}){hint}"
            )

    @staticmethod
    def _migratable(stored: str) -> bool:
        return (
            stored.isdigit()
            and int(stored) < SCHEMA_VERSION
            and all(v in MIGRATIONS for v in range(int(stored), SCHEMA_VERSION))
        )

    def initialized(self) -> bool:
        if self._db_file is not None and not self._db_file.exists():
            return False
        with self._session(write=False, check=False) as s:
            return self._stored_version(s) is not None

    def init(self) -> None:
        """Creates or migrates the schema exactly once even when many processes start together: the
        version is read and the DDL run inside one write transaction, under the writers' lock.
        Idempotent, and checks the version before any DDL so an old tool cannot half-migrate."""
        if self._db_file is not None:
            self._db_file.parent.mkdir(parents=True, exist_ok=True)
        with self._session(write=True, check=False) as s:
            stored = self._stored_version(s)
            if stored is None:
                Base.metadata.create_all(s.connection())
                s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
            elif stored != str(SCHEMA_VERSION):
                if not self._migratable(stored):
                    self._check_version(stored)
                for version in range(int(stored), SCHEMA_VERSION):
                    for step in MIGRATIONS[version]:
                        if callable(step):
                            step(s.connection())
                        else:
                            s.execute(text(step))
                Base.metadata.create_all(s.connection())
                s.merge(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
        bundles_dir(self.root, create=True)

    def ensure(self: DatabaseT) -> DatabaseT:
        """Creates a missing registry and migrates an older one, so `add-task` needs no separate `init`."""
        if self._db_file is None or self._db_file.exists():
            with self._session(write=False, check=False) as s:
                if self._stored_version(s) == str(SCHEMA_VERSION):
                    return self
        self.init()
        return self
