"""Layer 5, the task registry: the `Registry` facade (writes and the commit protocol), its
connection and schema version (database.py), read queries, fsck, per-task artifact files
(task_artifacts.py), task versions with promotion and aliases (versions.py), retention
(retention.py), the SQLAlchemy schema and its alembic migrations (migrate.py, migrations/), plain
records, the database engine and write lock, the artifact folder, and optional HMAC signing.

May import `core`, `metrics`, `data` and `files`; never torch, so commands that only read the
registry start fast.
"""

from continual_adapters.registry.records import (
    AliasRecord,
    ArtifactDraft,
    ArtifactRecord,
    BaseModelRecord,
    BundleDraft,
    BundleRecord,
    EvaluationDraft,
    EvaluationRecord,
    FsckReport,
    GcReport,
    PromotionRecord,
    TaskRecord,
    TaskSummary,
    UpgradeReport,
    VersionSummary,
)
from continual_adapters.registry.registry import CRASH_POINTS, Registry, resolve_url
from continual_adapters.registry.schema import ARTIFACT_KINDS, SCHEMA_VERSION

__all__ = [
    "ARTIFACT_KINDS",
    "CRASH_POINTS",
    "SCHEMA_VERSION",
    "AliasRecord",
    "ArtifactDraft",
    "ArtifactRecord",
    "BaseModelRecord",
    "BundleDraft",
    "BundleRecord",
    "EvaluationDraft",
    "EvaluationRecord",
    "FsckReport",
    "GcReport",
    "PromotionRecord",
    "Registry",
    "TaskRecord",
    "TaskSummary",
    "UpgradeReport",
    "VersionSummary",
    "resolve_url",
]
