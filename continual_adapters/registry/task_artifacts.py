"""Per-task artifact files beside the bundle (a task's probe, its centroids): their rows, reads and
replacement, and the re-signing every task write ends with.

Why a module of its own: an artifact follows the bundle's write protocol (``write_artifact`` in
registry.py writes the file atomically, ``finish_task`` commits its row with the bundle's), but it
also has a life after registration that a bundle does not: ``add_artifact`` attaches or replaces
one on a ready task, which is how tasks registered before artifacts existed get their probe. That
part, and the reads, would push registry.py past what one file should hold, so `Registry` inherits
them from `RegistryArtifacts` as it inherits the checks from `RegistryChecks` (fsck.py).

Files follow rows: a replaced or removed artifact's file is unlinked only after its row change is
committed, so a crash leaves at worst an unreferenced file, which fsck lists and repairs.
"""

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from continual_adapters.core.errors import ConfigError, IntegrityError, RegistryError
from continual_adapters.files.atomic import is_sha256
from continual_adapters.registry import signing
from continual_adapters.registry.artifacts import file_problem, read_checked, remove_entry, task_file
from continual_adapters.registry.fsck import RegistryChecks
from continual_adapters.registry.records import ArtifactDraft, ArtifactRecord, to_record
from continual_adapters.registry.schema import ARTIFACT_FOLDERS, ARTIFACT_KINDS, ArtifactRow, TaskRow, utc_now
from continual_adapters.registry.signed import signed_fields, signed_fields_of


def artifact_folder(kind: str) -> str:
    """The folder under the artifact root that holds files of ``kind``; ConfigError for an unknown kind."""
    if kind not in ARTIFACT_FOLDERS:
        raise ConfigError(f"artifact kind must be one of {', '.join(ARTIFACT_KINDS)}, got {kind!r}")
    return ARTIFACT_FOLDERS[kind]


class RegistryArtifacts(RegistryChecks):
    """The artifact methods of `Registry`, and the re-signing its writers share."""

    def _resign(self, s: Session, tasks: list[TaskRow]) -> None:
        """Re-signs tasks whose signed fields this transaction changed. Without the key, a registry
        that holds signatures is refused rather than left with signatures that no longer match."""
        key = signing.registry_key()
        if key is None:
            if s.scalar(select(func.count()).select_from(TaskRow).where(TaskRow.signature.is_not(None))):
                raise RegistryError(f"registry {self._shown} is signed: set {signing.KEY_ENV} to write to it")
            return
        s.flush()
        fields = signed_fields_of(s, tasks)
        for task in tasks:
            task.signature = signing.sign(key, fields[task.id])

    def _check_artifact(self, name: str, draft: ArtifactDraft) -> None:
        """The draft names the file ``write_artifact`` wrote for this task, and that file is intact."""
        folder = artifact_folder(draft.kind)
        if not is_sha256(draft.sha256):
            raise ConfigError(f"{draft.kind} sha256 must be 64 lowercase hex characters, got {draft.sha256!r}")
        expected = task_file(folder, name, draft.sha256)
        if draft.path != expected:
            raise IntegrityError(
                f"{draft.kind} of task {name!r} is {draft.path}, not {expected} as write_artifact names it"
            )
        problem = file_problem(self.store, draft.path, draft.sha256, draft.size_bytes)
        if problem is not None:
            raise IntegrityError(f"{draft.kind} of task {name!r} at {draft.path}: {problem[1]}")

    def _insert_artifacts(self, s: Session, task: TaskRow, drafts: Sequence[ArtifactDraft], now: datetime) -> None:
        """Rows for a task being finished, in the transaction that commits its bundle."""
        kinds = [d.kind for d in drafts]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"task {task.name!r} was given two artifacts of the same kind: {sorted(kinds)}")
        for draft in drafts:
            self._check_artifact(task.name, draft)
            s.add(ArtifactRow(task_id=task.id, created_at=now, **asdict(draft)))

    @staticmethod
    def _delete_artifacts(s: Session, task: TaskRow) -> list[str]:
        """Deletes a task's artifact rows; returns their paths, for the caller to unlink after commit."""
        rows = s.scalars(select(ArtifactRow).where(ArtifactRow.task_id == task.id)).all()
        for row in rows:
            s.delete(row)
        return [row.path for row in rows]

    def add_artifact(self, name: str, draft: ArtifactDraft) -> ArtifactRecord:
        """Attaches ``draft`` (from ``write_artifact``) to a ready task, replacing its artifact of the
        same kind, in one transaction that also re-signs the task; the replaced file is removed
        after the commit. For tasks registered before they had one (e.g. a probe backfilled later)."""
        with self._write() as s:
            task = self._task_row(s, name)
            if task.status != "ready":
                raise RegistryError(f"task {name!r} is {task.status}; artifacts can only be added to ready tasks")
            self._check_artifact(name, draft)
            row = s.scalar(select(ArtifactRow).filter_by(task_id=task.id, kind=draft.kind))
            old = None if row is None else row.path
            if row is None:
                row = ArtifactRow(task_id=task.id, kind=draft.kind)
                s.add(row)
            row.path, row.sha256, row.size_bytes, row.created_at = draft.path, draft.sha256, draft.size_bytes, utc_now()
            task.updated_at = row.created_at
            self._resign(s, [task])
            s.flush()
            record = to_record(ArtifactRecord, row, task=name)
        if old is not None and old != draft.path:
            remove_entry(self.store, old)
        return record

    def artifact(self, name: str, kind: str) -> ArtifactRecord | None:
        """Task ``name``'s artifact of ``kind``, or None when it has none."""
        artifact_folder(kind)
        with self._read() as s:
            task = self._task_row(s, name)
            row = s.scalar(select(ArtifactRow).filter_by(task_id=task.id, kind=kind))
            return None if row is None else to_record(ArtifactRecord, row, task=name)

    def artifacts(self, name: str) -> list[ArtifactRecord]:
        """Every artifact of task ``name``, by kind."""
        with self._read() as s:
            task = self._task_row(s, name)
            rows = s.scalars(select(ArtifactRow).where(ArtifactRow.task_id == task.id).order_by(ArtifactRow.kind))
            return [to_record(ArtifactRecord, r, task=name) for r in rows]

    def artifacts_of(self, names: Sequence[str], kinds: Sequence[str] | None = None) -> dict[str, list[ArtifactRecord]]:
        """`artifacts` for many tasks in one query, only those of `kinds` if given: the report sums
        the method state of every task, which took a query per task."""
        for kind in kinds or ():
            artifact_folder(kind)
        with self._read() as s:
            stmt = select(ArtifactRow, TaskRow.name).join(TaskRow, TaskRow.id == ArtifactRow.task_id)
            stmt = stmt.where(TaskRow.name.in_(names))
            rows = s.execute(stmt.where(ArtifactRow.kind.in_(kinds)) if kinds is not None else stmt).all()
        out: dict[str, list[ArtifactRecord]] = {name: [] for name in names}
        for row, name in sorted(rows, key=lambda r: r[0].kind):
            out[name].append(to_record(ArtifactRecord, row, task=name))
        return out

    def artifact_path(self, name: str, kind: str) -> Path:
        record = self.artifact(name, kind)
        if record is None:
            raise RegistryError(f"task {name!r} has no {kind} artifact")
        return self._safe_path(record.path)

    def read_artifact(self, name: str, kind: str) -> bytes:
        """The file's bytes, checked against its row's size and sha256 (IntegrityError naming the file
        otherwise; RegistryError when the task has no such artifact or its file is missing). With
        ``CADAPT_REGISTRY_KEY`` set the task's signature is checked too, as ``verify_bundle`` does."""
        artifact_folder(kind)
        key = signing.registry_key()
        with self._read() as s:
            task = self._task_row(s, name)
            row = s.scalar(select(ArtifactRow).filter_by(task_id=task.id, kind=kind))
            if row is None:
                raise RegistryError(f"task {name!r} has no {kind} artifact (status {task.status})")
            if key is not None and not signing.verify(key, signed_fields(s, task), task.signature):
                raise IntegrityError(f"task {name!r}: its recorded fields do not match their signature")
            path, sha256, size = row.path, row.sha256, row.size_bytes
        return read_checked(self.store, path, sha256, size, f"{kind} of task {name!r}")

    def read_artifacts(self, kind: str, names: Sequence[str]) -> dict[str, bytes]:
        """`read_artifact` for many tasks with one query: the bytes of each named task's artifact of
        ``kind``, checked against its row's size and sha256 (and, with a key, each task's signature).
        Tasks without one are left out."""
        artifact_folder(kind)
        key = signing.registry_key()
        with self._read() as s:
            rows = s.execute(
                select(TaskRow, ArtifactRow)
                .join(ArtifactRow, ArtifactRow.task_id == TaskRow.id)
                .where(TaskRow.name.in_(names), ArtifactRow.kind == kind)
            ).all()
            if key is not None:
                fields = signed_fields_of(s, [task for task, _ in rows])
                for task, _ in rows:
                    if not signing.verify(key, fields[task.id], task.signature):
                        raise IntegrityError(f"task {task.name!r}: its recorded fields do not match their signature")
            found = {task.name: (row.path, row.sha256, row.size_bytes) for task, row in rows}
        return {
            name: read_checked(self.store, *found[name], f"{kind} of task {name!r}") for name in names if name in found
        }
