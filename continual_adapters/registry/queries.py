"""The read side of the registry: listing tasks, bundles, evaluations, the accuracy matrix and how
each of its entries was confirmed, the task table, dumps.

Kept apart from registry.py (the writers and the commit protocol) so each file stays small and
the write protocol can be reviewed on its own. Every method here is one read transaction, run
in a session of `RegistryDatabase` (database.py).
"""

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ScalarSelect, and_, or_, select
from sqlalchemy.orm import Session, aliased

from continual_adapters.core.errors import RegistryError, TaskNotFoundError
from continual_adapters.registry import records
from continual_adapters.registry.artifacts import list_files
from continual_adapters.registry.database import RegistryDatabase
from continual_adapters.registry.records import (
    ArtifactRecord,
    BaseModelRecord,
    BundleRecord,
    EvaluationRecord,
    TaskRecord,
    to_record,
)
from continual_adapters.registry.schema import (
    EVAL_KINDS,
    ArtifactRow,
    BaseModelRow,
    BundleRow,
    EvaluationRow,
    MetaRow,
    TaskRow,
)


def _ids_of(names: Sequence[str]) -> ScalarSelect[int]:
    """The named tasks' ids, for ``EvaluationRow.task_id.in_``: filtering on the names through the
    join instead lets SQLite walk every row of a kind in the registry (its kind index) to read a few
    tasks' rows, O(N^2) rows for reads made a round of tasks at a time."""
    return select(TaskRow.id).where(TaskRow.name.in_(names)).scalar_subquery()


def _statuses(include_retired: bool, include_pending: bool) -> set[str]:
    """The statuses ``tasks()`` and ``task_table()`` list."""
    return (
        {"ready"} | ({"retired"} if include_retired else set()) | ({"pending", "failed"} if include_pending else set())
    )


def _stream_order(task: TaskRow) -> tuple[bool, int, datetime, str]:
    return (task.position is None, task.position or 0, task.created_at, task.name)


class RegistryQueries(RegistryDatabase):
    """The read methods of `Registry`; sessions and the artifact root come from `RegistryDatabase`."""

    def _task_row(self, s: Session, name: str) -> TaskRow:
        row = s.scalar(select(TaskRow).where(TaskRow.name == name))
        if row is None:
            known = ", ".join(s.scalars(select(TaskRow.name).order_by(TaskRow.name))) or "none"
            raise TaskNotFoundError(f"unknown task {name!r}; known tasks: {known}")
        return row

    def base_model(self) -> BaseModelRecord | None:
        with self._read() as s:
            row = s.scalar(select(BaseModelRow))
            return None if row is None else to_record(BaseModelRecord, row)

    def tasks(self, include_retired: bool = False, include_pending: bool = False) -> list[TaskRecord]:
        """``include_pending`` also shows failed rows: both are tasks that never joined the stream."""
        wanted = _statuses(include_retired, include_pending)
        with self._read() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.status.in_(wanted))).all()
        return [to_record(TaskRecord, r) for r in sorted(rows, key=_stream_order)]

    def task(self, name: str) -> TaskRecord:
        with self._read() as s:
            return to_record(TaskRecord, self._task_row(s, name))

    def bundle(self, name: str) -> BundleRecord:
        with self._read() as s:
            task = self._task_row(s, name)
            row = s.scalar(select(BundleRow).where(BundleRow.task_id == task.id))
            if row is None:
                raise RegistryError(f"task {name!r} has no bundle (status {task.status})")
            return to_record(BundleRecord, row, task=name)

    def bundle_path(self, name: str) -> Path:
        return self._safe_path(self.bundle(name).path)

    def evaluations(self, task: str | None = None, kind: str | None = None) -> list[EvaluationRecord]:
        with self._read() as s:
            if task is not None:
                self._task_row(s, task)
            stmt = select(EvaluationRow, TaskRow.name, TaskRow.position).join(
                TaskRow, TaskRow.id == EvaluationRow.task_id
            )
            stmt = stmt.where(TaskRow.name == task) if task is not None else stmt
            rows = s.execute(stmt.where(EvaluationRow.kind == kind) if kind is not None else stmt).all()
        rows = sorted(
            rows, key=lambda r: (r[0].after_tasks, r[2] is None, r[2] or 0, r[0].metric, r[0].split, r[0].kind, r[1])
        )
        return [to_record(EvaluationRecord, ev, task=name) for ev, name, _ in rows]

    def evaluations_of(
        self, names: Sequence[str], full_only: bool = False, kind: str | None = None
    ) -> dict[str, list[EvaluationRecord]]:
        """Every evaluation row of each named task in one query, in `evaluations` order, only those of
        `kind` if given. `full_only` keeps the rows that scored the task in full (its registration and
        full re-scores), not the one row per later addition that carried a score forward: without it,
        confirming N tasks would read O(N^2) rows."""
        with self._read() as s:
            stmt = select(EvaluationRow, TaskRow.name).join(TaskRow, TaskRow.id == EvaluationRow.task_id)
            stmt = stmt.where(EvaluationRow.task_id.in_(_ids_of(names)))  # not every row of a kind: see below
            stmt = stmt.where(EvaluationRow.kind == kind) if kind is not None else stmt
            if full_only:
                full = or_(EvaluationRow.confirmation.is_(None), EvaluationRow.confirmation == "full")
                # One IN of kinds, so the (kind, task_id) index serves: an OR read every row of both kinds.
                stmt = stmt.where(EvaluationRow.kind.in_(("registration", "reeval")))
                stmt = stmt.where(or_(EvaluationRow.kind == "registration", full))
            rows = s.execute(stmt).all()
        out: dict[str, list[EvaluationRecord]] = {name: [] for name in names}
        for ev, name in sorted(rows, key=lambda r: (r[0].after_tasks, r[0].metric, r[0].split, r[0].kind)):
            out[name].append(to_record(EvaluationRecord, ev, task=name))
        return out

    def reevals_unlike_registration(self, names: Sequence[str]) -> dict[str, list[EvaluationRecord]]:
        """Each named task's reeval rows on its primary metric whose value or predictions hash differs
        from one of its registration rows on the same split, in `evaluations` order. They are the
        only rows the audit's check that an unchanged task still scores what it scored at
        registration can object to; the database finds them, where reading every task's history
        (one row per later addition) would bring O(N^2) rows into Python."""
        registration = aliased(EvaluationRow)
        same = and_(
            registration.task_id == EvaluationRow.task_id,
            registration.kind == "registration",
            registration.metric == EvaluationRow.metric,
            registration.split == EvaluationRow.split,
        )
        differs = or_(
            EvaluationRow.value.is_distinct_from(registration.value),
            EvaluationRow.predictions_sha256.is_distinct_from(registration.predictions_sha256),
        )
        with self._read() as s:
            rows = s.execute(
                select(EvaluationRow, TaskRow.name)
                .join(TaskRow, TaskRow.id == EvaluationRow.task_id)
                .join(registration, same)
                .where(EvaluationRow.task_id.in_(_ids_of(names)), EvaluationRow.kind == "reeval")
                .where(EvaluationRow.metric == TaskRow.primary_metric, differs)
            ).all()
        unique = {ev.id: (ev, name) for ev, name in rows}.values()  # one per registration row it differs from
        out: dict[str, list[EvaluationRecord]] = {name: [] for name in names}
        for ev, name in sorted(unique, key=lambda r: (r[0].after_tasks, r[0].metric, r[0].split, r[0].kind)):
            out[name].append(to_record(EvaluationRecord, ev, task=name))
        return out

    def accuracy_matrix(
        self, metric: str | None = None, split: str | None = None
    ) -> tuple[list[str], list[list[float | None]]]:
        """R[i][j]: task j after the (i+1)-th task joined. Without ``split`` each task is read on the split
        it was evaluated on: ``data["eval_split"]``, else that of its own registration evaluation."""
        matrix = self.matrix(metric, split)
        return matrix.tasks, matrix.values

    def confirmations(
        self, metric: str | None = None, split: str | None = None
    ) -> tuple[list[str], list[list[str | None]]]:
        """How each entry of ``accuracy_matrix`` (same arguments, same order) was obtained:
        "registration" (the diagonal), "full" (re-scored on its data), "probe" (outputs proved
        identical by the task's probe, the last full score carried forward), "skipped" (not
        checked), or None where there is no entry. A reeval row of schema 2 counts as "full"."""
        matrix = self.matrix(metric, split)
        return matrix.tasks, matrix.confirmed_by

    def matrix(self, metric: str | None = None, split: str | None = None) -> records.AccuracyMatrix:
        """``accuracy_matrix`` and ``confirmations`` from one read: the report needs both, and each
        reads one row per entry, N^2/2 at N tasks. An entry is its first row in EVAL_KINDS order
        (registration, then reeval, then skipped); a skipped row gives a confirmation but no value."""
        names, cells = self._matrix_cells(metric, split)
        values: list[list[float | None]] = [[None] * len(names) for _ in names]
        confirmed_by: list[list[str | None]] = [[None] * len(names) for _ in names]
        for i, j, kind, value, confirmation in cells:
            if confirmed_by[i][j] is None:
                confirmed_by[i][j] = kind if kind != "reeval" else confirmation or "full"
            if values[i][j] is None and kind != "skipped":
                values[i][j] = value
        return records.AccuracyMatrix(names, values, confirmed_by)

    def _matrix_cells(
        self, metric: str | None, split: str | None
    ) -> tuple[list[str], list[tuple[int, int, str, float, str | None]]]:
        """The tasks of the matrix in stream order, and (row, column, kind, value, confirmation) for
        each evaluation that lands in it, in EVAL_KINDS order. The database keeps only rows of the
        column's metric and reads plain columns: ORM objects for every row of every metric cost
        seconds at 200 tasks (60,000 rows, read twice)."""
        in_matrix = (TaskRow.position.is_not(None), TaskRow.status.in_(("ready", "retired")))
        on_metric = EvaluationRow.metric == (TaskRow.primary_metric if metric is None else metric)
        with self._read() as s:
            tasks = s.execute(
                select(TaskRow.id, TaskRow.name, TaskRow.position, TaskRow.data)
                .where(*in_matrix)
                .order_by(TaskRow.position)
            ).all()
            evals = s.execute(
                select(
                    EvaluationRow.task_id,
                    EvaluationRow.after_tasks,
                    EvaluationRow.kind,
                    EvaluationRow.split,
                    EvaluationRow.value,
                    EvaluationRow.confirmation,
                )
                .join(TaskRow, TaskRow.id == EvaluationRow.task_id)
                .where(*in_matrix, on_metric, EvaluationRow.kind.in_(("registration", "reeval", "skipped")))
            ).all()
        column = {t.id: j for j, t in enumerate(tasks)}
        position = {t.id: t.position for t in tasks}
        own: dict[int, set[str]] = {}
        for e in evals:
            if e.kind == "registration" and e.after_tasks == position[e.task_id]:
                own.setdefault(e.task_id, set()).add(e.split)
        splits = [split or t.data.get("eval_split") or min(own.get(t.id, ()), default=None) for t in tasks]
        cells = [
            (e.after_tasks - 1, column[e.task_id], e.kind, e.value, e.confirmation)
            for e in sorted(evals, key=lambda e: EVAL_KINDS.index(e.kind))
            if 1 <= e.after_tasks <= len(tasks) and e.split == splits[column[e.task_id]]
        ]
        return [t.name for t in tasks], cells

    def task_table(self, include_retired: bool = False, include_pending: bool = False) -> list[records.TaskSummary]:
        """``tasks()`` with each task's bundle size and parameter count and its registration score, in
        two queries however many tasks there are (``cadapt tasks`` used to open two sessions per task)."""
        wanted = _statuses(include_retired, include_pending)
        primary = and_(TaskRow.id == EvaluationRow.task_id, TaskRow.primary_metric == EvaluationRow.metric)
        with self._read() as s:
            rows = s.execute(
                select(TaskRow, BundleRow.param_counts, BundleRow.size_bytes)
                .outerjoin(BundleRow, BundleRow.task_id == TaskRow.id)
                .where(TaskRow.status.in_(wanted))
            ).all()
            scores = s.execute(
                select(EvaluationRow.task_id, EvaluationRow.split, EvaluationRow.value)
                .join(TaskRow, primary)
                .where(EvaluationRow.kind == "registration", TaskRow.status.in_(wanted))
            ).all()
        by_task: dict[int, dict[str, float]] = {}
        for task_id, split, value in scores:
            by_task.setdefault(task_id, {})[split] = value
        table = []
        for task, params, size in sorted(rows, key=lambda r: _stream_order(r[0])):
            own = by_task.get(task.id, {})
            chosen = task.data.get("eval_split") if task.data.get("eval_split") in own else min(own, default=None)
            table.append(
                records.TaskSummary(
                    position=task.position,
                    name=task.name,
                    status=task.status,
                    method=task.method,
                    num_labels=len(task.labels),
                    primary_metric=task.primary_metric,
                    score=None if chosen is None else own[chosen],
                    total_params=None if params is None else params.get("total"),
                    bundle_bytes=size,
                )
            )
        return table

    def dump(self) -> dict[str, Any]:
        """Surrogate ids are left out so two registries with the same content dump the same."""
        with self._read() as s:
            names = dict(s.execute(select(TaskRow.id, TaskRow.name)).all())
            content = {
                "meta": {m.key: m.value for m in s.scalars(select(MetaRow))},
                "base_models": [asdict(to_record(BaseModelRecord, b)) for b in s.scalars(select(BaseModelRow))],
                "tasks": [asdict(to_record(TaskRecord, t)) for t in s.scalars(select(TaskRow).order_by(TaskRow.name))],
                "bundles": sorted(
                    (asdict(to_record(BundleRecord, b, task=names[b.task_id])) for b in s.scalars(select(BundleRow))),
                    key=lambda b: b["task"],
                ),
                "evaluations": sorted(
                    (
                        asdict(to_record(EvaluationRecord, e, task=names[e.task_id]))
                        for e in s.scalars(select(EvaluationRow))
                    ),
                    key=lambda e: (e["task"], e["after_tasks"], e["split"], e["metric"], e["kind"]),
                ),
                "artifacts": sorted(
                    (
                        asdict(to_record(ArtifactRecord, a, task=names[a.task_id]))
                        for a in s.scalars(select(ArtifactRow))
                    ),
                    key=lambda a: (a["task"], a["kind"]),
                ),
            }
        content["files"] = list_files(self.store)
        normalised: dict[str, Any] = json.loads(json.dumps(content, sort_keys=True, default=datetime.isoformat))
        return normalised
