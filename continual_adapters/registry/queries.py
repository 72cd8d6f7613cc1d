"""The read side of the registry: listing tasks, bundles, evaluations, the accuracy matrix, dumps.

Kept apart from registry.py (the writers and the commit protocol) so each file stays small and
the write protocol can be reviewed on its own. Every method here is one read transaction, run
in a session of `RegistryDatabase` (database.py).
"""

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from continual_adapters.core.errors import RegistryError, TaskNotFoundError
from continual_adapters.registry.artifacts import list_files
from continual_adapters.registry.database import RegistryDatabase
from continual_adapters.registry.records import BaseModelRecord, BundleRecord, EvaluationRecord, TaskRecord, to_record
from continual_adapters.registry.schema import BaseModelRow, BundleRow, EvaluationRow, MetaRow, TaskRow


def signed_fields(s: Session, task: TaskRow) -> dict[str, Any]:
    """What a task's signature covers: everything a reader trusts about it, but no timestamps or
    owner, which change without changing what the task is. JSON-normalised so values freshly set
    on a row sign the same as the ones a later read gets back from the database."""
    bundle = s.scalar(select(BundleRow).where(BundleRow.task_id == task.id))
    evals = s.scalars(select(EvaluationRow).where(EvaluationRow.task_id == task.id)).all()
    fields = {
        "name": task.name,
        "position": task.position,
        "labels": task.labels,
        "head": task.head,
        "method": task.method,
        "primary_metric": task.primary_metric,
        "data": task.data,
        "proof": task.proof,
        "bundle": None
        if bundle is None
        else {
            "path": bundle.path,
            "sha256": bundle.sha256,
            "size_bytes": bundle.size_bytes,
            "config": bundle.config,
            "param_counts": bundle.param_counts,
            "hyperparameters": bundle.hyperparameters,
            "seed": bundle.seed,
        },
        "evaluations": sorted(
            ([e.after_tasks, e.split, e.metric, e.kind, float(e.value), e.predictions_sha256] for e in evals),
            key=lambda e: (e[0], e[1], e[2], e[3]),
        ),
    }
    normalised: dict[str, Any] = json.loads(json.dumps(fields, default=str))
    return normalised


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
        wanted = (
            {"ready"}
            | ({"retired"} if include_retired else set())
            | ({"pending", "failed"} if include_pending else set())
        )
        with self._read() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.status.in_(wanted))).all()
        rows = sorted(rows, key=lambda t: (t.position is None, t.position or 0, t.created_at, t.name))
        return [to_record(TaskRecord, r) for r in rows]

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

    def accuracy_matrix(
        self, metric: str | None = None, split: str | None = None
    ) -> tuple[list[str], list[list[float | None]]]:
        """R[i][j]: task j after the (i+1)-th task joined. Without ``split`` each task is read on the split
        it was evaluated on: ``data["eval_split"]``, else that of its own registration evaluation."""
        with self._read() as s:
            tasks = s.scalars(
                select(TaskRow)
                .where(TaskRow.position.is_not(None), TaskRow.status.in_(("ready", "retired")))
                .order_by(TaskRow.position)
            ).all()
            evals = s.scalars(select(EvaluationRow).where(EvaluationRow.kind.in_(("registration", "reeval")))).all()
        column = {t.id: j for j, t in enumerate(tasks)}
        metrics = [metric or t.primary_metric for t in tasks]
        splits = [split] * len(tasks)
        for j, t in enumerate(tasks):
            own = {
                e.split
                for e in evals
                if e.task_id == t.id
                and e.after_tasks == t.position
                and e.kind == "registration"
                and e.metric == metrics[j]
            }
            splits[j] = split or t.data.get("eval_split") or min(own, default=None)
        n = len(tasks)
        matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
        for e in sorted(evals, key=lambda e: e.kind != "registration"):
            col = column.get(e.task_id)
            if col is None or not 1 <= e.after_tasks <= n or (e.metric, e.split) != (metrics[col], splits[col]):
                continue
            if matrix[e.after_tasks - 1][col] is None:
                matrix[e.after_tasks - 1][col] = e.value
        return [t.name for t in tasks], matrix

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
            }
        content["files"] = list_files(self.root)
        normalised: dict[str, Any] = json.loads(json.dumps(content, sort_keys=True, default=datetime.isoformat))
        return normalised
