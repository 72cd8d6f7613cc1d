"""Schema 4: the artifact kinds of EWC (its running Fisher) and experience replay (its memory), which
carry a shared-encoder method's state from one task to the next.

The CHECK on task_artifacts.kind is replaced. PostgreSQL alters the constraint; SQLite cannot, so
its table is rebuilt under the old one's name with rows and ids copied as they are (nothing
refers to task_artifacts, so dropping the old copy cascades nowhere).

Revision ID: schema4
Revises: schema3
"""

import sqlalchemy as sa
from alembic import op

from continual_adapters.registry.migrate import record_schema_version, refuse_downgrade

revision = "schema4"
down_revision = "schema3"
branch_labels = None
depends_on = None

KINDS = "kind IN ('probe', 'centroids', 'fisher', 'replay')"
COLUMNS = "id, task_id, kind, path, sha256, size_bytes, created_at"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE task_artifacts DROP CONSTRAINT ck_task_artifacts_kind")
        op.execute(f"ALTER TABLE task_artifacts ADD CONSTRAINT ck_task_artifacts_kind CHECK ({KINDS})")
    else:
        op.execute("ALTER TABLE task_artifacts RENAME TO task_artifacts_v3")
        op.create_table(
            "task_artifacts",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("task_id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("path", sa.String(512), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("size_bytes", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.CheckConstraint(KINDS, name=op.f("ck_task_artifacts_kind")),
            sa.ForeignKeyConstraint(
                ["task_id"], ["tasks.id"], name="fk_task_artifacts_task_id_tasks", ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name="pk_task_artifacts"),
            sa.UniqueConstraint("task_id", "kind", name="uq_task_artifacts_task_id_kind"),
        )
        op.execute(f"INSERT INTO task_artifacts ({COLUMNS}) SELECT {COLUMNS} FROM task_artifacts_v3")
        op.execute("DROP TABLE task_artifacts_v3")
    record_schema_version(4)


def downgrade() -> None:
    refuse_downgrade(4)
