"""Checking the registry against its files and signatures: ``verify_bundle`` for one task, ``fsck``
for all of them (bundles and artifact files), and ``fsck(repair=True)`` for the debris a crashed
registration leaves.

Kept apart from registry.py because it is the other half of the crash-safety claim made there:
registry.py's write protocol promises that a crash at any of its ``CRASH_POINTS`` leaves only a
dead pending row and an unreferenced file, and this module is what finds and removes them. It
only reads, except for that repair, and never changes a row that is still in use.
"""

import socket
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from continual_adapters.core.errors import IntegrityError, RegistryError
from continual_adapters.registry import signing
from continual_adapters.registry.artifacts import file_problem, owned_by, owner_alive, remove_entry, task_entries
from continual_adapters.registry.queries import RegistryQueries
from continual_adapters.registry.records import BundleRecord, FsckReport, to_record
from continual_adapters.registry.schema import ArtifactRow, BundleRow, TaskRow, utc_now
from continual_adapters.registry.signed import signed_fields, signed_fields_of

# A pending row of another host cannot be checked by pid, so it counts as dead after this long.
DEFAULT_STALE_AFTER = 24 * 3600.0


def _signature_problem(s: Session, task: TaskRow, key: bytes, fields: dict[str, Any] | None = None) -> str | None:
    """`fields`: the task's `signed_fields` when the caller read them for many tasks at once."""
    if task.signature is None:
        return f"task {task.name!r} is not signed, but {signing.KEY_ENV} is set"
    if not signing.verify(key, signed_fields(s, task) if fields is None else fields, task.signature):
        return (
            f"task {task.name!r}: its recorded fields do not match their signature "
            "(edited outside cadapt, or signed with another key)"
        )
    return None


class RegistryChecks(RegistryQueries):
    """The checking methods of `Registry`."""

    def verify_bundle(self, name: str) -> BundleRecord:
        """The file against its row, and (with a key) the row against its signature."""
        key = signing.registry_key()
        with self._read() as s:
            task = self._task_row(s, name)
            row = s.scalar(select(BundleRow).where(BundleRow.task_id == task.id))
            if row is None:
                raise RegistryError(f"task {name!r} has no bundle (status {task.status})")
            record = to_record(BundleRecord, row, task=name)
            signature_problem = None if key is None else _signature_problem(s, task, key)
        if signature_problem is not None:
            raise IntegrityError(signature_problem)
        problem = file_problem(self.store, record.path, record.sha256, record.size_bytes)
        if problem is not None:
            raise IntegrityError(f"bundle of task {name!r} at {self.store.location(record.path)}: {problem[1]}")
        return record

    def bundles(self, names: Sequence[str], check_signatures: bool = True) -> dict[str, BundleRecord]:
        """Ready tasks' bundle rows in one query (and, with a key, each row against its signature, as
        `verify_bundle` does): for a caller about to load many bundles, which checks every file's
        sha256 as it reads it (`load_task(expected_sha256=...)`) instead of hashing it twice.
        `check_signatures=False` is for a caller that checks each task's signature itself."""
        key = signing.registry_key() if check_signatures else None
        with self._read() as s:
            rows = s.execute(
                select(TaskRow, BundleRow)
                .join(BundleRow, BundleRow.task_id == TaskRow.id)
                .where(TaskRow.name.in_(names))
            ).all()
            found = {task.name: (task, bundle) for task, bundle in rows}
            fields = signed_fields_of(s, [task for task, _ in rows]) if key is not None else {}
            for name in names:
                if name not in found:
                    self._task_row(s, name)  # TaskNotFoundError for an unknown name
                    raise RegistryError(f"task {name!r} has no bundle")
                task = found[name][0]
                problem = None if key is None else _signature_problem(s, task, key, fields[task.id])
                if problem is not None:
                    raise IntegrityError(problem)
            return {name: to_record(BundleRecord, found[name][1], task=name) for name in names}

    def fsck(self, repair: bool = False, *, stale_after: float = DEFAULT_STALE_AFTER) -> FsckReport:
        """Files are listed before rows are read: a file that exists by then already has its pending
        row committed (begin_task precedes write_file), so a live registration is never an orphan.
        Orphans are removed under the write lock, so an ``add_artifact`` cannot commit a row for a
        file between the check and the unlink (it finds the file gone and fails instead).

        A ready task's bundle problem is reported by task name, an artifact's as "task:kind"; a retired
        version's files are checked the same way (restoring it would serve them) and listed apart."""
        entries = task_entries(self.store)
        host, now, key = socket.gethostname(), utc_now(), signing.registry_key()
        missing: list[str] = []
        mismatched: list[str] = []
        unsigned: list[str] = []
        retired: list[str] = []
        with self._session(write=repair) as s:
            pending = s.scalars(select(TaskRow).where(TaskRow.status == "pending").order_by(TaskRow.name)).all()
            dead = [
                t for t in pending if not owner_alive(t.owner_host, t.owner_pid, t.updated_at, host, now, stale_after)
            ]
            live = [t.name for t in pending if t not in dead]
            referenced = set(s.scalars(select(BundleRow.path))) | set(s.scalars(select(ArtifactRow.path)))
            ready = s.execute(
                select(TaskRow, BundleRow)
                .outerjoin(BundleRow, BundleRow.task_id == TaskRow.id)
                .where(TaskRow.status.in_(("ready", "retired")))
                .order_by(TaskRow.name)
            ).all()
            fields = signed_fields_of(s, [task for task, _ in ready]) if key is not None else {}
            for task, b in ready:
                if key is not None and _signature_problem(s, task, key, fields[task.id]) is not None:
                    unsigned.append(task.name)
                if task.status != "ready" and b is None:
                    continue  # purged: nothing of it is kept
                if task.status == "retired":
                    retired.append(b.path)
                problem = ("missing", "") if b is None else file_problem(self.store, b.path, b.sha256, b.size_bytes)
                if problem is not None:
                    (missing if problem[0] == "missing" else mismatched).append(task.name)
            artifacts = s.execute(
                select(TaskRow.name, TaskRow.status, ArtifactRow)
                .join(TaskRow, TaskRow.id == ArtifactRow.task_id)
                # A purged task has no artifact rows; a retired one keeps them with its bundle.
                .where(TaskRow.status.in_(("ready", "retired")))
            ).all()
            for name, status, a in artifacts:
                if status == "retired":
                    retired.append(a.path)
                problem = file_problem(self.store, a.path, a.sha256, a.size_bytes)
                if problem is not None:
                    (missing if problem[0] == "missing" else mismatched).append(f"{name}:{a.kind}")
            for t in dead if repair else []:
                s.delete(t)
            orphans = [
                e for e in entries if e not in referenced and not any(owned_by(e.rsplit("/", 1)[1], n) for n in live)
            ]
            for rel in orphans if repair else []:
                remove_entry(self.store, rel)
        return FsckReport(
            orphans,
            [t.name for t in dead],
            sorted(missing),
            sorted(mismatched),
            repaired=repair,
            signature_mismatches=unsigned,
            retired_files=sorted(retired),
        )
