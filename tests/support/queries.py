"""Counting the SQL statements code sends to any database: how a test pins that a read of the
registry makes the same number of queries however many tasks it holds (a count, not a timing,
so it holds on a busy machine; speed is measured by bench/scale.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@contextmanager
def counted_queries() -> Iterator[list[str]]:
    """Yields the list every statement executed inside the block is appended to."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)
