"""Alembic's entry point, run by `alembic.command` for every upgrade or stamp (registry/migrate.py).

It never opens a connection of its own: the registry passes the one it holds, inside the write
transaction that took the writers' lock, so the migration, the version stamp and everything the
registry checks around them commit together or not at all, and two processes upgrading at once
run it exactly once.
"""

from alembic import context

from continual_adapters.registry.migrate import VERSION_TABLE
from continual_adapters.registry.schema import Base

context.configure(
    connection=context.config.attributes["connection"], target_metadata=Base.metadata, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
