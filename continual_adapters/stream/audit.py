"""The forgetting audit: re-check every ready task against what was recorded when it was added.

For each task: the bundle file's sha256 and size (and, with ``CADAPT_REGISTRY_KEY`` set, the
signature over its recorded fields), the base weights' sha256, a fresh evaluation on the
recorded split compared with the recorded score (exactly, or within `tolerance` across devices
and library versions) and the predictions' hash, the golden logits stored at registration
compared bit for bit (`torch.equal`), else their max difference, and the rows that must agree
with each other (`record_problems`).

A task whose recorded data is gone cannot be re-scored: it is confirmed by replaying its probe
instead (bit-identical outputs) and reported as such. `probe_only` (`cadapt audit --probe`) is
the fast form for long streams: hashes, signatures, the rows' agreement and every probe, with
no dataset read; tasks are attached a round at a time and released, so memory stays bounded.

Last, the accuracy matrix is checked for holes (a ready task with no entry in a later task's row,
left by tasks added at the same time) and each is filled by the check an addition makes
(concurrent.py); the report lists every entry so written, or why one could not be. The outcome
is then recorded in the registry as its latest audit (audit_record.py), for readers that should
not run one (the `cadapt serve` dashboard).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from continual_adapters.core.errors import CadaptError, DataError
from continual_adapters.registry import BundleRecord, EvaluationRecord, Registry, TaskRecord
from continual_adapters.stream.audit_record import record_audit, stream_top
from continual_adapters.stream.concurrent import Hole, fill_holes, matrix_holes
from continual_adapters.stream.confirm import PROBE_KIND, load_probe, probe_from, rounds
from continual_adapters.stream.runner import Runner
from continual_adapters.training.probe import Probe, check


@dataclass
class TaskAudit:
    task: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    recorded: float | None = None
    measured: float | None = None
    predictions_equal: bool | None = None
    #: The fresh evaluation's predictions hash (full audits), recorded with the audit's rows.
    predictions_sha256: str | None = None
    golden_equal: bool | None = None
    golden_max_diff: float | None = None
    #: "full" (re-scored on its data) or "probe" (its probe replayed: data unavailable, or --probe).
    confirmed_by: str = "full"
    probe_max_diff: float | None = None
    notes: list[str] = field(default_factory=list)
    #: Per-example correctness of the fresh evaluation (classification tasks re-scored in full): what
    #: bootstrap intervals over test examples resample. Kept out of `to_dict` (thousands of entries).
    correct: list[bool] | None = field(default=None, repr=False)


@dataclass
class AuditReport:
    tasks: list[TaskAudit]
    tolerance: float
    mode: str = "full"
    #: Entries the accuracy matrix lacked (tasks added at the same time), each filled or said why not.
    holes: list[Hole] = field(default_factory=list)
    #: The stream state audited: its last position when the audit started (None: empty stream).
    after_tasks: int | None = None
    #: What `record_audit` wrote to the registry, or why it wrote nothing.
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every task passed. A hole is missing history, not a changed task: it is filled
        (or reported) but does not fail the audit."""
        return all(t.ok for t in self.tasks)

    def to_dict(self) -> dict:
        tasks = [{k: v for k, v in asdict(t).items() if k != "correct"} for t in self.tasks]
        holes = [hole.to_dict() for hole in self.holes]
        return {
            "ok": self.ok,
            "mode": self.mode,
            "tolerance": self.tolerance,
            "after_tasks": self.after_tasks,
            "tasks": tasks,
            "holes": holes,
            "record": self.record,
        }


def audit_task(runner: Runner, name: str, tolerance: float, recorded_rows: Recorded | None = None) -> TaskAudit:
    registry = runner.registry
    result = TaskAudit(task=name, ok=False)
    try:
        registry.verify_bundle(name)
        evaluation, encoded = runner.rescore(name)
    except DataError as exc:
        if not str(exc).startswith("data unavailable"):
            result.problems.append(str(exc))
            return result
        return probe_audit(runner, [name], tolerance, note=f"{exc}; outputs confirmed by probe")[0]
    except CadaptError as exc:
        result.problems.append(str(exc))
        return result
    task = registry.task(name)
    recorded = [e for e in registry.evaluations(name, kind="registration") if e.metric == task.primary_metric]
    if not recorded:
        result.problems.append("no registration score recorded")
        return result
    result.recorded, result.measured = recorded[0].value, evaluation.scores[task.primary_metric]
    if task.head == "classification":
        result.correct = (evaluation.predictions == encoded.targets.numpy()).tolist()
    if abs(result.measured - result.recorded) > tolerance:
        result.problems.append(
            f"{task.primary_metric} {result.measured:.6f} != recorded {result.recorded:.6f}"
            + (f" (tolerance {tolerance})" if tolerance else "")
        )
    result.predictions_sha256 = evaluation.predictions_sha256
    result.predictions_equal = evaluation.predictions_sha256 == recorded[0].predictions_sha256
    if not result.predictions_equal and tolerance == 0:
        result.problems.append("predictions differ from those recorded (hash mismatch)")
    reevals = registry.reevals_unlike_registration([name])[name]
    checks = recorded_rows or Recorded.read(registry)
    result.problems.extend(record_problems(runner, task, recorded[0], tolerance, checks, reevals))
    golden = torch.tensor((task.proof or {}).get("golden", {}).get("logits", []))
    if golden.numel():
        measured = evaluation.logits[: len(golden)]
        result.golden_equal = torch.equal(measured, golden)
        result.golden_max_diff = float((measured - golden).abs().max())
        if not result.golden_equal and result.golden_max_diff > tolerance:
            result.problems.append(f"golden logits differ (max difference {result.golden_max_diff:.3g})")
    result.ok = not result.problems
    return result


@dataclass
class Recorded:
    """The rows every task's checks compare against, read once per audit rather than once per task
    (reading them per task made `audit --probe` quadratic in the number of tasks)."""

    base_sha256: str | None
    bundles: dict[str, BundleRecord]
    unchanged_after: dict[int | None, bool]

    @classmethod
    def read(cls, registry: Registry) -> Recorded:
        base = registry.base_model()
        every = registry.tasks(include_retired=True)
        ready = [t.name for t in every if t.status == "ready"]
        return cls(
            None if base is None else base.sha256,
            registry.bundles(ready, check_signatures=False) if ready else {},
            {t.position: bool((t.proof or {}).get("unchanged")) for t in every},
        )


def record_problems(
    runner: Runner, task: TaskRecord, registration: EvaluationRecord, tolerance: float,
    recorded: Recorded, reevals: list[EvaluationRecord],
) -> list[str]:  # fmt: skip
    """Rows that must agree with each other or with the attached model, so an edit to one of them
    shows even without a signing key: labels and parameter counts against the bundle, the proof
    against the base and bundle rows, and re-evaluations against the registration score wherever
    the proof of the task added at that step says earlier tasks were unchanged. `reevals` are the
    task's rows of kind reeval, or only those that differ from its registration rows
    (`Registry.reevals_unlike_registration`): the others cannot fail the check, and there is one
    per later addition."""
    model, problems = runner.model, []
    bundle = recorded.bundles[task.name]
    if list(model.spec(task.name).labels) != list(task.labels):
        problems.append(f"labels {task.labels} differ from the bundle's {list(model.spec(task.name).labels)}")
    if model.parameter_counts(task.name).to_dict() != bundle.param_counts:
        problems.append("recorded parameter counts differ from the bundle's")
    proof = task.proof or {}
    if proof.get("unchanged"):
        before = proof.get("before") or {}
        base = recorded.base_sha256
        if before != proof.get("after") or (base is not None and before.get("base_sha256") != base):
            problems.append("the hash proof is inconsistent (before != after, or not the registry's base)")
        for other, sha in (before.get("bundle_files") or {}).items():
            if other in recorded.bundles and recorded.bundles[other].sha256 != sha:
                problems.append(f"the hash proof records {other}'s bundle as {sha[:16]}, its row says otherwise")
    for e in reevals:
        if (e.metric, e.split) != (registration.metric, registration.split) or not recorded.unchanged_after.get(
            e.after_tasks
        ):
            continue
        if abs(e.value - registration.value) > tolerance or (
            tolerance == 0 and e.predictions_sha256 != registration.predictions_sha256
        ):
            problems.append(
                f"re-evaluation after {e.after_tasks} tasks records {e.value:.6f}, but the task was "
                f"unchanged since it scored {registration.value:.6f}"
            )
    return problems


def bundle_rows(registry: Registry, names: list[str], audits: dict[str, TaskAudit]) -> dict[str, BundleRecord]:
    """The bundle rows of `names` (with a key, each checked against its task's signature) in one
    query; if that fails, task by task, so the failure lands on its task, which is left out."""
    try:
        return registry.bundles(names)
    except CadaptError:
        pass
    out = {}
    for name in names:
        try:
            out[name] = registry.verify_bundle(name)
        except CadaptError as exc:
            audits[name].problems.append(str(exc))
    return out


def bundle_problem(registry: Registry, name: str) -> str | None:
    """What is wrong with a bundle that would not load, said against its row (missing, size, sha256)
    by `verify_bundle`, which is only run then: loading already checks the sha256 of the bytes it
    reads, so hashing every file beforehand would read each one twice."""
    try:
        registry.verify_bundle(name)
    except CadaptError as exc:
        return str(exc)
    return None


def stored_probes(registry: Registry, names: list[str], audits: dict[str, TaskAudit]) -> dict[str, Probe | None]:
    """The probes of `names`, read in one query; if that fails (a tampered row), task by task, so the
    failure lands on its task: None there, with the problem recorded. Tasks without one are absent."""
    try:
        return {
            name: probe_from(data, name, registry) for name, data in registry.read_artifacts(PROBE_KIND, names).items()
        }
    except CadaptError:
        pass
    out: dict[str, Probe | None] = {}
    for name in names:
        try:
            probe = load_probe(registry, name)
        except CadaptError as exc:
            audits[name].problems.append(str(exc))
            out[name] = None
            continue
        if probe is not None:
            out[name] = probe
    return out


def probe_audit(
    runner: Runner, names: list[str], tolerance: float, note: str | None = None, recorded: Recorded | None = None
) -> list[TaskAudit]:
    """Hashes, signatures, the rows' agreement and the probe of every task, a round at a time, with
    one registry read per round for bundles, probes, registration scores and the re-evaluations
    that differ from them (not every task's whole history: one row per later addition)."""
    registry, model = runner.registry, runner.model
    recorded = recorded or Recorded.read(registry)
    tasks = {t.name: t for t in registry.tasks()}
    results: list[TaskAudit] = []
    for chunk in rounds(names):
        audits = {name: TaskAudit(task=name, ok=False, confirmed_by="probe") for name in chunk}
        attached = []
        for name, record in bundle_rows(registry, chunk, audits).items():
            try:
                runner.attach(name, record)  # its bytes checked against the row's sha256 as they are read
                attached.append(name)
            except CadaptError as exc:
                audits[name].problems.append(bundle_problem(registry, name) or str(exc))
        stored = stored_probes(registry, attached, audits)
        registrations = registry.evaluations_of(attached, kind="registration")
        unlike = registry.reevals_unlike_registration(attached)
        probes = []
        for name in attached:
            result, probe = audits[name], stored.get(name)
            if name not in stored:
                result.problems.append("no probe stored (registered before probes existed): run a full audit")
                continue
            if probe is None:
                continue
            probes.append(probe)
            task = tasks[name]
            registration = [e for e in registrations[name] if e.metric == task.primary_metric]
            if registration:
                result.recorded = result.measured = registration[0].value
                checked = record_problems(runner, task, registration[0], tolerance, recorded, unlike[name])
                result.problems.extend(checked)
        for outcome in check(model, probes, tolerance):
            audits[outcome.task].probe_max_diff = outcome.max_abs_diff
            if not outcome.ok:
                audits[outcome.task].problems.append(f"probe outputs differ: {outcome.reason}")
        for name, result in audits.items():
            result.ok = not result.problems
            if note:
                result.notes.append(note)
            if model.isolates_tasks and name in model.tasks:
                model.remove_task(name)
        results.extend(audits.values())
    return results


def audit(
    runner: Runner, tolerance: float = 0.0, probe_only: bool = False, refs: Sequence[str] | None = None
) -> AuditReport:
    """Audits every ready task; base-weight mismatches surface as a problem on every task. Then
    fills the accuracy matrix's holes (concurrent.py) and records the outcome as the registry's
    latest audit (audit_record.py): the only things an audit writes.

    `refs` (task references, core/versions.py: ``sst2`` its current version, ``sst2@2``,
    ``sst2@production``) audits only the versions they name and fills only their holes; a retired
    or unfinished one is refused with its typed error. Such an audit is not recorded as the
    registry's latest, which speaks for every task."""
    tasks = runner.registry.tasks()
    partial = None
    if refs:
        chosen = {t.name for t in runner.registry.resolve_ready(refs, "audit").values()}
        tasks = [t for t in tasks if t.name in chosen]
        partial = {"recorded": False, "reason": f"an audit of {', '.join(t.name for t in tasks)} only"}
    after = stream_top(runner.registry)
    mode = "probe" if probe_only else "full"
    try:
        runner.load_model()
    except CadaptError as exc:
        report = AuditReport([TaskAudit(t.name, False, [str(exc)]) for t in tasks], tolerance, mode, after_tasks=after)
        report.record = partial or record_audit(runner.registry, report)
        return report
    names, recorded = [t.name for t in tasks], Recorded.read(runner.registry)
    if probe_only:
        report = AuditReport(probe_audit(runner, names, tolerance, recorded=recorded), tolerance, mode)
    else:
        report = AuditReport([audit_task(runner, name, tolerance, recorded) for name in names], tolerance, mode)
    holes = [h for h in matrix_holes(runner.registry) if partial is None or h.task in names]
    report.holes = fill_holes(runner, holes, probe_only)
    report.after_tasks = after
    report.record = partial or record_audit(runner.registry, report)
    return report
