"""Database engines for the registry, and the one lock every registry writer takes.

Several `cadapt add-task` processes may write one registry at once, and several may run
`cadapt init` at once on an empty database. Both are safe only if writers are serialised:

* SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented
  pysqlite recipe), so the write lock is taken at BEGIN, not at the first INSERT, and a second
  writer waits on the busy timeout instead of failing with "database is locked" on upgrade.
* PostgreSQL: READ COMMITTED serialises nothing, so every write transaction first takes one
  transaction-scoped advisory lock (``pg_advisory_xact_lock``); it is released at COMMIT or
  ROLLBACK, including when the client dies, so a killed writer never leaves it held.

With either, two writers never both read the same max(position), and schema creation or
migration by processes starting together runs exactly once.
"""

import sqlite3
import time

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

# "cadapt" in ASCII: one fixed key, shared by every registry on a server (they are rarely busy).
WRITE_LOCK_KEY = 0x636164617074
BUSY_TIMEOUT_MS = 60_000


def make_engine(url: URL, sqlite: bool) -> Engine:
    if not sqlite:
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (f"busy_timeout={BUSY_TIMEOUT_MS}", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        use_wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("cadapt_write") else "BEGIN")

    return engine


def use_wal(cursor: sqlite3.Cursor) -> None:
    """Puts the file in WAL mode, which then persists in it. Only the conversion needs the file to
    itself, and SQLite answers a conversion that meets another connection with "database is locked"
    at once, without waiting on the busy timeout: processes opening a new registry together (a
    test starts 8) would fail. So the mode is read first, and a conversion is retried until the
    busy timeout has passed."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def take_write_lock(session: Session) -> None:
    """SQLite already holds its lock from BEGIN IMMEDIATE; other servers need it taken explicitly."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
