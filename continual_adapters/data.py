"""Reading task data: local files (JSONL, JSON, CSV, TSV, parquet) or hub datasets, via `datasets`.

Every problem is reported as a `DataError` that names the file, column and row, because a
user adding a task should never have to guess which of three files had the empty line.
Label names stay names; the order of labels (and so the head's class ids) is explicit:
given by the user, by the dataset's `dataset.json`, or the sorted names seen in training.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .bundle import sha256_file
from .errors import DataError

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Split:
    """One split, validated: texts (and pairs), raw label values, and where it came from."""

    texts: list[str]
    pairs: list[str] | None
    labels: list
    source: dict = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "Split":
        pick = [int(i) for i in indices]
        return replace(self, texts=[self.texts[i] for i in pick],
                       pairs=None if self.pairs is None else [self.pairs[i] for i in pick],
                       labels=[self.labels[i] for i in pick], rows=[self.row_number(i) for i in pick])

    def row_number(self, i: int) -> int:
        """The row as a person would count it in the source file (survives subsetting)."""
        return self.rows[i] if self.rows else i + 1


def default_data_dir() -> Path | None:
    """`CADAPT_DATA_DIR`, else `../shared/data` beside the working directory or the checkout."""
    env = os.environ.get("CADAPT_DATA_DIR")
    if env:
        return Path(env)
    for base in (Path.cwd(), PACKAGE_ROOT):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate.resolve()
    return None


def resolve_data_path(path: str | Path, data_dir: str | Path | None = None) -> Path:
    """Absolute paths as given; relative ones against cwd, then against the data directory."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    base = Path(data_dir) if data_dir else default_data_dir()
    if base is not None and (base / path).exists():
        return (base / path).resolve()
    return path.resolve()


def read_dataset_json(folder: str | Path) -> dict:
    """Metadata of a dataset folder in the shared layout (labels order, pair or not)."""
    meta_path = Path(folder) / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{folder}: no dataset.json (expected train/validation/test.jsonl and dataset.json)")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{meta_path}: not valid JSON ({exc})") from None


def _read_table(path: Path):
    import datasets

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(BUILDERS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # datasets raises many unrelated types for unreadable files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read as {builder} ({message})") from None
    return table


def _check_text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: text is missing or empty ({value!r:.40})")
    return value


def _check_label(value, where: str):
    if value is None or isinstance(value, (list, dict)) or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"{where}: label is missing or not a scalar ({value!r:.40})")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: label is empty")
    return value


def to_split(rows: dict[str, list], columns: tuple[str, str | None, str], source: dict, where: str) -> Split:
    """Validates column presence and every row; `rows` maps column names to value lists."""
    text_column, pair_column, label_column = columns
    for column in (text_column, pair_column, label_column):
        if column is not None and column not in rows:
            raise DataError(f"{where}: no column {column!r} (columns: {', '.join(sorted(rows))})")
    count = len(rows[text_column])
    if count == 0:
        raise DataError(f"{where}: no rows")
    # Rows count from 1 as a person reading the file would; +1 more for a CSV header line.
    offset = 2 if source.get("format") == "csv" else 1
    texts = [_check_text(v, f"{where} row {i + offset} column {text_column!r}") for i, v in enumerate(rows[text_column])]
    pairs = None
    if pair_column is not None:
        pairs = [_check_text(v, f"{where} row {i + offset} column {pair_column!r}") for i, v in enumerate(rows[pair_column])]
    labels = [_check_label(v, f"{where} row {i + offset} column {label_column!r}") for i, v in enumerate(rows[label_column])]
    return Split(texts, pairs, labels, {**source, "rows": count}, [i + offset for i in range(count)])


def load_split(path: str | Path, *, text_column: str = "text", pair_column: str | None = None,
               label_column: str = "label", limit: int | None = None, seed: int = 13) -> Split:
    """Reads and validates one local file; `limit` keeps a seeded random subset of that size."""
    path = Path(path)
    table = _read_table(path)
    source = {"kind": "file", "path": str(path), "sha256": sha256_file(path),
              "format": BUILDERS[path.suffix.lower()]}
    split = to_split(table.to_dict(), (text_column, pair_column, label_column), source, str(path))
    return cap(split, limit, seed)


def load_hub_split(dataset: str, subset: str | None, split_name: str, *, text_column: str = "text",
                   pair_column: str | None = None, label_column: str = "label",
                   limit: int | None = None, seed: int = 13) -> tuple[Split, list[str] | None]:
    """For online users: a hub dataset split, plus its ClassLabel names when it has them."""
    import datasets

    try:
        table = datasets.load_dataset(dataset, subset, split=split_name)
    except Exception as exc:
        raise DataError(f"hub dataset {dataset}/{subset or ''} split {split_name}: cannot load ({exc})") from None
    feature = table.features.get(label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    source = {"kind": "hub", "dataset": dataset, "subset": subset, "split": split_name,
              "fingerprint": table._fingerprint}
    where = f"hub {dataset}/{subset or ''}:{split_name}"
    split = to_split(table.to_dict(), (text_column, pair_column, label_column), source, where)
    if names is not None:
        split = replace(split, labels=[names[int(v)] if int(v) >= 0 else v for v in split.labels])
    return cap(split, limit, seed), names


def cap(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split):
        return split
    indices = np.random.default_rng(seed).permutation(len(split))[:limit]
    return replace(split.subset(indices), source={**split.source, "limit": limit, "limit_seed": seed})


def carve_validation(train: Split, fraction: float = 0.1, seed: int = 13) -> tuple[Split, Split]:
    """Stratified by label, fixed seed: the same carve on every machine."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(train.labels):
        by_label.setdefault(str(label), []).append(i)
    held: list[int] = []
    for label in sorted(by_label):
        rows = rng.permutation(by_label[label])
        held.extend(int(i) for i in rows[:max(1, round(len(rows) * fraction))] if len(rows) > 1)
    held_set = set(held)
    if not held_set or len(held_set) == len(train):
        raise DataError(f"{train.source.get('path', 'train')}: too few rows to carve a validation split")
    keep = [i for i in range(len(train)) if i not in held_set]
    note = {"carved_from": "train", "fraction": fraction, "seed": seed}
    return (replace(train.subset(keep), source={**train.source, "carved_validation": note}),
            replace(train.subset(sorted(held)), source={**train.source, **note, "rows": len(held)}))


def label_names(train: Split, given: list[str] | None = None) -> list[str]:
    """The head's class order: as given, else numeric order for numbers, else sorted names."""
    if given:
        return [str(v) for v in given]
    seen = set(train.labels)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        return [_number_name(v) for v in sorted(seen)]
    return sorted(str(v) for v in seen)


def _number_name(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def encode_labels(split: Split, names: list[str], head: str, where: str) -> list:
    """Class ids for classification (DataError naming the row for an unknown label); floats for regression."""
    if head == "regression":
        try:
            return [float(v) for v in split.labels]
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: regression labels must be numbers ({exc})") from None
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for i, value in enumerate(split.labels):
        name = _number_name(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        if name not in index:
            raise DataError(f"{where} row {split.row_number(i)}: unknown label {name!r} (known: {', '.join(names[:20])})")
        ids.append(index[name])
    return ids
