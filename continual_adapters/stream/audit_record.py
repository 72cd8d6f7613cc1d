"""The latest audit's outcome, kept in the registry so that what reads it (the `cadapt serve`
dashboard) need not run one: a dashboard that re-scored every task on each page view would be an
audit, not a page.

No new table: the evaluations table already allows rows of kind "audit", and
`Registry.add_evaluations` keeps one row per (task, stream state, split, metric), the latest
check of that state. Per task the audit covered, one transaction writes, at `after_tasks` = the
stream's last position when the audit started:

- a verdict row: metric `VERDICT_METRIC`, value = how many problems the audit found (0: passed),
  `confirmation` = how the task was confirmed ("full": re-scored on its data; "probe": its probe
  replayed);
- a score row, when the audit measured one: the task's primary metric, the audited score (the
  recorded one carried forward when confirmed by probe) and the fresh predictions' sha256.

Both are on the task's evaluation split and share the transaction's timestamp, which is how
`latest_audit` tells one audit's rows from an earlier audit's rows of the same stream state.

What is not kept: the wording of each problem (the table has no text column; `cadapt audit`
prints it) and the tolerance. Writing rows re-signs a task on a signed registry, so a task whose
signature does not verify gets no row: signing its rows now would vouch for the edit the audit
just caught. `latest_audit` lists such a task as having no recorded verdict, which fails the
audit shown; an audit that could record nothing at all (every signature broken, or a signed
registry without the key) leaves the previous one as the latest, and says so in its report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from continual_adapters.core.errors import CadaptError
from continual_adapters.registry import EvaluationDraft, EvaluationRecord, Registry

if TYPE_CHECKING:
    from continual_adapters.stream.audit import AuditReport, TaskAudit

KIND = "audit"
#: The verdict row's metric: the number of problems found. No task metric has this name.
VERDICT_METRIC = "audit_problems"


def stream_top(registry: Registry) -> int | None:
    """The stream's last position (retired tasks keep theirs), or None for an empty stream: the
    state an audit that starts now checks."""
    positions = [t.position for t in registry.tasks(include_retired=True) if t.position is not None]
    return max(positions, default=None)


def _splits(registry: Registry, names: list[str]) -> dict[str, str]:
    """Each task's evaluation split: its recorded one, else that of its registration score."""
    tasks = {t.name: t for t in registry.tasks()}
    registered = {
        e.task: e.split
        for e in registry.evaluations(kind="registration")
        if e.task in tasks and e.metric == tasks[e.task].primary_metric
    }
    return {n: (tasks[n].data.get("eval_split") if n in tasks else None) or registered.get(n) or "test" for n in names}


def _signed_ok(registry: Registry, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The tasks whose rows (and, with a key, signature) check out, and why each other one does not;
    one query when all do."""
    try:
        registry.bundles(names)
        return names, {}
    except CadaptError:
        pass
    ok, refused = [], {}
    for name in names:
        try:
            registry.bundles([name])
            ok.append(name)
        except CadaptError as exc:
            refused[name] = str(exc)
    return ok, refused


def _drafts(result: TaskAudit, split: str, metric: str) -> list[EvaluationDraft]:
    out = [
        EvaluationDraft(
            result.task, split, VERDICT_METRIC, float(len(result.problems)), None, KIND, result.confirmed_by
        )
    ]
    if result.measured is not None and math.isfinite(result.measured):
        sha = result.predictions_sha256 if result.confirmed_by == "full" else None
        out.append(EvaluationDraft(result.task, split, metric, result.measured, sha, KIND, result.confirmed_by))
    return out


def record_audit(registry: Registry, report: AuditReport) -> dict[str, Any]:
    """Writes `report` as the registry's latest audit (see the module docstring). Never raises for
    what it cannot record: returns what was recorded and, per task left out, why."""
    names = [t.task for t in report.tasks]
    if report.after_tasks is None or not names:
        return {"recorded": False, "reason": "the registry has no task"}
    try:
        ok, refused = _signed_ok(registry, names)
        metrics = {t.name: t.primary_metric for t in registry.tasks()}
        splits = _splits(registry, ok)
        drafts = [
            d for t in report.tasks if t.task in ok for d in _drafts(t, splits[t.task], metrics.get(t.task, "accuracy"))
        ]
        if not drafts:
            return {"recorded": False, "reason": "no task could be recorded", "left_out": refused}
        written = registry.add_evaluations(drafts, after_tasks=report.after_tasks)
    except CadaptError as exc:
        return {"recorded": False, "reason": str(exc)}
    return {
        "recorded": True,
        "after_tasks": report.after_tasks,
        "at": written[0].created_at.isoformat(),
        "tasks": len(ok),
        "left_out": refused,
    }


@dataclass(frozen=True)
class AuditedTask:
    """One task's line of the latest audit. `problems` is None when that audit recorded nothing
    for a task it should have covered (a task whose signature did not verify)."""

    task: str
    problems: int | None
    confirmed_by: str | None
    recorded: float | None
    audited: float | None
    predictions_equal: bool | None

    @property
    def ok(self) -> bool:
        return self.problems == 0


@dataclass(frozen=True)
class LatestAudit:
    """The registry's latest recorded audit: when, which stream state, and each task's verdict;
    `not_covered` are the ready tasks added after it."""

    at: datetime
    after_tasks: int
    tasks: list[AuditedTask]
    not_covered: list[str]

    @property
    def ok(self) -> bool:
        return bool(self.tasks) and all(t.ok for t in self.tasks)


def latest_audit(registry: Registry) -> LatestAudit | None:
    """The latest audit `record_audit` wrote, from the evaluation rows alone; None if none was."""
    rows = registry.evaluations(kind=KIND)
    verdicts = [e for e in rows if e.metric == VERDICT_METRIC]
    if not verdicts:
        return None
    at = max(e.created_at for e in verdicts)
    mine = [e for e in rows if e.created_at == at]
    after = mine[0].after_tasks
    verdict = {e.task: e for e in mine if e.metric == VERDICT_METRIC}
    scores = {e.task: e for e in mine if e.metric != VERDICT_METRIC}
    registered: dict[tuple[str, str, str], EvaluationRecord] = {
        (e.task, e.split, e.metric): e for e in registry.evaluations(kind="registration")
    }
    ready = registry.tasks()
    covered = [t.name for t in ready if t.position is not None and t.position <= after]
    names = list(dict.fromkeys([*(e.task for e in verdicts if e.created_at == at), *covered]))
    tasks = []
    for name in names:
        row, score = verdict.get(name), scores.get(name)
        registration = None if score is None else registered.get((name, score.split, score.metric))
        tasks.append(
            AuditedTask(
                task=name,
                problems=None if row is None else int(row.value),
                confirmed_by=None if row is None else row.confirmation,
                recorded=None if registration is None else registration.value,
                audited=None if score is None else score.value,
                predictions_equal=None
                if registration is None or score is None or score.predictions_sha256 is None
                else score.predictions_sha256 == registration.predictions_sha256,
            )
        )
    not_covered = [t.name for t in ready if t.name not in names]
    return LatestAudit(at, after, tasks, not_covered)
