"""Schema 5: task versions, promotions, aliases and retention.

* tasks.family and tasks.version: every row is one version of a task. Rows of earlier releases are
  version 1 of the task they name (family = name), so their keys, bundle files, probes and
  signatures stay as they are. tasks.name widens to 80 characters for keys like ``name@12``.
* tasks.retired_at: when a version was retired. A task retired by an earlier release had its files
  deleted at once, so it is retired since its last update and, having no bundle row, purged.
* task_promotions (which version is current, when and by whom) and task_aliases (named pointers).

SQLite can add a NOT NULL column only with a default and cannot alter one, so ``family`` gets an
empty default there, filled at once; PostgreSQL drops that default and widens ``name`` in place.

Revision ID: schema5
Revises: schema4
"""

import sqlalchemy as sa
from alembic import op

from continual_adapters.registry.migrate import record_schema_version, refuse_downgrade

revision = "schema5"
down_revision = "schema4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("tasks", sa.Column("family", sa.String(64), nullable=False, server_default=""))
    op.add_column("tasks", sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")))
    op.add_column("tasks", sa.Column("retired_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE tasks SET family = name, version = 1")
    op.execute("UPDATE tasks SET retired_at = updated_at WHERE status = 'retired'")
    if postgresql:
        op.alter_column("tasks", "family", server_default=None)
        op.alter_column("tasks", "name", type_=sa.String(80), existing_type=sa.String(64), existing_nullable=False)
    op.create_index("ix_tasks_family_version", "tasks", ["family", "version"], unique=True)
    op.create_table(
        "task_promotions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("promoted_at", sa.DateTime(), nullable=False),
        sa.Column("promoted_by", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_promotions_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_task_promotions"),
    )
    op.create_index("ix_task_promotions_family", "task_promotions", ["family"])
    op.create_table(
        "task_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("set_at", sa.DateTime(), nullable=False),
        sa.Column("set_by", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_aliases_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_task_aliases"),
        sa.UniqueConstraint("family", "alias", name="uq_task_aliases_family_alias"),
    )
    record_schema_version(5)


def downgrade() -> None:
    refuse_downgrade(5)
