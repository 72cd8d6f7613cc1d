"""Registry backends for tests: SQLite always, PostgreSQL when `CADAPT_TEST_POSTGRES_URL` names a server.

`.ci/run` starts a throwaway PostgreSQL on loopback and exports the URL. Locally, without it, the
PostgreSQL parametrizations are skipped; in CI (``CI=true``) a missing server fails them instead,
so CI can never pass by silently testing SQLite only.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

POSTGRES_ENV = "CADAPT_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = f"{POSTGRES_ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


class Backend:
    """One empty registry location: a SQLite file, or a fresh PostgreSQL database plus a folder."""

    def __init__(self, kind: str, tmp_path: Path):
        self.kind = kind
        self.artifacts = tmp_path / "artifacts"
        self._admin = None
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'registry.db'}"
            return
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        server = make_url(postgres_url())
        self.database = f"cadapt_test_{uuid.uuid4().hex[:12]}"
        self._admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.database}"'))
        self.url = server.set(database=self.database).render_as_string(hide_password=False)

    def registry(self):
        from continual_adapters.registry.registry import Registry

        return Registry(self.url, artifacts=None if self.kind == "sqlite" else self.artifacts)

    def cli_args(self) -> list[str]:
        return ["--registry", self.url] + ([] if self.kind == "sqlite" else ["--artifacts", str(self.artifacts)])

    def execute(self, statement: str, **params) -> list[tuple]:
        """Raw SQL as a person with database access would run it, bypassing the registry."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def close(self) -> None:
        if self._admin is not None:
            from sqlalchemy import text

            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            self._admin.dispose()
