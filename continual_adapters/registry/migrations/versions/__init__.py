"""One alembic revision per registry schema version (alembic skips this file when it scans them)."""
