"""The forgetting audit: re-check every ready task against what was recorded when it was added.

For each task: the bundle file's sha256 and size, the base weights' sha256, a fresh
evaluation on the recorded split compared with the recorded score (exactly, or within
`tolerance` across devices and library versions) and the predictions' hash, and the golden
logits stored at registration compared bit for bit (`torch.equal`), else their max difference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .errors import CadaptError
from .runner import Runner


@dataclass
class TaskAudit:
    task: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    recorded: float | None = None
    measured: float | None = None
    predictions_equal: bool | None = None
    golden_equal: bool | None = None
    golden_max_diff: float | None = None


@dataclass
class AuditReport:
    tasks: list[TaskAudit]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "tolerance": self.tolerance, "tasks": [asdict(t) for t in self.tasks]}


def audit_task(runner: Runner, name: str, tolerance: float) -> TaskAudit:
    registry = runner.registry
    result = TaskAudit(task=name, ok=False)
    try:
        registry.verify_bundle(name)
        evaluation = runner.evaluate_task(name)
    except CadaptError as exc:
        result.problems.append(str(exc))
        return result
    task = registry.task(name)
    recorded = [e for e in registry.evaluations(name, kind="registration") if e.metric == task.primary_metric]
    if not recorded:
        result.problems.append("no registration score recorded")
        return result
    result.recorded, result.measured = recorded[0].value, evaluation.scores[task.primary_metric]
    if abs(result.measured - result.recorded) > tolerance:
        result.problems.append(f"{task.primary_metric} {result.measured:.6f} != recorded {result.recorded:.6f}"
                               + (f" (tolerance {tolerance})" if tolerance else ""))
    result.predictions_equal = evaluation.predictions_sha256 == recorded[0].predictions_sha256
    if not result.predictions_equal and tolerance == 0:
        result.problems.append("predictions differ from those recorded (hash mismatch)")
    golden = torch.tensor((task.proof or {}).get("golden", {}).get("logits", []))
    if golden.numel():
        measured = evaluation.logits[: len(golden)]
        result.golden_equal = torch.equal(measured, golden)
        result.golden_max_diff = float((measured - golden).abs().max())
        if not result.golden_equal and result.golden_max_diff > tolerance:
            result.problems.append(f"golden logits differ (max difference {result.golden_max_diff:.3g})")
    result.ok = not result.problems
    return result


def audit(runner: Runner, tolerance: float = 0.0) -> AuditReport:
    """Audits every ready task; base-weight mismatches surface as a problem on every task."""
    tasks = runner.registry.tasks()
    try:
        runner.model
    except CadaptError as exc:
        return AuditReport([TaskAudit(t.name, False, [str(exc)]) for t in tasks], tolerance)
    return AuditReport([audit_task(runner, t.name, tolerance) for t in tasks], tolerance)
