"""Schema 3: how each earlier task's score was confirmed (evaluations.confirmation, an index for reads
of one kind) and the files a task keeps beside its bundle (task_artifacts: its probe, its centroids).

The table is created as schema 3 had it, with the artifact kinds of that release; schema 4 widens
them. Spelled out here rather than taken from schema.py, which only knows the newest layout.

Revision ID: schema3
Revises: schema2
"""

import sqlalchemy as sa
from alembic import op

from continual_adapters.registry.migrate import record_schema_version, refuse_downgrade

revision = "schema3"
down_revision = "schema2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE evaluations ADD COLUMN confirmation VARCHAR(16)")
    op.execute("CREATE INDEX ix_evaluations_kind_task_id ON evaluations (kind, task_id)")
    op.create_table(
        "task_artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('probe', 'centroids')", name=op.f("ck_task_artifacts_kind")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_artifacts_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_task_artifacts"),
        sa.UniqueConstraint("task_id", "kind", name="uq_task_artifacts_task_id_kind"),
    )
    record_schema_version(3)


def downgrade() -> None:
    refuse_downgrade(3)
