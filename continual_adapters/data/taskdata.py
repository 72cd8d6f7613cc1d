"""What a task's data is: where each split comes from, its columns, labels and caps.

A `DataSpec` is stored with the task in the registry, so the exact evaluation split can be
reloaded (and its file's sha256 checked) every time earlier tasks are re-evaluated or audited.
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
    max_eval: int | None = None
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


@dataclass
class TaskData:
    train: Split
    validation: Split
    evaluation: Split
    eval_split: str
    labels: list[str]
    targets: dict[str, list[int] | list[float]]

    def provenance(self, spec: DataSpec) -> dict[str, Any]:
        return {
            "spec": spec.to_dict(),
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


def _load(spec: DataSpec, which: str, limit: int | None) -> tuple[Split | None, list[str] | None]:
    split, hub_labels = _load_all(spec, which, None if spec.keep_labels else limit)
    if split is None or not spec.keep_labels:
        return split, hub_labels
    return cap(keep_only(split, spec.keep_labels), limit, spec.seed), hub_labels


def _load_all(spec: DataSpec, which: str, limit: int | None) -> tuple[Split | None, list[str] | None]:
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
    return (load_split(resolve_data_path(path), **columns), None) if path else (None, None)


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


def _load_train(spec: DataSpec) -> tuple[Split, list[str] | None]:
    """There is always a train split: a DataSpec names a training file or a hub dataset, and a hub
    dataset without one raises in `_load_all`."""
    train, hub_labels = _load(spec, "train", spec.max_train)
    if train is None:
        raise DataError(f"{spec.train or spec.dataset}: no train split")
    return train, hub_labels


def load_task_data(spec: DataSpec) -> TaskData:
    """Loads and validates every split before anything is written anywhere."""
    train, hub_labels = _load_train(spec)
    validation, _ = _load(spec, "validation", spec.max_eval)
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
    return TaskData(train, validation, evaluation, eval_split, labels, targets)


def load_eval_split(provenance: dict[str, Any], labels: list[str]) -> tuple[Split, list[int] | list[float]]:
    """Reloads the split a task was evaluated on at registration, refusing changed files."""
    spec = DataSpec.from_dict(provenance["spec"])
    eval_split = provenance["eval_split"]
    recorded = provenance["splits"][eval_split]
    split: Split | None
    if recorded.get("carved_from") == "train":
        train, _ = _load_train(spec)
        _, split = carve_validation(train, seed=spec.seed)
    else:
        split, _ = _load(spec, eval_split, spec.max_eval)
    if split is None:
        raise DataError(f"the {eval_split} split recorded for this task cannot be found")
    if recorded.get("sha256") and split.source.get("sha256") != recorded["sha256"]:
        raise IntegrityError(
            f"{split.source.get('path')}: data file changed since the task was registered "
            f"(sha256 {split.source.get('sha256')} != recorded {recorded['sha256']})"
        )
    if recorded.get("fingerprint") and split.source.get("fingerprint") != recorded["fingerprint"]:
        raise IntegrityError(f"hub split {eval_split}: fingerprint changed since the task was registered")
    return split, encode_labels(split, labels, spec.head, split.source.get("path") or eval_split)


def with_overrides(spec: DataSpec, **overrides: Any) -> DataSpec:
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})
