"""Task-stream scenarios: one YAML file names the tasks, the encoder and the methods to compare.

A scenario runs every method over the same ordered stream, each method (and seed) into a
registry of its own under the output folder, through the same `Runner` as `cadapt add-task`.
Runs resume: a task already `ready` in a method's registry is skipped, so an interrupted
hour-long comparison picks up where it stopped. The comparison itself is in `comparison.py`.

Format (see `scenarios/*.yaml`)::

    name: smoke
    encoder: sentence-transformers/all-MiniLM-L6-v2   # optional, default encoder
    seeds: [0]
    train: {epochs: 1, max_length: 64}                 # TrainConfig fields, shared by all methods
    data: {max_train: 160, max_eval: 100}              # caps for every task (a task may override);
                                                       # max_validation caps validation alone
    methods:                                           # label -> method settings (settings.py)
      adapters: {adapter_size: 64, lr: 3.0e-3}
      naive: {lr: 5.0e-5}
      replay: {lr: 1.0e-4, replay_size: 500}           # a method's own options (MethodOptions)
      mtl: {lr: 1.0e-4}                                # multitask upper bound: no registry (multitask.py)
    tasks:
      - {name: sst2, data: sst2}                       # a folder under the data directory
      - {name: agnews, dataset: ag_news, text_column: text}   # or a hub id (online users)
    split: {data: clinc150, by: domains.json, prefix: clinc}  # instead of tasks: one task per domain
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from continual_adapters.core.config import TrainConfig, validate_task_name
from continual_adapters.core.errors import ConfigError, DataError, UnitsFailedError
from continual_adapters.data.reader import default_data_dir, read_dataset_json, resolve_data_path
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.files.atomic import atomic_write
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.settings import MethodSettings

if TYPE_CHECKING:
    from continual_adapters.stream.audit import AuditReport
    from continual_adapters.stream.executors import Executor

DATA_KEYS = (
    "max_train",
    "max_eval",
    "max_validation",
    "seed",
    "text_column",
    "pair_column",
    "label_column",
    "metric",
    "head",
)


@dataclass(frozen=True)
class ScenarioTask:
    name: str
    data: DataSpec
    dataset_name: str


@dataclass(frozen=True)
class Scenario:
    name: str
    tasks: tuple[ScenarioTask, ...]
    methods: tuple[MethodSettings, ...]
    seeds: tuple[int, ...] = (0,)
    encoder: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""
    notes: str = ""
    source: str = ""

    def method(self, label: str) -> MethodSettings:
        for settings in self.methods:
            if settings.label == label:
                return settings
        raise ConfigError(
            f"scenario {self.name!r} has no method {label!r} (it has {', '.join(m.label for m in self.methods)})"
        )

    def run_dir(self, out: Path, settings: MethodSettings, seed: int) -> Path:
        return out / settings.label / f"seed{seed}"


def _task_spec(entry: dict, data_dir: Path | None, defaults: dict) -> tuple[DataSpec, str]:
    entry = dict(entry)
    entry.pop("name", None)
    overrides = {**defaults, **{k: entry.pop(k) for k in list(entry) if k in DATA_KEYS}}
    keep = entry.pop("keep_labels", None)
    if "data" in entry:
        folder = entry.pop("data")
        if entry:
            raise ConfigError(f"unknown task settings {sorted(entry)}")
        if keep is not None:
            labels = [
                label
                for label in read_dataset_json(resolve_data_path(folder, data_dir))["labels"]
                if label in set(keep)
            ]
            overrides.update(keep_labels=tuple(keep), labels=tuple(labels))
        return DataSpec.from_folder(folder, data_dir, **overrides), str(folder)
    if "dataset" in entry:
        dataset, subset = entry.pop("dataset"), entry.pop("subset", None)
        if entry:
            raise ConfigError(f"unknown task settings {sorted(entry)}")
        return DataSpec(dataset=dataset, subset=subset, keep_labels=keep, **overrides), dataset
    raise ConfigError("each task needs 'data' (a folder) or 'dataset' (a hub id)")


def _split_tasks(split: dict, data_dir: Path | None, defaults: dict) -> list[dict]:
    """One task per group of labels, e.g. CLINC150's 10 domains from its domains.json."""
    folder = resolve_data_path(split["data"], data_dir)
    mapping_file = folder / split.get("by", "domains.json")
    try:
        mapping = json.loads(mapping_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{mapping_file}: cannot read the label -> group map ({exc})") from None
    groups: dict[str, list[str]] = {}
    for label, group in mapping.items():
        groups.setdefault(str(group), []).append(str(label))
    prefix = split.get("prefix", folder.name)
    return [
        {
            "name": f"{prefix}-{re.sub(r'[^a-z0-9]+', '-', group.lower()).strip('-')}",
            "data": split["data"],
            "keep_labels": labels,
        }
        for group, labels in groups.items()
    ]


def load_scenario(path: str | Path, data_dir: str | Path | None = None) -> Scenario:
    """Parses and validates a scenario file, resolving every task's data (nothing is trained)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read scenario ({exc})") from None
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ConfigError(f"{path}: a scenario is a mapping with at least 'name', 'tasks' and 'methods'")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    defaults = dict(raw.get("data") or {})
    entries = list(raw.get("tasks") or [])
    if raw.get("split"):
        entries += _split_tasks(raw["split"], data_dir, defaults)
    if not entries:
        raise ConfigError(f"{path}: no tasks")
    tasks = []
    for entry in entries:
        name = validate_task_name(str(entry.get("name", "")))
        spec, dataset = _task_spec(entry, data_dir, defaults)
        tasks.append(ScenarioTask(name, spec, dataset))
    if len({t.name for t in tasks}) != len(tasks):
        raise ConfigError(f"{path}: task names repeat")
    methods = tuple(MethodSettings.parse(label, values) for label, values in (raw.get("methods") or {}).items())
    if not methods:
        raise ConfigError(f"{path}: no methods")
    known = {f.name for f in fields(TrainConfig)}
    train = raw.get("train") or {}
    if set(train) - known:
        raise ConfigError(f"{path}: unknown train settings {sorted(set(train) - known)}")
    return Scenario(
        name=str(raw["name"]),
        tasks=tuple(tasks),
        methods=methods,
        seeds=tuple(int(s) for s in raw.get("seeds", [0])),
        encoder=raw.get("encoder"),
        train=TrainConfig(**train),
        description=str(raw.get("description", "")).strip(),
        notes=str(raw.get("notes", "")).strip(),
        source=str(path),
    )


@dataclass
class RunOutcome:
    label: str
    seed: int
    registry: str
    added: list[str]
    skipped: list[str]


#: Per run folder: each task's per-example correctness at the end of the stream, from the audit's
#: full re-score; the comparison's bootstrap intervals resample it (report/comparison.py).
FINAL_CORRECT = "final_correct.json"


def write_correct(
    folder: Path, correct: Mapping[str, Sequence[bool]], audited: Mapping[str, object] | None = None
) -> None:
    """`FINAL_CORRECT` in `folder`: one 0/1 string per task, and the audit that re-scored them
    where one ran (`audited`: its verdict and the tasks it covered), so that a report made later
    from the folder alone, days after the run's log scrolled away, can still say whether the run
    passed. Written all or nothing."""
    record: dict[str, object] = {"tasks": {n: "".join("1" if c else "0" for c in v) for n, v in correct.items()}}
    if audited is not None:
        record["audit"] = dict(audited)
    atomic_write(folder / FINAL_CORRECT, json.dumps(record, sort_keys=True).encode())


def write_final_correct(folder: Path, report: AuditReport) -> None:
    """One 0/1 string per classification task that was re-scored in full (probe-confirmed tasks
    have no fresh predictions and are left out: the comparison then gives no interval), and the
    audit's verdict with the tasks it covered."""
    correct = {t.task: t.correct for t in report.tasks if t.correct is not None}
    write_correct(folder, correct, {"ok": report.ok, "tasks": [t.task for t in report.tasks]})


def run_method(
    scenario: Scenario,
    settings: MethodSettings,
    seed: int,
    registry: Registry,
    device: str | None = None,
    progress: bool = True,
    log=print,
) -> RunOutcome:
    """Adds the scenario's tasks, in order, that this registry does not hold yet."""
    from continual_adapters.stream.runner import Runner

    if not registry.initialized():
        registry.init()
    # An interrupted earlier run (killed mid-task) leaves a pending row whose owner is dead and the
    # files it had written: both go, and that task is trained again below. A live owner's are kept.
    repaired = registry.fsck(repair=True)
    if repaired.dead_pending or repaired.orphan_files:
        log(
            f"[{settings.label} seed {seed}] recovered from an interrupted run: removed pending "
            f"{', '.join(repaired.dead_pending) or 'none'} and {len(repaired.orphan_files)} orphan file(s)"
        )
    runner = Runner(
        registry,
        encoder=scenario.encoder,
        device=device,
        progress=progress,
        method=settings.method,
        top_layers=settings.top_k,
    )
    ready = {t.name for t in registry.tasks()}
    outcome = RunOutcome(settings.label, seed, repr(registry), [], [])
    train = settings.train_config(scenario.train, seed)
    for position, task in enumerate(scenario.tasks, 1):
        if task.name in ready:
            log(f"[{settings.label} seed {seed}] skip {position}/{len(scenario.tasks)}: {task.name} (already ready)")
            outcome.skipped.append(task.name)
            continue
        log(f"[{settings.label} seed {seed}] task {position}/{len(scenario.tasks)}: {task.name}")
        result = runner.add_task(
            task.name,
            task.data,
            settings.adapter(),
            train,
            auto_size=settings.adapter_size == "auto",
            method=settings.method,
            options=settings.options(),
        )
        if result is None:  # another process of a multi-process launch registers; this one only trained
            continue
        confirmed = [f"re-scored {k} {v:.4f}" for k, v in result.reevaluated.items()]
        confirmed += [f"{len(result.proof['probes'])} confirmed by probe"] if result.proof.get("probes") else []
        log(
            f"[{settings.label} seed {seed}]   {task.name}: {result.task.primary_metric} "
            f"{result.scores[result.task.primary_metric]:.4f}" + "".join(f"; {c}" for c in confirmed)
        )
        outcome.added.append(task.name)
    return outcome


def run_scenario(
    scenario: Scenario,
    out: str | Path,
    methods: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
    registry: str | None = None,
    artifacts: str | None = None,
    audit_runs: bool = True,
    train: bool = True,
    log=print,
    executor: Executor | None = None,
) -> dict[tuple[str, int], bool]:
    """Runs every (method, seed) into `out/<method>/seed<k>/registry.db` and audits each; the
    multitask upper bound (`mtl`) is trained on every task at once into that folder's result.json
    instead (stream/multitask.py: no registry, nothing to audit).

    `registry` (with its `artifacts` folder, for a server URL) puts a single-method, single-seed
    scenario into that registry instead (the README's demo uses ./registry.db). `train=False` only
    audits what is there (to report on a run still in progress elsewhere). `executor` says where
    the runs go (stream/executors.py): one after another in this process by default, or as Ray
    tasks. Returns whether each audited run's audit passed; an executor that lets every run end
    raises `UnitsFailedError` after the last one if any failed, carrying the others' audits.
    """
    from continual_adapters.stream.executors import LocalExecutor
    from continual_adapters.stream.units import plan_units

    units = plan_units(
        scenario,
        out,
        methods,
        registry=registry,
        artifacts=artifacts,
        device=device,
        progress=progress,
        audit=audit_runs,
        train=train,
    )
    results = (executor or LocalExecutor()).run(units, log)
    audits = {r.key: r.audit_ok for r in results if r.error is None and r.audit_ok is not None}
    failures = {r.name: r.error for r in results if r.error is not None}
    if failures:
        raise UnitsFailedError(failures, audits, len(units))
    return audits
