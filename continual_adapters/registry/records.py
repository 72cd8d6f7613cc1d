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
    #: The task's name, shared by all its versions; `name` is this version's key (schema 5).
    family: str = ""
    version: int = 1
    #: When the version was retired (None while it is not): it is purged too if it has no bundle.
    retired_at: datetime | None = None

    @property
    def ref(self) -> str:
        """The reference that names exactly this version, whatever is current: ``sst2@1``."""
        return f"{self.family or self.name}@{self.version}"


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
    its bundle row, None once the task is purged or before it is ready (a retired version keeps its
    bundle until purged)."""

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
class AccuracyMatrix:
    """The accuracy matrix and how each entry was confirmed (``Registry.matrix``): ``values[i][j]`` is
    task j's score after the (i+1)-th task joined, ``confirmed_by[i][j]`` how it was obtained."""

    tasks: list[str]
    values: list[list[float | None]]
    confirmed_by: list[list[str | None]]


@dataclass(frozen=True)
class FsckReport:
    """``repaired`` means orphans and dead pending rows listed here were removed by this run.

    ``missing_files`` and ``checksum_mismatches`` name a ready task whose bundle is missing or
    altered by the task's name, and one whose artifact is by "task:kind" (e.g. ``"sst2:probe"``).

    A retired version's files are listed in ``retired_files``; a problem with one is reported like a
    ready task's, by its key, since restoring it would serve those bytes.

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
    #: Files kept for retired versions (until `cadapt gc` or `remove --purge`): referenced, restorable,
    #: never orphans, and never removed by a repair. Their bytes are checked like a ready task's.
    retired_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        leftovers = not self.repaired and (self.orphan_files or self.dead_pending)
        return not (leftovers or self.missing_files or self.checksum_mismatches or self.signature_mismatches)


@dataclass(frozen=True)
class PromotionRecord:
    """One promotion of a task: the version made current (its key and number), when and by whom."""

    task: str
    key: str
    version: int
    promoted_at: datetime
    promoted_by: str


@dataclass(frozen=True)
class AliasRecord:
    """A named pointer at one version of a task, as last set."""

    task: str
    alias: str
    key: str
    version: int
    set_at: datetime
    set_by: str


@dataclass(frozen=True)
class VersionSummary:
    """One stored version of a task, as `cadapt versions` lists it. ``restorable`` says a retired
    version still has its bundle (retained, not purged); ``score`` is its registration score of the
    primary metric on its evaluation split; ``bundle_bytes`` counts what it keeps on disk."""

    task: str
    key: str
    version: int
    status: str
    position: int | None
    current: bool
    aliases: list[str]
    created_at: datetime
    retired_at: datetime | None
    restorable: bool
    score: float | None
    bundle_bytes: int | None


@dataclass(frozen=True)
class GcReport:
    """What `gc` deleted (or, with ``dry_run``, would delete): the retired versions past retention,
    by key, and the files and bytes that went with them; ``kept`` are retired versions still within."""

    deleted: list[str]
    files: list[str]
    bytes_freed: int
    kept: list[str]
    dry_run: bool


@dataclass(frozen=True)
class UpgradeReport:
    """An upgrade's outcome: the schema versions before and after, whether anything ran, and where
    the SQLite backup taken first is (None for a server database, or when nothing ran)."""

    from_version: int
    to_version: int
    upgraded: bool
    backup: str | None = None


# Every record type to_record builds, so each call is typed with the record it returns.
RecordT = TypeVar(
    "RecordT",
    bound=BaseModelRecord
    | TaskRecord
    | BundleRecord
    | EvaluationRecord
    | ArtifactDraft
    | ArtifactRecord
    | PromotionRecord
    | AliasRecord,
)


def to_record(cls: type[RecordT], row: object, **extra: object) -> RecordT:
    """A record of type ``cls`` from an ORM row (or a draft): each field is read from the row by
    name unless ``extra`` supplies it, e.g. a bundle's task name, which its row only holds as an id."""
    values: dict[str, Any] = {f.name: extra[f.name] if f.name in extra else getattr(row, f.name) for f in fields(cls)}
    return cls(**values)
