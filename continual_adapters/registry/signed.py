"""What a task's signature covers (signing.py signs and verifies it), read for many tasks at once.

A signature covers the task's whole history, one evaluation row per later addition, so checking
or re-signing every task of an N-task registry reads O(N^2) rows whatever is done; what is kept
small is the rest: one query per table for all the tasks at hand, plain columns instead of an ORM
object per row. `audit --probe` on a signed 200-task registry checks each signature several times
and spent 6 s doing it with three queries and an object per row, per task.
"""

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from continual_adapters.registry.schema import ArtifactRow, BundleRow, EvaluationRow, TaskRow

BUNDLE_FIELDS = ("path", "sha256", "size_bytes", "config", "param_counts", "hyperparameters", "seed")


def signed_fields(s: Session, task: TaskRow) -> dict[str, Any]:
    """What a task's signature covers: everything a reader trusts about it, but no timestamps or
    owner, which change without changing what the task is. JSON-normalised so values freshly set
    on a row sign the same as the ones a later read gets back from the database. Artifacts and an
    evaluation's confirmation (schema 3) only enter when present, so older signatures still hold."""
    return signed_fields_of(s, [task])[task.id]


def signed_fields_of(s: Session, tasks: Sequence[TaskRow]) -> dict[int, dict[str, Any]]:
    """`signed_fields` of each of `tasks`, by task id, from one query per table."""
    ids = [task.id for task in tasks]
    bundle_columns = [getattr(BundleRow, name) for name in BUNDLE_FIELDS]
    bundles = {
        task_id: bundle
        for task_id, *bundle in s.execute(select(BundleRow.task_id, *bundle_columns).where(BundleRow.task_id.in_(ids)))
    }
    evaluation_columns = (
        EvaluationRow.task_id,
        EvaluationRow.after_tasks,
        EvaluationRow.split,
        EvaluationRow.metric,
        EvaluationRow.kind,
        EvaluationRow.value,
        EvaluationRow.predictions_sha256,
        EvaluationRow.confirmation,
    )
    evals: dict[int, list[list[Any]]] = {i: [] for i in ids}
    for task_id, after, split, metric, kind, value, sha, confirmed in s.execute(
        select(*evaluation_columns).where(EvaluationRow.task_id.in_(ids))
    ):
        row = [after, split, metric, kind, float(value), sha]
        evals[task_id].append(row + [confirmed] if confirmed is not None else row)
    artifact_columns = (
        ArtifactRow.task_id,
        ArtifactRow.kind,
        ArtifactRow.path,
        ArtifactRow.sha256,
        ArtifactRow.size_bytes,
    )
    artifacts: dict[int, list[list[Any]]] = {i: [] for i in ids}
    for task_id, *artifact in s.execute(select(*artifact_columns).where(ArtifactRow.task_id.in_(ids))):
        artifacts[task_id].append(artifact)
    out = {}
    for task in tasks:
        bundle = bundles.get(task.id)
        fields = {
            "name": task.name,
            "position": task.position,
            "labels": task.labels,
            "head": task.head,
            "method": task.method,
            "primary_metric": task.primary_metric,
            "data": task.data,
            "proof": task.proof,
            "bundle": None if bundle is None else dict(zip(BUNDLE_FIELDS, bundle, strict=True)),
            "evaluations": sorted(evals[task.id], key=lambda e: (e[0], e[1], e[2], e[3])),
        }
        if artifacts[task.id]:
            fields["artifacts"] = sorted(artifacts[task.id])
        out[task.id] = json.loads(json.dumps(fields, default=str))
    return out
