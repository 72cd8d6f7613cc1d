"""Moving a registry to a new base encoder: every task retrained on it, in stream order, into a new registry.

Adapters only mean something on the exact weights they were trained with, so a better encoder
cannot be swapped under a registry; its tasks must be trained again. Everything needed to do so
is recorded with each task: its data (the split files read, with their sha256, caps and seeds:
`task.data`) and how it was trained (the bundle's hyperparameters and spec). `rebase` reads both
and calls `Runner.add_task` on a second registry, so each retrained task goes through the one
path every task takes, and the target holds the same proofs as any registry (hashes before and
after, probes, golden logits: `cadapt audit` checks them).

What is refused, and why:

* a source of shared-encoder methods (naive, EWC, replay, LwF): each task's outputs there depend
  on the whole sequence of encoders trained before it, so one task cannot be carried over on its
  own, and a skipped or unselected task would change every later one (a new stream on the new
  encoder is a scenario run, `cadapt run-scenario`);
* a target that holds tasks the source does not, or was built on another encoder.

A task whose data is gone (a file missing, or one whose sha256 is no longer the recorded one) is
not retrained on something else: it is listed as skipped, with the reason, and the others go on.
Rerunning continues: tasks already ready in the target are kept as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from continual_adapters.core.config import (
    SHARED_METHODS,
    AdapterConfig,
    MethodOptions,
    TrainConfig,
    method_family,
)
from continual_adapters.core.errors import ConfigError, DataError, TaskNotFoundError
from continual_adapters.data.taskdata import DataSpec, recorded_spec
from continual_adapters.files.atomic import sha256_file
from continual_adapters.registry import BundleRecord, Registry, TaskRecord, TaskSummary
from continual_adapters.stream.job import AUTO_SIZES, REEVAL_POLICIES
from continual_adapters.stream.runner import Runner

#: What happened to each task: trained on the new encoder by this run, already ready in the target
#: (an earlier run of the same rebase), or skipped, with the reason.
REBASED, READY, SKIPPED = "rebased", "ready", "skipped"


class RebaseError(ConfigError):
    """A rebase that cannot be done as asked (see the module docstring for each refusal)."""


@dataclass(frozen=True)
class Recipe:
    """How a task was added, read back from its records: `Runner.add_task`'s arguments."""

    data: DataSpec
    method: str
    adapter: AdapterConfig
    train: TrainConfig
    auto_size: bool
    options: MethodOptions
    top_layers: int
    reeval: str


@dataclass
class RebaseRow:
    """One task of the comparison: its score, size and training time on the old and the new base."""

    task: str
    position: int | None
    method: str
    metric: str
    eval_split: str
    status: str
    reason: str | None = None
    old_score: float | None = None
    new_score: float | None = None
    old_params: int | None = None
    new_params: int | None = None
    old_train_s: float | None = None
    new_train_s: float | None = None
    #: Whether the target recorded the same split files (sha256), sizes and eval split as the
    #: source: then both scores are on the same rows. None while the task is not in the target.
    same_data: bool | None = None

    @property
    def delta(self) -> float | None:
        return None if self.old_score is None or self.new_score is None else self.new_score - self.old_score


@dataclass
class RebaseResult:
    """The whole rebase: both bases, one row per selected task in the source's stream order, the
    ready source tasks left out by `tasks`, and this run's wall time."""

    source: str
    target: str
    old_base: dict[str, Any]
    new_base: dict[str, Any] | None
    rows: list[RebaseRow]
    excluded: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0

    def names(self, status: str) -> list[str]:
        return [row.task for row in self.rows if row.status == status]

    @property
    def skipped(self) -> dict[str, str]:
        return {row.task: row.reason or "" for row in self.rows if row.status == SKIPPED}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "old_base": self.old_base,
            "new_base": self.new_base,
            "tasks": [{**asdict(row), "delta": row.delta} for row in self.rows],
            "rebased": self.names(REBASED),
            "ready": self.names(READY),
            "skipped": self.skipped,
            "excluded": self.excluded,
            "wall_time_s": round(self.wall_time_s, 3),
        }


def current_tasks(registry: Registry) -> list[TaskRecord]:
    """The tasks a rebase carries over, in stream order: each task's current version. Until tasks have
    versions that is the one ready row per name; with versions, only this function changes."""
    return registry.tasks()


def encoder_name(encoder: str) -> str:
    """A local encoder folder by its absolute path, as the target will record it (a relative path
    would name another folder, or none, from the directory a later command runs in); a hub id as given."""
    path = Path(encoder).expanduser()
    return str(path.resolve()) if path.is_dir() else encoder


def recipe(task: TaskRecord, bundle: BundleRecord) -> Recipe:
    """`Runner.add_task`'s arguments for `task`, from what its registration recorded: the data spec
    with the files actually read, the training settings, the adapter (or the size search that chose
    it), the method's own options, and the policy that confirmed the tasks before it."""
    hyper = bundle.hyperparameters
    sizes = tuple(entry.get("bottleneck") for entry in hyper.get("size_search", []))
    auto = sizes == AUTO_SIZES
    adapter = AdapterConfig(**(hyper.get("adapter") or bundle.config["task"].get("adapter") or {}))
    known = {f.name for f in fields(TrainConfig)}
    reeval = (task.proof or {}).get("confirmation") or "probe"
    return Recipe(
        data=recorded_spec(task.data),
        method=task.method,
        adapter=AdapterConfig(64, adapter.activation, adapter.init_std) if auto else adapter,
        train=TrainConfig(**{k: v for k, v in hyper.items() if k in known}),
        auto_size=auto,
        options=MethodOptions(**hyper.get("options", {})),
        top_layers=int(bundle.config["task"].get("top_k") or 0),
        reeval=reeval if reeval in REEVAL_POLICIES else "probe",
    )


def data_problem(task: TaskRecord) -> str | None:
    """Why the task's recorded data cannot be read again as it was, or None: a split file that no
    longer exists, or whose sha256 is not the one recorded (the same rows could not be promised).
    A hub dataset is checked when it is loaded (its fingerprint), not here."""
    seen: set[str] = set()
    for split, source in (task.data.get("splits") or {}).items():
        path, recorded = source.get("path"), source.get("sha256")
        if source.get("kind") != "file" or not path or path in seen:
            continue
        seen.add(path)
        if not Path(path).is_file():
            return f"data unavailable: {path} (the task's recorded {split} file) no longer exists"
        if recorded and sha256_file(path) != recorded:
            return f"data changed: {path} (the task's {split} file) no longer has the recorded sha256 {recorded}"
    return None


def same_data(old: TaskRecord, new: TaskRecord) -> bool:
    """Whether both registries recorded the same eval split, split files (sha256) and split sizes."""

    def recorded(task: TaskRecord) -> tuple[Any, ...]:
        splits = task.data.get("splits") or {}
        hashes = {k: (v.get("sha256"), v.get("fingerprint"), v.get("limit")) for k, v in splits.items()}
        return task.data.get("eval_split"), hashes, task.data.get("sizes")

    return recorded(old) == recorded(new)


def _base(registry: Registry) -> dict[str, Any] | None:
    base = registry.base_model()
    if base is None:
        return None
    return {"name": base.name, "sha256": base.sha256, "parameters": base.num_parameters, "layers": base.num_layers}


def _check_source(source: Registry, target: Registry) -> list[TaskRecord]:
    if (source.url, source.root) == (target.url, target.root):
        raise RebaseError(f"the target is the source registry ({source.url}): rebase into a new registry")
    tasks = current_tasks(source)
    if not tasks:
        raise RebaseError(f"{source.url} holds no ready task to rebase")
    shared = sorted({t.method for t in tasks if t.method in SHARED_METHODS})
    if shared:
        raise RebaseError(
            f"{source.url} holds {', '.join(shared)} tasks: a shared-encoder method's tasks depend on every "
            "encoder trained before them, so they cannot be carried to a new encoder one by one; "
            "run the stream again on the new encoder (cadapt run-scenario) instead"
        )
    return tasks


def _check_target(target: Registry, tasks: list[TaskRecord], encoder: str) -> dict[str, TaskRecord]:
    """The target's tasks by name (any status), once it is known to be this rebase's target."""
    if not target.initialized():
        target.init()
    target.fsck(repair=True)  # a killed earlier run leaves a pending row and files: both go
    held = {t.name: t for t in target.tasks(include_retired=True, include_pending=True)}
    foreign = sorted(set(held) - {t.name for t in tasks})
    if foreign:
        raise RebaseError(f"{target.url} holds tasks that are not the source's: {', '.join(foreign)}")
    base = target.base_model()
    if base is not None and base.name != encoder:
        raise RebaseError(f"{target.url} was built on {base.name}; --encoder {encoder} needs a registry of its own")
    return held


def _select(tasks: list[TaskRecord], names: list[str] | None) -> tuple[list[TaskRecord], list[str]]:
    if names is None:
        return tasks, []
    known = {t.name for t in tasks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TaskNotFoundError(
            f"not a ready task of the source: {', '.join(unknown)}; ready tasks: {', '.join(sorted(known))}"
        )
    return [t for t in tasks if t.name in names], [t.name for t in tasks if t.name not in names]


def _not_addable(held: TaskRecord | None) -> str | None:
    if held is None or held.status == "ready":
        return None
    if held.status == "pending":
        return f"pending in the target (being added by pid {held.owner_pid} on {held.owner_host})"
    return f"{held.status} in the target (a task name is used once per registry)"


def rebase(
    source: Registry,
    target: Registry,
    encoder: str,
    tasks: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
    reeval: str | None = None,
    log: Callable[[str], None] | None = None,
) -> RebaseResult:
    """Retrains the source's ready tasks (or the named ones) on `encoder` into `target`, in the
    source's stream order, and compares old and new. `reeval` overrides how each addition confirms
    the tasks before it (default: as the source recorded). Tasks ready in the target are kept;
    tasks whose data is gone are skipped and listed."""
    started = time.perf_counter()
    if reeval is not None and reeval not in REEVAL_POLICIES:
        raise ConfigError(f"unknown re-evaluation policy {reeval!r}; choose one of {', '.join(REEVAL_POLICIES)}")
    encoder = encoder_name(encoder)
    every = _check_source(source, target)
    chosen, excluded = _select(every, tasks)
    held = _check_target(target, every, encoder)
    method = method_family(chosen[0].method)
    bundles = source.bundles([t.name for t in chosen])
    top_layers = recipe(chosen[0], bundles[chosen[0].name]).top_layers if method == "top-k" else 0
    runner = Runner(target, encoder=encoder, device=device, progress=progress, method=method, top_layers=top_layers)
    statuses: dict[str, tuple[str, str | None]] = {}
    bar = tqdm(chosen, desc="rebase", unit="task", disable=not progress)
    for task in bar:
        bar.set_postfix_str(task.name)
        statuses[task.name] = _carry(runner, task, bundles[task.name], held.get(task.name), reeval)
        if log is not None:
            status, reason = statuses[task.name]
            log(f"{task.name}: {status}" + (f" ({reason})" if reason else ""))
    rows = _rows(source, target, chosen, bundles, statuses)
    return RebaseResult(
        source=source.url,
        target=target.url,
        old_base=_base(source) or {},
        new_base=_base(target),
        rows=rows,
        excluded=excluded,
        wall_time_s=time.perf_counter() - started,
    )


def _carry(
    runner: Runner, task: TaskRecord, bundle: BundleRecord, held: TaskRecord | None, reeval: str | None
) -> tuple[str, str | None]:
    """One task: kept if the target has it, skipped (with why) if it cannot be added, else retrained."""
    if held is not None and held.status == "ready":
        return READY, None
    blocked = _not_addable(held) or data_problem(task)
    if blocked:
        return SKIPPED, blocked
    how = recipe(task, bundle)
    try:
        runner.add_task(
            task.name,
            how.data,
            how.adapter,
            how.train,
            auto_size=how.auto_size,
            method=how.method,
            reeval=reeval or how.reeval,
            options=how.options,
        )
    except DataError as exc:  # the data is read before anything is written: the target is as it was
        return SKIPPED, str(exc)
    return REBASED, None


def _rows(
    source: Registry,
    target: Registry,
    chosen: list[TaskRecord],
    bundles: dict[str, BundleRecord],
    statuses: dict[str, tuple[str, str | None]],
) -> list[RebaseRow]:
    """The comparison, read back from both registries (so a task kept from an earlier run is
    compared exactly like one trained now)."""
    names = [t.name for t in chosen]
    old_table = {s.name: s for s in source.task_table() if s.name in names}
    new_table: dict[str, TaskSummary] = {s.name: s for s in target.task_table() if s.name in names}
    new_bundles = target.bundles(list(new_table)) if new_table else {}
    rows = []
    for task in chosen:
        status, reason = statuses[task.name]
        old, new = old_table[task.name], new_table.get(task.name)
        rows.append(
            RebaseRow(
                task=task.name,
                position=task.position,
                method=task.method,
                metric=task.primary_metric,
                eval_split=task.data.get("eval_split", ""),
                status=status,
                reason=reason,
                old_score=old.score,
                new_score=None if new is None else new.score,
                old_params=old.total_params,
                new_params=None if new is None else new.total_params,
                old_train_s=bundles[task.name].wall_time_s,
                new_train_s=new_bundles[task.name].wall_time_s if task.name in new_bundles else None,
                same_data=None if new is None else same_data(task, target.task(task.name)),
            )
        )
    return rows
