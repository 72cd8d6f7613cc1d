"""Task registry: which tasks exist, in what stream order, and which bundle file holds each.

The registry is a database (SQLite by default, PostgreSQL for shared setups) because several
training processes may add tasks to one stream at once: a task's position, its bundle row and
its evaluation rows must land together or not at all. Bundle bytes live in files under the
artifact root; rows only point at them by relative path and sha256. Writers are serialised by
one lock (engine.py). This module holds the writers that add tasks; `Registry` inherits the
connection and schema handling (database.py), the read-side queries (queries.py), the checks
(fsck.py), artifacts (task_artifacts.py), versions, promotions and aliases (versions.py) and
retirement, restoring and purging (retention.py).

Adding a task is a three-step protocol, so a crash anywhere leaves only things fsck can find:
``begin_task`` (a ``pending`` row owned by this pid/host) -> ``write_file`` and ``write_artifact``
(temp file, fsync, atomic rename) -> ``finish_task`` (one transaction: position, bundle row,
artifact rows, evaluations). Artifact reads and ``add_artifact`` are in task_artifacts.py.
``abort_task`` undoes an unfinished task. A crash leaves at worst a pending row whose owner is
dead and an unreferenced file; ``fsck(repair=True)`` removes both.

Crash injection, for tests of that claim: if the environment variable ``CADAPT_CRASH_AT`` names
one of ``CRASH_POINTS`` the process calls ``os._exit(97)`` on reaching that step (no cleanup, no
flush, like a kill -9). In-process tests may instead set the module attribute ``_fault_hook`` to a
callable; it receives each step name and may raise.

With ``CADAPT_REGISTRY_KEY`` set, every write that changes a task's critical fields re-signs
them (signing.py) in the same transaction, and ``verify_bundle`` and ``fsck`` check the
signatures.
"""

import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from continual_adapters.core.config import HEADS, validate_task_key
from continual_adapters.core.errors import (
    ConfigError,
    IntegrityError,
    RegistryError,
    TaskExistsError,
    TaskNotFoundError,
)
from continual_adapters.core.versions import split_key
from continual_adapters.files.atomic import is_sha256
from continual_adapters.registry import signing
from continual_adapters.registry.artifacts import (
    file_problem,
    remove_unreferenced,
    write_bundle_file,
    write_task_file,
)
from continual_adapters.registry.database import resolve_url
from continual_adapters.registry.records import (
    ArtifactDraft,
    BaseModelRecord,
    BundleDraft,
    BundleRecord,
    EvaluationDraft,
    EvaluationRecord,
    FsckReport,
    TaskRecord,
    to_record,
)
from continual_adapters.registry.retention import RegistryRetention
from continual_adapters.registry.schema import (
    CONFIRMATIONS,
    EVAL_KINDS,
    SCHEMA_VERSION,
    ArtifactRow,
    BaseModelRow,
    BundleRow,
    EvaluationRow,
    TaskRow,
    utc_now,
)
from continual_adapters.registry.task_artifacts import artifact_folder

__all__ = [
    "SCHEMA_VERSION",
    "CRASH_POINTS",
    "BaseModelRecord",
    "TaskRecord",
    "BundleDraft",
    "BundleRecord",
    "EvaluationDraft",
    "EvaluationRecord",
    "FsckReport",
    "Registry",
    "resolve_url",
]

CRASH_POINTS = (
    "after_begin",
    "after_tmp_write",
    "after_fsync",
    "after_rename",
    "after_dir_fsync",
    "before_commit",
    "after_commit",
)

_fault_hook: Callable[[str], None] | None = None


def _crash_point(step: str) -> None:
    if os.environ.get("CADAPT_CRASH_AT") == step:
        os._exit(97)
    if _fault_hook is not None:
        _fault_hook(step)


def _check_sha(value: str, what: str) -> None:
    if not is_sha256(value):
        raise ConfigError(f"{what} must be 64 lowercase hex characters, got {value!r}")


def _task_rows(s: Session, ids: set[int]) -> list[TaskRow]:
    """The rows behind ``ids`` in one query; id order keeps the re-signing order the same on every run."""
    return list(s.scalars(select(TaskRow).where(TaskRow.id.in_(ids)).order_by(TaskRow.id)))


class Registry(RegistryRetention):
    """One registry database plus its artifact folder; every method is one short transaction."""

    # -- base model ----------------------------------------------------------------------------

    def set_base_model(
        self,
        name: str,
        sha256: str,
        num_parameters: int,
        architecture: str,
        hidden_size: int,
        num_layers: int,
        revision: str | None = None,
    ) -> BaseModelRecord:
        """Adapters are only meaningful on the exact encoder they were trained on, so one base per registry."""
        _check_sha(sha256, "base model sha256")
        with self._write() as s:
            row = s.scalar(select(BaseModelRow))
            if row is None:
                row = BaseModelRow(
                    name=name,
                    revision=revision,
                    sha256=sha256,
                    num_parameters=num_parameters,
                    architecture=architecture,
                    hidden_size=hidden_size,
                    num_layers=num_layers,
                    created_at=utc_now(),
                )
                s.add(row)
            elif row.sha256 != sha256:
                raise IntegrityError(
                    f"registry was built on base {row.name} (sha256 {row.sha256[:16]}), "
                    f"this model is {name} (sha256 {sha256[:16]})"
                )
            return to_record(BaseModelRecord, row)

    # -- adding tasks --------------------------------------------------------------------------

    def begin_task(
        self,
        name: str,
        *,
        labels: list[str],
        head: str,
        method: str = "adapters",
        primary_metric: str,
        data: dict[str, Any],
    ) -> TaskRecord:
        validate_task_key(name)
        if head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if not all(isinstance(label, str) for label in labels):
            raise ConfigError(f"labels of task {name!r} must be strings")
        try:
            record = self._begin(name, labels, head, method, primary_metric, data)
        except sa_exc.IntegrityError as err:
            raise TaskExistsError(f"task {name!r} was just created by another process") from err
        _crash_point("after_begin")
        return record

    def _begin(
        self, name: str, labels: list[str], head: str, method: str, primary_metric: str, data: dict[str, Any]
    ) -> TaskRecord:
        with self._write() as s:
            old = s.scalar(select(TaskRow).where(TaskRow.name == name))
            if old is not None and old.status != "failed":
                hint = (
                    f" by pid {old.owner_pid} on {old.owner_host}; if that process died run `cadapt fsck --repair`"
                    if old.status == "pending"
                    else ""
                )
                raise TaskExistsError(f"task {name!r} already exists (status {old.status}){hint}")
            self._check_next_version(s, name)
            if old is not None:
                s.delete(old)
                s.flush()
            now = utc_now()
            row = TaskRow(
                name=name,
                position=None,
                status="pending",
                labels=list(labels),
                head=head,
                method=method,
                primary_metric=primary_metric,
                data=dict(data),
                proof=None,
                owner_pid=os.getpid(),
                owner_host=socket.gethostname(),
                created_at=now,
                updated_at=now,
                family=split_key(name)[0],
                version=split_key(name)[1],
            )
            s.add(row)
            s.flush()
            return to_record(TaskRecord, row)

    @staticmethod
    def _check_next_version(s: Session, key: str) -> None:
        """A later version (key ``name@N``) is begun only as the next one of a task that exists: its
        number is decided under the write lock, so two processes retraining one task at once get
        versions N and N+1, or one of them this TaskExistsError, never two version Ns."""
        family, version = split_key(key)
        if version == 1:
            return
        held = s.scalar(select(func.max(TaskRow.version)).where(TaskRow.family == family, TaskRow.status != "failed"))
        if held is None:
            raise TaskNotFoundError(f"task {family!r} does not exist: version {version} needs a version 1 to follow")
        if version != held + 1:
            raise TaskExistsError(f"task {family!r} has versions up to {held}; the next is {held + 1}, not {version}")

    def write_file(self, name: str, data: bytes) -> tuple[str, str, int]:
        """Temp file + fsync + rename: a reader sees either no file or the whole file, never a torn one.
        An OSError (disk full, I/O error) becomes RegistryError after the temp file is removed."""
        validate_task_key(name)
        return write_bundle_file(self.store, name, data, _crash_point)

    def write_artifact(self, name: str, kind: str, data: bytes) -> ArtifactDraft:
        """``write_file`` for a task's artifact of ``kind``, into that kind's folder; record it with
        ``finish_task(..., artifacts=[draft])`` or, for a ready task, ``add_artifact``."""
        validate_task_key(name)
        rel, sha256, size = write_task_file(self.store, artifact_folder(kind), name, data, _crash_point, kind)
        return ArtifactDraft(kind, rel, sha256, size)

    def _draft_task_ids(self, s: Session, evaluations: list[EvaluationDraft], finishing: str | None) -> dict[str, int]:
        """Evaluations may only describe tasks in the stream (or the one being finished)."""
        keys = [(e.task, e.split, e.metric, e.kind) for e in evaluations]
        if len(set(keys)) != len(keys):
            raise ConfigError("the same (task, split, metric, kind) appears twice in one batch of evaluations")
        for e in evaluations:
            if e.kind not in EVAL_KINDS:
                raise ConfigError(f"evaluation kind must be one of {', '.join(EVAL_KINDS)}, got {e.kind!r}")
            if not math.isfinite(e.value):
                raise ConfigError(f"evaluation of task {e.task!r} has value {e.value}; SQLite would store it as NULL")
            if e.confirmation is not None and (
                e.confirmation not in CONFIRMATIONS or e.kind in ("registration", "skipped")
            ):
                raise ConfigError(
                    f"confirmation {e.confirmation!r} of a {e.kind} evaluation of task {e.task!r}: only earlier "
                    f"tasks' scores are confirmed, as one of {', '.join(CONFIRMATIONS)}"
                )
        names = sorted({e.task for e in evaluations})  # one query: an addition or an audit names every task
        rows = s.execute(select(TaskRow.name, TaskRow.id, TaskRow.status).where(TaskRow.name.in_(names))).all()
        found = {name: (task_id, status) for name, task_id, status in rows}
        for name in names:
            status = found[name][1] if name in found else self._task_row(s, name).status  # TaskNotFoundError
            if status not in ("ready", "retired") and name != finishing:
                raise RegistryError(f"cannot record evaluations of task {name!r}: it is {status}")
        return {name: found[name][0] for name in names}

    def finish_task(
        self,
        name: str,
        bundle: BundleDraft,
        evaluations: list[EvaluationDraft],
        proof: dict[str, Any],
        artifacts: Sequence[ArtifactDraft] = (),
    ) -> TaskRecord:
        """Writers hold the registry's write lock, so a position clash can only come from a writer that
        bypasses it; such a clash is retried once."""
        _check_sha(bundle.sha256, "bundle sha256")
        for attempt in range(2):
            try:
                return self._finish(name, bundle, evaluations, proof, artifacts)
            except sa_exc.IntegrityError as err:
                if attempt == 1:
                    raise RegistryError(f"could not record task {name!r}: {err.orig}") from err
        raise AssertionError("unreachable")

    def _finish(
        self,
        name: str,
        bundle: BundleDraft,
        evaluations: list[EvaluationDraft],
        proof: dict[str, Any],
        artifacts: Sequence[ArtifactDraft],
    ) -> TaskRecord:
        with self._write() as s:
            task = self._task_row(s, name)
            if task.status != "pending":
                raise RegistryError(f"task {name!r} is {task.status}, not pending; start it with begin_task")
            expected = f"bundles/{name}-{bundle.sha256[:16]}.safetensors"
            if bundle.path != expected:
                raise IntegrityError(f"bundle of task {name!r} is {bundle.path}, not {expected} as write_file names it")
            problem = file_problem(self.store, bundle.path, bundle.sha256, bundle.size_bytes)
            if problem is not None:
                raise IntegrityError(f"bundle of task {name!r} at {bundle.path}: {problem[1]}")
            ids = self._draft_task_ids(s, evaluations, finishing=name)
            now = utc_now()
            task.position = (s.scalar(select(func.max(TaskRow.position))) or 0) + 1
            task.status, task.proof, task.updated_at = "ready", proof, now
            s.add(BundleRow(task_id=task.id, created_at=now, **asdict(bundle)))
            self._insert_artifacts(s, task, artifacts, now)
            for e in evaluations:
                s.add(
                    EvaluationRow(
                        task_id=ids[e.task],
                        after_tasks=task.position,
                        split=e.split,
                        metric=e.metric,
                        value=float(e.value),
                        predictions_sha256=e.predictions_sha256,
                        kind=e.kind,
                        created_at=now,
                        confirmation=e.confirmation,
                    )
                )
            self._resign(s, [task, *_task_rows(s, set(ids.values()) - {task.id})])
            s.flush()
            record = to_record(TaskRecord, task)
            _crash_point("before_commit")
        _crash_point("after_commit")
        return record

    def abort_task(self, name: str) -> None:
        """Rows go first, files after: a crash in between leaves an orphan file, never a dangling row."""
        with self._write() as s:
            task = s.scalar(select(TaskRow).where(TaskRow.name == name))
            if task is None:
                return
            if task.status not in ("pending", "failed"):
                raise RegistryError(
                    f"task {name!r} is {task.status}; abort_task only undoes unfinished tasks (use remove_task)"
                )
            s.delete(task)
            s.flush()
            referenced = set(s.scalars(select(BundleRow.path))) | set(s.scalars(select(ArtifactRow.path)))
        remove_unreferenced(self.store, name, referenced)

    def add_evaluations(self, evaluations: list[EvaluationDraft], after_tasks: int) -> list[EvaluationRecord]:
        """Re-running an audit of the same stream state overwrites it, so the latest check is what is kept."""
        if any(e.kind == "registration" for e in evaluations):
            raise ConfigError("registration evaluations are written by finish_task; use kind audit, reeval or skipped")
        with self._write() as s:
            top = s.scalar(select(func.max(TaskRow.position))) or 0
            if not 1 <= after_tasks <= top:
                raise ConfigError(f"after_tasks must be between 1 and {top}, got {after_tasks}")
            ids, now = self._draft_task_ids(s, evaluations, finishing=None), utc_now()
            existing = s.scalars(
                select(EvaluationRow).where(
                    EvaluationRow.after_tasks == after_tasks,
                    EvaluationRow.task_id.in_(set(ids.values())),
                    EvaluationRow.kind.in_({e.kind for e in evaluations}),
                )
            )  # one read for the batch: an audit writes two rows per task
            rows = {(r.task_id, r.split, r.metric, r.kind): r for r in existing}
            for e in evaluations:
                row = rows.get((ids[e.task], e.split, e.metric, e.kind))
                if row is None:
                    row = EvaluationRow(
                        task_id=ids[e.task], after_tasks=after_tasks, split=e.split, metric=e.metric, kind=e.kind
                    )
                    s.add(row)
                row.value, row.predictions_sha256, row.created_at = float(e.value), e.predictions_sha256, now
                row.confirmation = e.confirmation
            self._resign(s, _task_rows(s, set(ids.values())))
        return [to_record(EvaluationRecord, e, after_tasks=after_tasks, created_at=now) for e in evaluations]

    def sign_tasks(self) -> list[str]:
        """Signs every finished task as it stands now: run once after first setting the key on a
        registry that already has tasks. It vouches for the current rows, so check them first."""
        if signing.registry_key() is None:
            raise ConfigError(f"set {signing.KEY_ENV} to sign a registry")
        with self._write() as s:
            tasks = s.scalars(
                select(TaskRow).where(TaskRow.status.in_(("ready", "retired"))).order_by(TaskRow.name)
            ).all()
            self._resign(s, list(tasks))
            return [t.name for t in tasks]
