"""The SQLite engine's connection set-up under contention: a connection that meets another one
busy with the file (switching it to WAL, or recovering its WAL index) waits instead of failing."""

import sqlite3

import pytest

from continual_adapters.registry import engine


class Busy:
    """A cursor whose first `locked` statements fail as SQLite fails them: "database is locked" at
    once, without waiting on the busy timeout (what 8 processes opening a new registry together met)."""

    def __init__(self, locked: int, mode: str = "delete"):
        self.locked, self.mode, self.statements = locked, mode, []

    def execute(self, sql: str) -> "Busy":
        self.statements.append(sql)
        if self.locked:
            self.locked -= 1
            raise sqlite3.OperationalError("database is locked")
        if sql == "PRAGMA journal_mode=WAL":
            self.mode = "wal"
        return self

    def fetchone(self) -> tuple[str]:
        return (self.mode,)


def test_wal_mode_is_set_after_the_file_stops_being_busy():
    cursor = Busy(locked=3)
    engine.use_wal(cursor)  # type: ignore[arg-type]
    assert cursor.mode == "wal" and cursor.statements[-1] == "PRAGMA journal_mode=WAL"


def test_a_file_already_in_wal_mode_is_not_switched_again():
    cursor = Busy(locked=0, mode="wal")
    engine.use_wal(cursor)  # type: ignore[arg-type]
    assert cursor.statements == ["PRAGMA journal_mode"]


def test_a_file_busy_past_the_timeout_or_another_error_is_raised(monkeypatch):
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 50)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        engine.use_wal(Busy(locked=10**6))  # type: ignore[arg-type]

    class Broken(Busy):
        def execute(self, sql: str) -> "Busy":
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        engine.use_wal(Broken(locked=0))  # type: ignore[arg-type]
