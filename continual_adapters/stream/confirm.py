"""Proving that adding a task left every earlier task as it was, at a cost that does not grow with
their datasets.

Each task stores a probe when it is registered (training/probe.py: a few tokenized evaluation
rows and their exact logits). Confirming the earlier tasks replays their probes, a group of
tasks at a time (attached, replayed in mixed batches, released, so memory stays bounded), and
demands bit-identical logits; their matrix entries carry the last full score forward, marked
"probe". `full` re-scores every earlier task on its recorded data instead (marked "full"); a
task whose data is gone is then confirmed by its probe and said to be so. A task registered
before probes existed is re-scored in full once and gets its probe then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from continual_adapters.core.errors import DataError, IntegrityError
from continual_adapters.core.model import ContinualModel
from continual_adapters.registry import BundleRecord, EvaluationDraft, EvaluationRecord, Registry, TaskRecord
from continual_adapters.training.loop import Encoded, Evaluation
from continual_adapters.training.probe import Probe, build_probe, check, parse_probe, probe_bytes

#: Earlier tasks attached at once while confirming: bounds memory whatever the stream's length.
TASKS_PER_ROUND = 16
PROBE_KIND = "probe"


@dataclass
class Confirmed:
    """The evaluation rows for the earlier tasks, and what was measured to write them."""

    drafts: list[EvaluationDraft] = field(default_factory=list)
    rescored: dict[str, float] = field(default_factory=dict)
    probes: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def load_probe(registry: Registry, name: str) -> Probe | None:
    """The task's stored probe, sha256-checked; None for a task registered before probes existed."""
    if registry.artifact(name, PROBE_KIND) is None:
        return None
    return probe_from(registry.read_artifact(name, PROBE_KIND), name, registry)


def probe_from(data: bytes, name: str, registry: Registry) -> Probe:
    """A stored probe's bytes (already sha256-checked by the registry), parsed and owned by `name`."""
    probe = parse_probe(data, f"{registry.store.url}: probe of task {name!r}")
    if probe.task != name:
        raise IntegrityError(f"the probe stored for task {name!r} belongs to task {probe.task!r}")
    return probe


def skipped(tasks: list[TaskRecord]) -> Confirmed:
    """The rows of tasks left unchecked (`--reeval none`): the matrix says so rather than leave a hole."""
    return Confirmed(
        [EvaluationDraft(t.name, t.data["eval_split"], t.primary_metric, 0.0, kind="skipped") for t in tasks]
    )


def rounds(names: list[str], size: int = TASKS_PER_ROUND) -> Iterator[list[str]]:
    for start in range(0, len(names), size):
        yield names[start : start + size]


class EarlierTasks:
    """Confirms a registry's earlier tasks against a live model (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        model: ContinualModel,
        attach: Callable[[str, BundleRecord], None],
        rescore: Callable[[str], tuple[Evaluation, Encoded]],
    ):
        self.registry, self.model, self.attach, self.rescore = registry, model, attach, rescore

    def confirm(self, names: list[str], policy: str, keep_attached: bool = False) -> Confirmed:
        """Every registry read is one query per round, not per task: at 200 tasks the per-task reads
        cost more than replaying the probes (docs/scale.md)."""
        confirmed = Confirmed()
        tasks = {task.name: task for task in self.registry.tasks()}
        for chunk in rounds(names):
            for name, record in self.registry.bundles(chunk).items():
                self.attach(name, record)
            self._confirm_round({name: tasks[name] for name in chunk}, policy, confirmed)
            if not keep_attached:
                for name in chunk:
                    self.model.remove_task(name)
        return confirmed

    def _confirm_round(self, tasks: dict[str, TaskRecord], policy: str, confirmed: Confirmed) -> None:
        chunk = list(tasks)
        stored = self.registry.read_artifacts(PROBE_KIND, chunk)
        probes = {name: probe_from(stored[name], name, self.registry) if name in stored else None for name in chunk}
        full = set(chunk) if policy == "full" else {n for n in chunk if probes[n] is None}
        unscored: set[str] = set()
        for name in sorted(full, key=chunk.index):
            task = tasks[name]
            try:
                evaluation, encoded = self.rescore(name)
            except DataError as exc:
                if not str(exc).startswith("data unavailable"):
                    raise
                if not self.model.isolates_tasks:
                    # Shared weights changed its outputs on purpose: no probe can stand in for a score.
                    confirmed.unavailable[name] = f"{exc}; not scored at this step"
                    split = task.data["eval_split"]
                    confirmed.drafts.append(EvaluationDraft(name, split, task.primary_metric, 0.0, kind="skipped"))
                    unscored.add(name)
                    continue
                if probes[name] is None:
                    raise
                confirmed.unavailable[name] = str(exc)
                continue
            confirmed.rescored[name] = evaluation.scores[task.primary_metric]
            split = task.data["eval_split"]
            confirmed.drafts.extend(
                EvaluationDraft(name, split, m, v, evaluation.predictions_sha256, kind="reeval", confirmation="full")
                for m, v in evaluation.scores.items()
            )
            if probes[name] is None:
                self._backfill_probe(name, encoded)
        skip = set(confirmed.rescored) | unscored
        replayed = [probe for name, probe in probes.items() if probe is not None and name not in skip]
        names = [probe.task for probe in replayed]
        histories = self.registry.evaluations_of(names, full_only=True) if replayed else {}
        for result in check(self.model, replayed):
            if not result.ok:
                raise IntegrityError(
                    f"earlier task {result.task!r} no longer gives its recorded outputs: {result.reason} "
                    f"(max difference {result.max_abs_diff:.3g})"
                )
            confirmed.probes[result.task] = result.max_abs_diff
            confirmed.drafts.extend(carried(tasks[result.task], histories.get(result.task, [])))

    def _backfill_probe(self, name: str, encoded: Encoded) -> None:
        """A task from before probes existed gets one now, from the outputs just re-scored in full."""
        probe = build_probe(self.model, name, encoded)
        self.registry.add_artifact(name, self.registry.write_artifact(name, PROBE_KIND, probe_bytes(probe)))


def carried(task: TaskRecord, history: list[EvaluationRecord]) -> list[EvaluationDraft]:
    """The task's last full scores (registration or a full re-score) on its split, carried forward."""
    split = task.data["eval_split"]
    latest: dict[str, EvaluationRecord] = {}
    for e in history:
        full = e.kind == "registration" or (e.kind == "reeval" and e.confirmation in (None, "full"))
        if full and e.split == split and (e.metric not in latest or e.after_tasks >= latest[e.metric].after_tasks):
            latest[e.metric] = e
    return [
        EvaluationDraft(task.name, split, m, e.value, e.predictions_sha256, kind="reeval", confirmation="probe")
        for m, e in latest.items()
    ]
