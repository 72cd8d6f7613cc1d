"""SQLAlchemy tables of the registry database, kept apart from the Registry logic that uses them.

The table layout is the on-disk contract behind ``SCHEMA_VERSION``: changing anything here means
bumping that version and adding an alembic revision that takes the previous one there
(migrations/versions/), so it lives in one file that is easy to review on its own. The ``*Row``
classes are public only so the registry's own modules can share them; code outside the registry
works with records.py.
"""

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from continual_adapters.core.config import HEADS

STATUSES = ("pending", "ready", "failed", "retired")
EVAL_KINDS = ("registration", "reeval", "audit", "skipped")
# How an earlier task's matrix entry was confirmed: "full" re-scored it on its data, "probe" proved
# its outputs identical on the probe stored at its registration (the last full score carried forward).
CONFIRMATIONS = ("full", "probe")
# Files a task keeps beside its bundle: kind -> folder under the artifact root. The kinds are what
# the CHECK on task_artifacts.kind allows, so adding one is a schema change.
# "fisher" (EWC's running Fisher) and "replay" (experience replay's memory) carry a shared-encoder
# method's state from one task to the next (stream/methods.py).
ARTIFACT_FOLDERS: dict[str, str] = {"probe": "probes", "centroids": "centroids", "fisher": "fisher", "replay": "replay"}
ARTIFACT_KINDS: tuple[str, ...] = tuple(ARTIFACT_FOLDERS)

# Schema history (migrations/versions/, one alembic revision per version): 2 signatures, 3 confirmations
# and artifact files, 4 the artifact kinds of EWC and replay, 5 task versions, promotions, aliases
# and retention. Changing a table here means a new revision there and a bump here.
SCHEMA_VERSION = 5


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class _UTCDateTime(TypeDecorator[datetime]):
    """SQLite drops tzinfo, so store naive UTC everywhere and hand back aware datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )
    type_annotation_map = {datetime: _UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class MetaRow(Base):
    __tablename__ = "cadapt_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class BaseModelRow(Base):
    __tablename__ = "base_models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(512))
    revision: Mapped[str | None] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    num_parameters: Mapped[int]
    architecture: Mapped[str] = mapped_column(String(128))
    hidden_size: Mapped[int]
    num_layers: Mapped[int]
    created_at: Mapped[datetime]


class TaskRow(Base):
    """One stored version of a task. ``name`` is the version's key (core/config.version_key: the
    task's name for version 1, ``name@N`` after), ``family`` the task's name shared by its versions.
    ``retired_at`` is set while the version is retired (schema 5); its bundle row is kept until it
    is purged, so a retired version with a bundle can be restored and one without cannot."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("head", HEADS), name="head"),
        Index("ix_tasks_family_version", "family", "version", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    position: Mapped[int | None] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(String(16))
    labels: Mapped[list[str]]
    head: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(64), default="adapters")
    primary_metric: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    proof: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    owner_pid: Mapped[int | None]
    owner_host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # HMAC-SHA256 of the task's critical fields (signing.py); NULL when no key was set (schema 2).
    signature: Mapped[str | None] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(server_default=text("1"))
    retired_at: Mapped[datetime | None]


class BundleRow(Base):
    __tablename__ = "bundles"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)
    path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    config: Mapped[dict[str, Any]]
    param_counts: Mapped[dict[str, Any]]
    hyperparameters: Mapped[dict[str, Any]]
    seed: Mapped[int]
    library_versions: Mapped[dict[str, Any]]
    git_commit: Mapped[str | None] = mapped_column(String(64))
    wall_time_s: Mapped[float]
    created_at: Mapped[datetime]


class EvaluationRow(Base):
    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("task_id", "after_tasks", "split", "metric", "kind"),
        CheckConstraint(_in("kind", EVAL_KINDS), name="kind"),
        # Reads of one kind across all tasks (task_table's registration scores) touch only those rows;
        # per-task reads already use the unique constraint's index, which starts with task_id.
        Index("ix_evaluations_kind_task_id", "kind", "task_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    after_tasks: Mapped[int]
    split: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float]
    predictions_sha256: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    # One of CONFIRMATIONS on rows that confirm an earlier task; NULL on registration rows and on
    # rows written before schema 3 (a reeval row without one was a full re-score).
    confirmation: Mapped[str | None] = mapped_column(String(16))


class ArtifactRow(Base):
    """A file a task keeps beside its bundle (its probe, its centroids), at most one per kind."""

    __tablename__ = "task_artifacts"
    __table_args__ = (
        UniqueConstraint("task_id", "kind"),
        CheckConstraint(_in("kind", ARTIFACT_KINDS), name="kind"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    created_at: Mapped[datetime]


class PromotionRow(Base):
    """One promotion: which version of a task became its current one, when, and by whom. Rows are
    only ever added, so a task's latest row names its current version and the earlier ones are its
    history, rollbacks included; a task never promoted is served at version 1."""

    __tablename__ = "task_promotions"
    __table_args__ = (Index("ix_task_promotions_family", "family"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    family: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    promoted_at: Mapped[datetime]
    promoted_by: Mapped[str] = mapped_column(String(255))


class AliasRow(Base):
    """A named pointer at one version of a task (``sst2@production``), for clients that pin a version
    instead of following promotions; moved by setting it again."""

    __tablename__ = "task_aliases"
    __table_args__ = (UniqueConstraint("family", "alias"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    family: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    set_at: Mapped[datetime]
    set_by: Mapped[str] = mapped_column(String(255))
