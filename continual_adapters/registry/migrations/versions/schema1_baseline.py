"""Schema 1, the baseline: tasks, bundles, evaluations, base_models and cadapt_meta as the first
release created them. Nothing to run: a registry older than alembic is stamped at the revision of
the schema version it records (migrate.py), and only the steps after it run.

Revision ID: schema1
"""

revision = "schema1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Registries start at this schema; new ones are created at the newest and stamped there."""


def downgrade() -> None:
    """Nothing comes before the baseline."""
