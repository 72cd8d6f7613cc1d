"""Layer 5, the task registry: the `Registry` facade (writes and the commit protocol), its
connection and schema version (database.py), read queries, fsck, the SQLAlchemy schema, plain
records, the database engine and write lock, the artifact folder, and optional HMAC signing.

May import `core`, `metrics`, `data` and `files`; never torch, so commands that only read the
registry start fast.
"""

from continual_adapters.registry.records import (
    BaseModelRecord,
    BundleDraft,
    BundleRecord,
    EvaluationDraft,
    EvaluationRecord,
    FsckReport,
    TaskRecord,
)
from continual_adapters.registry.registry import CRASH_POINTS, Registry, resolve_url
from continual_adapters.registry.schema import SCHEMA_VERSION

__all__ = [
    "CRASH_POINTS",
    "SCHEMA_VERSION",
    "BaseModelRecord",
    "BundleDraft",
    "BundleRecord",
    "EvaluationDraft",
    "EvaluationRecord",
    "FsckReport",
    "Registry",
    "TaskRecord",
    "resolve_url",
]
