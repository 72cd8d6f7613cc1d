"""What a task's data is: where each split comes from, its columns, labels and caps.

A `DataSpec` is stored with the task in the registry, so the exact evaluation split can be
reloaded (and its file's sha256 checked) every time earlier tasks are re-evaluated or audited.

A local path is looked up once, when the task's data is loaded (against the working directory,
then the data directory), and from then on only its absolute form is used and recorded. A
relative path names different files from different directories: reloading ``cr/test.jsonl``
after ``cr/`` moved would find a same-named file under the data directory and report it as
"changed", where the truth is that the registered file is gone ("data unavailable").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from continual_adapters.core.errors import ConfigError, DataError, IntegrityError
from continual_adapters.data.reader import (
    Split,
    cap,
    carve_validation,
    encode_labels,
    label_names,
    load_hub_split,
    load_split,
    read_dataset_json,
    resolve_data_path,
)
from continual_adapters.metrics.scoring import check_metric, default_metric

#: The DataSpec fields that name local files.
LOCAL_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DataSpec:
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    dataset: str | None = None
    subset: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    labels: tuple[str, ...] | None = None
    keep_labels: tuple[str, ...] | None = None
    head: str = "classification"
    metric: str | None = None
    max_train: int | None = None
    #: Caps the test (evaluation) split, and the validation split too unless `max_validation` is set.
    max_eval: int | None = None
    #: Caps the validation split alone (model selection). None: `max_eval` caps it, as it always did,
    #: so a registry recorded before this field existed reloads the same splits.
    max_validation: int | None = None
    seed: int = 13

    def __post_init__(self) -> None:
        if bool(self.train) == bool(self.dataset):
            raise ConfigError("give either a training file (--train / --data) or a hub dataset (--dataset)")
        for name in ("labels", "keep_labels"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        check_metric(self.head, self.primary_metric)

    @property
    def primary_metric(self) -> str:
        return self.metric or default_metric(self.head)

    @property
    def validation_cap(self) -> int | None:
        """The cap on the validation split: `max_validation` if set, else `max_eval`."""
        return self.max_eval if self.max_validation is None else self.max_validation

    @classmethod
    def from_folder(cls, folder: str | Path, data_dir: str | Path | None = None, **overrides: Any) -> DataSpec:
        """A dataset folder in the shared layout: {train,validation,test}.jsonl + dataset.json."""
        folder = resolve_data_path(folder, data_dir)
        meta = read_dataset_json(folder)
        files = {
            split: str(folder / f"{split}.jsonl")
            for split in ("train", "validation", "test")
            if (folder / f"{split}.jsonl").is_file()
        }
        if "train" not in files:
            raise DataError(f"{folder}: no train.jsonl")
        values: dict[str, Any] = {
            "labels": tuple(meta["labels"]) if meta.get("labels") else None,
            "pair_column": "text_pair" if meta.get("pair") else None,
            **files,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("labels", "keep_labels"):
            data[name] = list(data[name]) if data[name] is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def with_paths(spec: DataSpec, paths: dict[str, str]) -> DataSpec:
    """The spec with the local split paths named in `paths` replaced (the others kept)."""
    return replace(
        spec,
        train=paths.get("train", spec.train),
        validation=paths.get("validation", spec.validation),
        test=paths.get("test", spec.test),
    )


def pin_paths(spec: DataSpec) -> DataSpec:
    """The spec with every local split path resolved, once, to the absolute file it names now."""
    return with_paths(spec, {s: str(resolve_data_path(getattr(spec, s))) for s in LOCAL_SPLITS if getattr(spec, s)})


@dataclass
class TaskData:
    """The loaded splits, and `spec`: the spec they were loaded from, its local paths absolute."""

    train: Split
    validation: Split
    evaluation: Split
    eval_split: str
    labels: list[str]
    targets: dict[str, list[int] | list[float]]
    spec: DataSpec

    def provenance(self, spec: DataSpec | None = None) -> dict[str, Any]:
        """What the registry records. `spec` (the one given to `load_task_data`, as the runner
        passes it) is recorded with the absolute paths that were actually read, so a reload never
        depends on the directory it runs from."""
        recorded = self.spec if spec is None else with_paths(spec, {s: getattr(self.spec, s) for s in LOCAL_SPLITS})
        return {
            "spec": recorded.to_dict(),
            "eval_split": self.eval_split,
            "splits": {
                "train": self.train.source,
                "validation": self.validation.source,
                self.eval_split: self.evaluation.source,
            },
            "sizes": {
                "train": len(self.train),
                "validation": len(self.validation),
                self.eval_split: len(self.evaluation),
            },
        }


def _load(
    spec: DataSpec, which: str, limit: int | None, recorded: bool = False
) -> tuple[Split | None, list[str] | None]:
    split, hub_labels = _load_all(spec, which, None if spec.keep_labels else limit, recorded)
    if split is None or not spec.keep_labels:
        return split, hub_labels
    return cap(keep_only(split, spec.keep_labels), limit, spec.seed), hub_labels


def _load_all(
    spec: DataSpec, which: str, limit: int | None, recorded: bool = False
) -> tuple[Split | None, list[str] | None]:
    """One split, its local path read as given (`load_task_data` has pinned it already); for a
    `recorded` spec, a file no longer there is "data unavailable", not an unreadable input."""
    columns: dict[str, Any] = dict(
        text_column=spec.text_column,
        pair_column=spec.pair_column,
        label_column=spec.label_column,
        limit=limit,
        seed=spec.seed,
    )
    if spec.dataset:
        try:
            return load_hub_split(spec.dataset, spec.subset, which, **columns)
        except DataError:
            if which == "train":
                raise
            return None, None
    path = getattr(spec, which)
    if not path:
        return None, None
    if recorded and not Path(path).is_file():
        relative = "" if Path(path).is_absolute() else f", relative to {Path.cwd()}"
        raise DataError(f"data unavailable: {path} (the task's recorded {which} file{relative}) no longer exists")
    return load_split(Path(path), **columns), None


def keep_only(split: Split, keep: tuple[str, ...]) -> Split:
    """A label subset of a bigger dataset (e.g. one CLINC150 domain), filtered before capping so a
    cap counts only the kept rows; the count of dropped rows goes into the provenance."""
    wanted = set(keep)
    rows = [i for i, label in enumerate(split.labels) if str(label) in wanted]
    if not rows:
        raise DataError(f"{split.source.get('path', 'split')}: no rows with labels {sorted(wanted)}")
    return replace(
        split.subset(rows), source={**split.source, "kept_labels": len(wanted), "dropped_rows": len(split) - len(rows)}
    )


def _load_train(spec: DataSpec, recorded: bool = False) -> tuple[Split, list[str] | None]:
    """There is always a train split: a DataSpec names a training file or a hub dataset, and a hub
    dataset without one raises in `_load_all`."""
    train, hub_labels = _load(spec, "train", spec.max_train, recorded)
    if train is None:
        raise DataError(f"{spec.train or spec.dataset}: no train split")
    return train, hub_labels


def load_task_data(spec: DataSpec) -> TaskData:
    """Loads and validates every split before anything is written anywhere; local paths are
    resolved here, once, and the resulting `TaskData` records them absolute."""
    spec = pin_paths(spec)
    train, hub_labels = _load_train(spec)
    validation, _ = _load(spec, "validation", spec.validation_cap)
    test, _ = _load(spec, "test", spec.max_eval)
    if validation is None:
        train, validation = carve_validation(train, seed=spec.seed)
    labels = [] if spec.head == "regression" else label_names(train, list(spec.labels or hub_labels or []))
    if spec.head == "classification" and len(labels) < 2:
        raise DataError(f"{train.source.get('path', 'train')}: needs at least 2 labels, found {labels}")
    evaluation, eval_split = (test, "test") if test is not None else (validation, "validation")
    targets: dict[str, list[int] | list[float]] = {}
    for name, split in (("train", train), ("validation", validation), (eval_split, evaluation)):
        where = split.source.get("path") or f"{spec.dataset}:{name}"
        targets[name] = encode_labels(split, labels, spec.head, where)
    return TaskData(train, validation, evaluation, eval_split, labels, targets, spec)


def recorded_spec(provenance: dict[str, Any]) -> DataSpec:
    """The spec a task was registered with, each local path replaced by the file recorded as read
    (the split's source path: absolute, even in registries that recorded a relative spec).

    Nothing is resolved: a path is used as recorded, and a relative one (only where no source
    path was recorded) is relative to the working directory and never looked up in the data
    directory, where a same-named file could be another dataset."""
    spec = DataSpec.from_dict(provenance["spec"])
    splits = provenance.get("splits") or {}
    pinned: dict[str, str] = {}
    for name in LOCAL_SPLITS:
        source = splits.get(name) or {}
        if getattr(spec, name) and source.get("kind") == "file" and source.get("path"):
            pinned[name] = str(source["path"])
    return with_paths(spec, pinned)


def check_unchanged(split: Split, recorded: dict[str, Any], which: str) -> None:
    """Refuses a split whose file (sha256) or hub dataset (fingerprint) differs from the recorded one."""
    if recorded.get("sha256") and split.source.get("sha256") != recorded["sha256"]:
        raise IntegrityError(
            f"{split.source.get('path')}: data file changed since the task was registered "
            f"(sha256 {split.source.get('sha256')} != recorded {recorded['sha256']})"
        )
    if recorded.get("fingerprint") and split.source.get("fingerprint") != recorded["fingerprint"]:
        raise IntegrityError(f"hub split {which}: fingerprint changed since the task was registered")


def load_eval_split(provenance: dict[str, Any], labels: list[str]) -> tuple[Split, list[int] | list[float]]:
    """Reloads the split a task was evaluated on at registration, from the recorded file only,
    refusing changed files (IntegrityError) and reporting missing ones ("data unavailable: …")."""
    spec = recorded_spec(provenance)
    eval_split = provenance["eval_split"]
    recorded = provenance["splits"][eval_split]
    split: Split | None
    if recorded.get("carved_from") == "train":
        train, _ = _load_train(spec, recorded=True)
        _, split = carve_validation(train, seed=spec.seed)
    else:
        limit = spec.validation_cap if eval_split == "validation" else spec.max_eval
        split, _ = _load(spec, eval_split, limit, recorded=True)
    if split is None:
        raise DataError(f"the {eval_split} split recorded for this task cannot be found")
    check_unchanged(split, recorded, eval_split)
    return split, encode_labels(split, labels, spec.head, split.source.get("path") or eval_split)


def load_recorded_train(provenance: dict[str, Any]) -> Split:
    """A registered task's training split as `load_task_data` gave it (validation carved off if it
    was), from the recorded file only and checked like `load_eval_split`."""
    spec = recorded_spec(provenance)
    splits = provenance.get("splits") or {}
    train, _ = _load_train(spec, recorded=True)
    check_unchanged(train, splits.get("train") or {}, "train")
    if (splits.get("validation") or {}).get("carved_from") == "train":
        train, _ = carve_validation(train, seed=spec.seed)
    return train


def with_overrides(spec: DataSpec, **overrides: Any) -> DataSpec:
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})
