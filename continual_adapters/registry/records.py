"""Plain frozen dataclasses the Registry hands out and takes in, so callers never touch ORM rows.

``*Record`` is a row as stored; ``*Draft`` is what a caller supplies before the registry adds ids,
positions and timestamps. They have no database dependency, so they are importable on their own.
"""

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar


@dataclass(frozen=True)
class BaseModelRecord:
    name: str
    revision: str | None
    sha256: str
    num_parameters: int
    architecture: str
    hidden_size: int
    num_layers: int
    created_at: datetime


@dataclass(frozen=True)
class TaskRecord:
    name: str
    position: int | None
    status: str
    labels: list[str]
    head: str
    method: str
    primary_metric: str
    data: dict[str, Any]
    proof: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    owner_pid: int | None
    owner_host: str | None
    signature: str | None = None


@dataclass(frozen=True)
class BundleDraft:
    path: str
    sha256: str
    size_bytes: int
    config: dict[str, Any]
    param_counts: dict[str, Any]
    hyperparameters: dict[str, Any]
    seed: int
    library_versions: dict[str, Any]
    git_commit: str | None
    wall_time_s: float


@dataclass(frozen=True)
class BundleRecord(BundleDraft):
    """A bundle as stored: its draft, the task it belongs to and when it was committed."""

    task: str
    created_at: datetime


@dataclass(frozen=True)
class EvaluationDraft:
    task: str
    split: str
    metric: str
    value: float
    predictions_sha256: str | None = None
    kind: str = "registration"
    confirmation: str | None = None


@dataclass(frozen=True)
class EvaluationRecord:
    task: str
    after_tasks: int
    split: str
    metric: str
    value: float
    predictions_sha256: str | None
    kind: str
    created_at: datetime
    confirmation: str | None = None


@dataclass(frozen=True)
class ArtifactDraft:
    """A file of one ``kind`` (schema.ARTIFACT_KINDS) that ``Registry.write_artifact`` wrote for a task."""

    kind: str
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ArtifactRecord(ArtifactDraft):
    """An artifact as stored: its draft, the task it belongs to and when it was committed."""

    task: str
    created_at: datetime


@dataclass(frozen=True)
class TaskSummary:
    """One line of ``cadapt tasks``: ``score`` is the registration score of the primary metric, on the
    task's eval split (else the first split by name); ``total_params`` and ``bundle_bytes`` come from
    its bundle row, None once the task is retired or before it is ready."""

    position: int | None
    name: str
    status: str
    method: str
    num_labels: int
    primary_metric: str
    score: float | None
    total_params: int | None
    bundle_bytes: int | None


@dataclass(frozen=True)
class FsckReport:
    """``repaired`` means orphans and dead pending rows listed here were removed by this run.

    ``missing_files`` and ``checksum_mismatches`` name a ready task whose bundle is missing or
    altered by the task's name, and one whose artifact is by "task:kind" (e.g. ``"sst2:probe"``).

    ``signature_mismatches`` (tasks whose signed fields no longer match their HMAC, or that are
    unsigned) is only filled when ``CADAPT_REGISTRY_KEY`` is set; fsck never repairs it, since
    only a person can tell which side of the mismatch is true.
    """

    orphan_files: list[str]
    dead_pending: list[str]
    missing_files: list[str]
    checksum_mismatches: list[str]
    repaired: bool
    signature_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        leftovers = not self.repaired and (self.orphan_files or self.dead_pending)
        return not (leftovers or self.missing_files or self.checksum_mismatches or self.signature_mismatches)


# Every record type to_record builds, so each call is typed with the record it returns.
RecordT = TypeVar(
    "RecordT", bound=BaseModelRecord | TaskRecord | BundleRecord | EvaluationRecord | ArtifactDraft | ArtifactRecord
)


def to_record(cls: type[RecordT], row: object, **extra: object) -> RecordT:
    """A record of type ``cls`` from an ORM row (or a draft): each field is read from the row by
    name unless ``extra`` supplies it, e.g. a bundle's task name, which its row only holds as an id."""
    values: dict[str, Any] = {f.name: extra[f.name] if f.name in extra else getattr(row, f.name) for f in fields(cls)}
    return cls(**values)
