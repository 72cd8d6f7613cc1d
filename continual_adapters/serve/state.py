"""What the server serves: the registry's ready tasks, loaded and checked, as one immutable snapshot.

`TaskLoader.reload` compares the registry with what is loaded and brings the model in line: a new
ready task is attached (its bundle checked against the recorded sha256 as it is read), a removed
one detached, one re-registered under the same name replaced, and a bundle file that changed on
disk since it was loaded hashed again and, if it no longer matches, taken out of service. A bundle
that does not match its record is refused and reported (`ServingState.refused`), never served.

Only the batcher's worker thread calls `reload` and runs the model (batcher.py), so a reload
happens between two batches: no forward pass ever sees a half-attached task. Requests are checked
against the `ServingState` snapshot, replaced whole after each reload, and a task joins that
snapshot only once attached; so a request sees either the old set of tasks or the new one.

Rows name tasks by reference (core/versions.py): the snapshot maps ``sst2``, ``sst2@2``, ``sst2@prod``
to the ready versions they name, read at each reload, so a promotion (which moves no file) reaches
the server at its next poll; a bare name is the current version, "auto" routes among current ones.

Polling compares each served bundle file's inode, size and mtime (cheap: no read); `POST
/v1/reload` (`verify=True`) hashes every served file again. Nothing here writes to the registry:
a task without stored routing statistics is simply not routable by `task: "auto"`.

A registry of a shared-encoder method (naive, EWC, replay, LwF: one encoder trained through the
stream, a head per task) is served as `cadapt predict` runs it (`Runner.attach`): every ready task
loaded in stream order, so the encoder is the one the latest task left, under every task's head.
That is the state the registry's last accuracy-matrix row measured; earlier rows (and an earlier
task's registration score) describe encoders that no longer exist. Any change to its tasks reloads
them all, since an added task brings every task a new encoder, and a removed latest task takes
its encoder away; if the latest task's bundle is refused, so is every task, for the encoder they
would run on is not the recorded one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from continual_adapters.core.baselines import model_for_method
from continual_adapters.core.config import DEFAULT_TOP_LAYERS, VERSION_SEPARATOR
from continual_adapters.core.errors import CadaptError, IntegrityError, RegistryError, TaskNotFoundError
from continual_adapters.files.atomic import file_stamp, sha256_file
from continual_adapters.files.bundle import load_task
from continual_adapters.registry.artifacts import safe_path
from continual_adapters.stream.serving import settings_from
from continual_adapters.stream.taskid import CENTROIDS_KIND, TaskIdentifier, parse_statistics
from continual_adapters.training.loop import resolve_device

if TYPE_CHECKING:
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.registry import BaseModelRecord, BundleRecord, Registry, TaskRecord


@dataclass(frozen=True)
class ServedTask:
    """A task as served: what `/v1/tasks` lists and what its rows are run with."""

    name: str
    position: int | None
    labels: tuple[str, ...]
    head: str
    method: str
    metric: str
    score: float | None
    bundle_sha256: str
    param_counts: Mapping[str, Any]
    max_length: int
    precision: str
    routable: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "position": self.position,
            "labels": list(self.labels),
            "head": self.head,
            "method": self.method,
            "metric": self.metric,
            "score": self.score,
            "params": dict(self.param_counts),
            "bundle_sha256": self.bundle_sha256,
            "max_length": self.max_length,
            "precision": self.precision,
            "auto_routable": self.routable,
        }


@dataclass(frozen=True)
class Refusal:
    """A ready task that is not served, and why (a bundle not matching its sha256, most often)."""

    task: str
    reason: str
    sha256: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.task, "reason": self.reason, "bundle_sha256": self.sha256, "at": self.at}


@dataclass(frozen=True)
class ServingState:
    """One consistent view: the served tasks, the refused ones and the router over the served ones."""

    version: int = 0
    tasks: Mapping[str, ServedTask] = field(default_factory=lambda: MappingProxyType({}))
    refused: Mapping[str, Refusal] = field(default_factory=lambda: MappingProxyType({}))
    identifier: TaskIdentifier | None = None
    loaded_at: float = 0.0
    #: Task references (``sst2``, ``sst2@2``, ``sst2@production``) to the keys of the ready versions
    #: they name (`Registry.references`): a bare name is its task's current version.
    references: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def require(self, name: str) -> ServedTask:
        key = self.references.get(name)
        if key is None or key not in self.tasks:
            shown = key or name
            why = f": refused ({self.refused[shown].reason})" if shown in self.refused else ""
            served = ", ".join(self.tasks) or "none"
            version = f" (version {key})" if key not in (None, name) else ""
            raise TaskNotFoundError(f"no served task {name!r}{version}{why} (served: {served})")
        return self.tasks[key]


@dataclass
class ReloadReport:
    """What one reload changed."""

    version: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    served: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _file_problem(path: os.PathLike[str] | str, record: BundleRecord) -> str | None:
    """Why the file at `path` is not the bundle `record` describes, or None."""
    try:
        actual = sha256_file(path, follow_symlinks=False)
    except OSError as exc:
        return f"{path}: cannot read the bundle ({exc.strerror or exc})"
    if actual != record.sha256:
        return f"{path}: sha256 {actual} does not match the recorded {record.sha256}"
    return None


class TaskLoader:
    """Keeps a model's attached tasks in line with a registry (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        selection: tuple[str, ...] | None = None,
        encoder: str | None = None,
        device: str | None = None,
    ):
        self.registry, self.selection, self.encoder, self.device = registry, selection, encoder, device
        self.model: ContinualModel | None = None
        self.state = ServingState()
        self._stamps: dict[str, tuple[int, int, int] | None] = {}
        self._refused_stamps: dict[str, tuple[str, tuple[int, int, int] | None]] = {}
        self._shared_seen: object = None  # a shared-encoder registry's bundles as last loaded
        self._method: str | None = None  # the method the model was built for
        self._references: dict[str, str] = {}  # as the registry resolved them at this reload

    def _records(self) -> list[TaskRecord]:
        if not self.registry.initialized():
            raise RegistryError(f"no registry at {self.registry!r}: serving reads a registry, it never creates one")
        return self.registry.tasks()

    def _ensure_model(self, records: list[TaskRecord]) -> ContinualModel:
        """The registry's base encoder with its method's modules, built again when the registry's base
        or method changed (its first task was added after the server started on an empty registry)."""
        base = self.registry.base_model()
        method = records[0].method if records else self._method
        if (
            self.model is None
            or (base is not None and base.sha256 != self.model.base_sha256())
            or method != self._method
        ):
            self._method = method
            self._stamps.clear()
            self._refused_stamps.clear()
            self._shared_seen = None
            self.state = ServingState(version=self.state.version, loaded_at=self.state.loaded_at)
            self.model = self._load_model(base, records)
        return self.model

    def _load_model(self, base: BaseModelRecord | None, records: list[TaskRecord]) -> ContinualModel:
        """The model `Runner.load_model` builds for the registry's method, without the training
        runner: the base encoder (the registry's, unless `encoder` names one), checked against the
        base weights' sha256 the registry recorded."""
        method = records[0].method if records else "adapters"
        top_k = DEFAULT_TOP_LAYERS
        if method == "top-k":
            top_k = self.registry.bundle(records[0].name).config["task"].get("top_k", DEFAULT_TOP_LAYERS)
        model = model_for_method(method, self.encoder or (base.name if base else None), top_k)
        if base is not None and base.sha256 != model.base_sha256():
            raise IntegrityError(
                f"registry was built on base weights {base.sha256}, {model.base_name} has {model.base_sha256()}"
            )
        return model.to(resolve_device(self.device)).eval()

    def reload(self, verify: bool = False) -> ReloadReport:
        """Brings the model and the snapshot in line with the registry; `verify` hashes every served
        bundle file again instead of trusting an unchanged inode, size and mtime. Call it only from
        the thread that runs the model."""
        ready = self._records()
        model = self._ensure_model(ready)
        self._references = self.registry.references()  # `selection` too names versions by reference:
        self._chosen = None if self.selection is None else {self._references.get(r, r) for r in self.selection}
        if not model.isolates_tasks:
            return self._reload_shared(model, ready, verify)
        records = {t.name: t for t in ready if self._chosen is None or t.name in self._chosen}
        report = ReloadReport(version=self.state.version + 1)
        bundles = self._bundles(list(records), report)
        tasks = dict(self.state.tasks)
        refused = {name: r for name, r in self.state.refused.items() if name in records}
        for name in [n for n in tasks if n not in bundles]:
            self._detach(model, name, tasks)
            if name not in report.refused:
                report.removed.append(name)
        scores: dict[str, float | None] | None = None
        for name, record in bundles.items():
            path = safe_path(self.registry.root, record.path)
            stamp = file_stamp(path)
            current = tasks.get(name)
            if current is not None and current.bundle_sha256 == record.sha256:
                problem = None if stamp == self._stamps.get(name) and not verify else _file_problem(path, record)
                if problem is None:
                    self._stamps[name] = stamp
                    continue
                self._detach(model, name, tasks)
                report.refused[name] = problem
            elif current is None and self._refused_stamps.get(name) == (record.sha256, stamp) and not verify:
                continue  # refused before, and nothing about it changed since
            else:
                if current is not None:
                    self._detach(model, name, tasks)
                try:
                    load_task(model, path, expected_sha256=record.sha256)
                except CadaptError as exc:
                    report.refused[name] = str(exc)
                else:
                    if scores is None:
                        scores = {row.name: row.score for row in self.registry.task_table()}
                    tasks[name] = self._served(records[name], record, scores.get(name))
                    self._stamps[name] = stamp
                    refused.pop(name, None)
                    self._refused_stamps.pop(name, None)
                    (report.replaced if current is not None else report.added).append(name)
                    continue
            refused[name] = Refusal(name, report.refused[name], record.sha256, time.time())
            self._refused_stamps[name] = (record.sha256, stamp)
        for name, reason in report.refused.items():
            if name not in refused:
                refused[name] = Refusal(name, reason, None, time.time())
        return self._publish(model, tasks, refused, report, False)

    def _reload_shared(self, model: ContinualModel, ready: list[TaskRecord], verify: bool) -> ReloadReport:
        """`reload` for a shared-encoder registry (see the module docstring): nothing to do while its
        bundle rows and files look the same (unless `verify`), else every ready task loaded again in
        stream order, the selected ones served."""
        report = ReloadReport(version=self.state.version + 1)
        bundles = self._bundles([t.name for t in ready], report)
        paths = {name: safe_path(self.registry.root, record.path) for name, record in bundles.items()}
        seen = (tuple((n, r.sha256, file_stamp(paths[n])) for n, r in bundles.items()), tuple(sorted(report.refused)))
        if seen == self._shared_seen and not verify:
            report.version, report.served = self.state.version, len(self.state.tasks)
            return report
        moved, self._shared_seen = seen != self._shared_seen, seen
        for name in list(model.tasks):
            model.remove_task(name)
        loaded = []
        for task in ready:
            if task.name in bundles:
                try:
                    load_task(model, paths[task.name], expected_sha256=bundles[task.name].sha256)
                    loaded.append(task.name)
                except CadaptError as exc:
                    report.refused[task.name] = str(exc)
        latest = ready[-1].name if ready else None
        if latest in report.refused:
            for name in loaded:
                model.remove_task(name)
                report.refused[name] = f"its encoder is the one {latest} left, and {latest}'s bundle is refused"
            loaded = []
        scores = {row.name: row.score for row in self.registry.task_table()} if loaded else {}
        records = {t.name: t for t in ready}
        wanted = [n for n in loaded if self._chosen is None or n in self._chosen]
        tasks = {n: self._served(records[n], bundles[n], scores.get(n)) for n in wanted}
        old = self.state.tasks
        report.added = [n for n in tasks if n not in old]
        report.replaced = [n for n in tasks if n in old and old[n].bundle_sha256 != tasks[n].bundle_sha256]
        report.removed = [n for n in old if n not in tasks and n not in report.refused]
        report.refused = {n: r for n, r in report.refused.items() if self._chosen is None or n in self._chosen}
        refused = {
            n: Refusal(n, r, bundles[n].sha256 if n in bundles else None, time.time())
            for n, r in report.refused.items()
        }
        return self._publish(model, tasks, refused, report, moved)

    def _publish(
        self,
        model: ContinualModel,
        tasks: dict[str, ServedTask],
        refused: dict[str, Refusal],
        report: ReloadReport,
        moved: bool,
    ) -> ReloadReport:
        """Replaces the snapshot with `tasks` and `refused`; its version moves when something in
        them changed, or `moved` says the tasks' outputs did (a shared encoder replaced)."""
        before = self.state.refused
        report.refused = {n: r for n, r in report.refused.items() if n not in before or before[n].reason != r}
        ordered = dict(sorted(tasks.items(), key=lambda item: (item[1].position or 0, item[0])))
        promoted = self._references != dict(self.state.references)  # a promotion moves no bundle
        changed = moved or promoted or bool(report.added or report.removed or report.replaced or report.refused)
        identifier = self.state.identifier
        if changed or identifier is None:
            # "auto" chooses among current versions only, as `cadapt predict --task auto` does
            current = {key for ref, key in self._references.items() if VERSION_SEPARATOR not in ref}
            identifier = self._identifier(model, {n: t for n, t in ordered.items() if n in current})
            ordered = {n: replace(t, routable=n in identifier.tasks) for n, t in ordered.items()}
        self.state = ServingState(
            version=report.version if changed else self.state.version,
            tasks=MappingProxyType(ordered),
            refused=MappingProxyType(refused),
            identifier=identifier,
            loaded_at=time.time(),
            references=MappingProxyType(dict(self._references)),
        )
        report.version, report.served = self.state.version, len(ordered)
        return report

    def _bundles(self, names: list[str], report: ReloadReport) -> dict[str, BundleRecord]:
        """Bundle rows of the wanted tasks in one query; when one is refused (its signature, with a
        registry key), each task is read alone so that only the bad ones are left out."""
        try:
            return self.registry.bundles(names)
        except CadaptError:
            pass
        found = {}
        for name in names:
            try:
                found[name] = self.registry.bundles([name])[name]
            except CadaptError as exc:
                report.refused[name] = str(exc)
        return found

    def _detach(self, model: ContinualModel, name: str, tasks: dict[str, ServedTask]) -> None:
        tasks.pop(name, None)
        self._stamps.pop(name, None)
        if name in model.tasks:
            model.remove_task(name)

    @staticmethod
    def _served(task: TaskRecord, record: BundleRecord, score: float | None) -> ServedTask:
        settings = settings_from(record)
        return ServedTask(
            name=task.name,
            position=task.position,
            labels=tuple(task.labels),
            head=task.head,
            method=task.method,
            metric=task.primary_metric,
            score=score,
            bundle_sha256=record.sha256,
            param_counts=MappingProxyType(dict(record.param_counts)),
            max_length=settings.max_length,
            precision=settings.precision,
            routable=False,
        )

    def _identifier(self, model: ContinualModel, tasks: Mapping[str, ServedTask]) -> TaskIdentifier:
        """The router over the served tasks that have stored statistics (checked like every artifact);
        a task whose statistics cannot be read is served, but not routable by "auto"."""
        base, names = model.base_sha256(), list(tasks)
        try:
            stored = self.registry.read_artifacts(CENTROIDS_KIND, names)
        except CadaptError:
            stored = {}
            for name in names:
                try:
                    stored.update(self.registry.read_artifacts(CENTROIDS_KIND, [name]))
                except CadaptError:
                    continue
        stats = {}
        for name, data in stored.items():
            try:
                stats[name] = parse_statistics(data, name, base, model.hidden_size)
            except CadaptError:
                continue
        return TaskIdentifier(stats)
