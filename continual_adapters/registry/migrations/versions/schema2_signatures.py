"""Schema 2: each task's HMAC signature over its critical fields (registry/signing.py).

Revision ID: schema2
Revises: schema1
"""

from alembic import op

from continual_adapters.registry.migrate import record_schema_version, refuse_downgrade

revision = "schema2"
down_revision = "schema1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN signature VARCHAR(64)")
    record_schema_version(2)


def downgrade() -> None:
    refuse_downgrade(2)
