"""Retention: retiring a task version without deleting it, restoring it, purging it, and the garbage
collection that purges what was retired long enough ago.

Why removal is two steps: deleting a bundle at once made every mistaken `cadapt remove` final, and
a rollback needed an archive exported beforehand. A retired version is no longer served or
confirmed by later additions, but its bundle and artifact rows and files stay exactly as they were,
so `restore` gives back the same bytes (checked against their recorded sha256 before it is served
again). `purge` is exact unlearning, as removal was before: the bundle, the probe (two of the task's
evaluation inputs) and every other artifact are deleted, rows first and files after the commit;
its evaluations stay, as the accuracy matrix's history. `gc` purges retired versions older than a
retention period.

Files follow rows here as everywhere in the registry: a crash between the commit and an unlink
leaves an unreferenced file, which `fsck` lists and repairs, never a row without its file.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from continual_adapters.core.errors import (
    ConfigError,
    IntegrityError,
    LifecycleError,
    VersionNotReadyError,
    VersionPurgedError,
    VersionRetiredError,
)
from continual_adapters.core.versions import parse_reference
from continual_adapters.registry.artifacts import file_problem, remove_entry
from continual_adapters.registry.records import GcReport, TaskRecord, to_record
from continual_adapters.registry.schema import ArtifactRow, BundleRow, TaskRow, utc_now
from continual_adapters.registry.versions import RegistryVersions


def _shown(task: TaskRow) -> str:
    return f"{task.family}@{task.version}"


class RegistryRetention(RegistryVersions):
    """The retention methods of `Registry`. Each takes a reference (core/versions.py): a bare name
    means the task's current version, so name the version (``sst2@2``) to act on another."""

    @staticmethod
    def _files_of(s: Session, task: TaskRow) -> list[tuple[str, int]]:
        """The paths and sizes of a version's bundle and artifact files, as its rows record them."""
        bundle = s.scalar(select(BundleRow).where(BundleRow.task_id == task.id))
        artifacts = s.scalars(select(ArtifactRow).where(ArtifactRow.task_id == task.id)).all()
        files = [(a.path, a.size_bytes) for a in artifacts]
        return files + ([] if bundle is None else [(bundle.path, bundle.size_bytes)])

    def _drop_files(self, s: Session, task: TaskRow) -> list[tuple[str, int]]:
        """Deletes a version's bundle and artifact rows and re-signs it; returns `_files_of` it, for
        the caller to delete after the commit."""
        files = self._files_of(s, task)
        bundle = s.scalar(select(BundleRow).where(BundleRow.task_id == task.id))
        self._delete_artifacts(s, task)
        if bundle is not None:
            s.delete(bundle)
        self._resign(s, [task])
        return files

    def _remove_files(self, files: list[tuple[str, int]]) -> None:
        for rel, _ in files:
            remove_entry(self.store, rel)

    def remove_task(self, name: str, purge: bool = False) -> TaskRecord:
        """Retires the version `name` references: no longer served, listed or confirmed by later
        additions, its rows, evaluations and files kept for `restore`. With `purge` its bundle and
        artifacts are deleted for good as well (a retired version is purged in place). Refused, with
        the typed error saying why, for a version that is unfinished, or already retired (without
        `purge`) or already purged."""
        parsed = parse_reference(name)
        with self._write() as s:
            task = self._pick(s, parsed)
            if task.status in ("pending", "failed"):
                raise VersionNotReadyError(
                    f"task {_shown(task)} is {task.status}; only ready tasks can be removed (`cadapt fsck --repair` "
                    "clears unfinished ones)"
                )
            has_bundle = s.scalar(select(BundleRow.id).where(BundleRow.task_id == task.id)) is not None
            if task.status == "retired" and not has_bundle:
                raise VersionPurgedError(f"task {_shown(task)} is retired and purged already")
            if task.status == "retired" and not purge:
                raise VersionRetiredError(f"task {_shown(task)} is retired already (`--purge` deletes its files)")
            now = utc_now()
            files = self._drop_files(s, task) if purge else []
            if task.status == "ready":
                task.status, task.retired_at = "retired", now
            task.updated_at = now
            s.flush()
            record = to_record(TaskRecord, task)
        self._remove_files(files)
        return record

    def retire(self, name: str) -> TaskRecord:
        """`remove_task` without purging: the version can be restored until it is purged."""
        return self.remove_task(name)

    def purge(self, name: str) -> TaskRecord:
        """`remove_task(purge=True)`: exact unlearning of a ready or retired version."""
        return self.remove_task(name, purge=True)

    def restore(self, name: str) -> TaskRecord:
        """Serves a retired version again, with the very files it had: each is checked against its
        recorded size and sha256 first (IntegrityError naming the file otherwise, and nothing
        changes). VersionPurgedError once its files are gone; LifecycleError for a version that is
        not retired. Additions made while it was retired did not confirm it: `cadapt audit` fills
        those entries of the accuracy matrix by replaying its probe."""
        parsed = parse_reference(name)
        with self._write() as s:
            task = self._pick(s, parsed)
            if task.status != "retired":
                raise LifecycleError(f"task {_shown(task)} is {task.status}, not retired: nothing to restore")
            bundle = s.scalar(select(BundleRow).where(BundleRow.task_id == task.id))
            if bundle is None:
                raise VersionPurgedError(f"task {_shown(task)} was purged: its bundle and probe are gone for good")
            kept = [("bundle", bundle.path, bundle.sha256, bundle.size_bytes)] + [
                (a.kind, a.path, a.sha256, a.size_bytes)
                for a in s.scalars(select(ArtifactRow).where(ArtifactRow.task_id == task.id))
            ]
            for what, rel, sha256, size in kept:
                problem = file_problem(self.store, rel, sha256, size)
                if problem is not None:
                    raise IntegrityError(f"cannot restore {_shown(task)}: its {what} at {rel}: {problem[1]}")
            task.status, task.retired_at, task.updated_at = "ready", None, utc_now()
            s.flush()
            return to_record(TaskRecord, task)

    def gc(self, older_than: timedelta, *, dry_run: bool = False, now: datetime | None = None) -> GcReport:
        """Purges every retired version retired at least `older_than` ago (before `now`, by default
        the present); retired versions within the period, ready ones and purged ones are left alone.
        With `dry_run` nothing is deleted and the report says what would be."""
        if older_than < timedelta(0):
            raise ConfigError(f"a retention period cannot be negative, got {older_than}")
        cutoff = (now or utc_now()) - older_than
        with self._session(write=not dry_run) as s:
            retired = s.execute(
                select(TaskRow)
                .join(BundleRow, BundleRow.task_id == TaskRow.id)
                .where(TaskRow.status == "retired")
                .order_by(TaskRow.family, TaskRow.version)
            ).scalars()
            due: list[TaskRow] = []
            kept: list[TaskRow] = []
            for task in retired:
                (due if (task.retired_at or task.updated_at) <= cutoff else kept).append(task)
            files: list[tuple[str, int]] = []
            for task in due:
                if dry_run:
                    files += self._files_of(s, task)
                else:
                    files += self._drop_files(s, task)
                    task.updated_at = utc_now()
            report = GcReport(
                deleted=[t.name for t in due],
                files=sorted(rel for rel, _ in files),
                bytes_freed=sum(size for _, size in files),
                kept=[t.name for t in kept],
                dry_run=dry_run,
            )
        if not dry_run:
            self._remove_files(files)
        return report
