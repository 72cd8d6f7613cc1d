"""Reading task data: a validated `Split` from a local file or a hub dataset, and its labels.

Local files are parsed into columns by `data.formats`; this module checks every row (texts
present and valid Unicode, labels scalar and finite) and keeps where each row came from. Every
problem is reported as a `DataError` that names the file, column and row, because a user adding
a task should never have to guess which of three files had the empty line. Label names stay
names; the order of labels (and so the head's class ids) is explicit: given by the user, by the
dataset's `dataset.json`, or the sorted names seen in training.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, SupportsInt

import numpy as np

from continual_adapters.core.errors import DataError
from continual_adapters.data.formats import BUILDERS, MISSING, decode_utf8, json_value, read_rows

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Spellings of a missing or non-finite number that pandas and spreadsheets write into label cells.
NOT_A_LABEL = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}


@dataclass(frozen=True)
class Split:
    """One split, validated: texts (and pairs), raw label values, and where it came from."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]
    source: dict[str, Any] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Iterable[SupportsInt]) -> Split:
        pick = [int(i) for i in indices]
        return replace(
            self,
            texts=[self.texts[i] for i in pick],
            pairs=None if self.pairs is None else [self.pairs[i] for i in pick],
            labels=[self.labels[i] for i in pick],
            rows=[self.row_number(i) for i in pick],
        )

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


def read_dataset_json(folder: str | Path) -> dict[str, Any]:
    """Metadata of a dataset folder in the shared layout (labels order, pair or not)."""
    meta_path = Path(folder) / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{folder}: no dataset.json (expected train/validation/test.jsonl and dataset.json)")
    try:
        raw = meta_path.read_bytes()
    except OSError as exc:
        raise DataError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
    meta = json_value(decode_utf8(meta_path, raw), str(meta_path))
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    labels = meta.get("labels")
    if labels is not None and (
        not isinstance(labels, list)
        or not all(isinstance(v, (str, int)) for v in labels)
        or len({str(v) for v in labels}) != len(labels)
    ):
        raise DataError(f"{meta_path}: 'labels' must be a list of distinct names")
    if not isinstance(meta.get("pair", False), bool):
        raise DataError(f"{meta_path}: 'pair' must be true or false")
    return meta


def _check_string(value: str, where: str, what: str) -> None:
    if "\x00" in value:
        raise DataError(f"{where}: {what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: {what} contains an unpaired surrogate (not valid Unicode)") from None


def _check_text(value: object, where: str) -> str:
    if value is MISSING:
        raise DataError(f"{where}: column is missing in this row")
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: text is missing or empty ({value!r:.40})")
    _check_string(value, where, "text")
    return value


def _check_label(value: object, where: str) -> str | int | float:
    if value is MISSING:
        raise DataError(f"{where}: column is missing in this row")
    if value is None or isinstance(value, (list, dict)) or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"{where}: label is missing or not a scalar ({value!r:.40})")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise DataError(f"{where}: label {value!r:.40} is not a finite number")
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: label is empty")
        if value.strip().lower() in NOT_A_LABEL:
            raise DataError(f"{where}: label {value!r:.40} is a missing or non-finite number, not a class")
        _check_string(value, where, "label")
    elif not isinstance(value, (int, float, bool)):
        raise DataError(f"{where}: label has unsupported type {type(value).__name__}")
    return value


def to_split(
    rows: dict[str, list[Any]],
    columns: tuple[str, str | None, str],
    source: dict[str, Any],
    where: str,
    lines: list[int] | None = None,
) -> Split:
    """Validates column presence and every row; `rows` maps column names to value lists, `lines`
    gives each row's line in its file (default: counted from 1, +1 for a CSV header line)."""
    text_column, pair_column, label_column = columns
    for column in (text_column, pair_column, label_column):
        if column is not None and column not in rows:
            raise DataError(f"{where}: no column {column!r} (columns: {', '.join(sorted(rows))})")
    count = len(rows[text_column])
    if count == 0:
        raise DataError(f"{where}: no rows")
    if lines is None:
        offset = 2 if source.get("format") == "csv" else 1
        lines = [i + offset for i in range(count)]
    texts = [
        _check_text(v, f"{where} row {n} column {text_column!r}") for n, v in zip(lines, rows[text_column], strict=True)
    ]
    pairs = None
    if pair_column is not None:
        pairs = [
            _check_text(v, f"{where} row {n} column {pair_column!r}")
            for n, v in zip(lines, rows[pair_column], strict=True)
        ]
    labels = [
        _check_label(v, f"{where} row {n} column {label_column!r}")
        for n, v in zip(lines, rows[label_column], strict=True)
    ]
    return Split(texts, pairs, labels, {**source, "rows": count}, list(lines))


def load_split(
    path: str | Path,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    limit: int | None = None,
    seed: int = 13,
) -> Split:
    """Reads and validates one local file; `limit` keeps a seeded random subset of that size.

    Files are parsed here, not by a dataframe library, so that nothing is coerced silently: see
    docs/reliability.md for what is rejected (with the file, row and column) and what is skipped
    and counted (blank lines, recorded as ``blank_lines_skipped`` in the provenance)."""
    path = Path(path)
    columns = (text_column, pair_column, label_column)
    table, lines, notes = read_rows(path, columns)
    source = {
        "kind": "file",
        "path": str(path),
        "sha256": notes.pop("sha256"),
        "format": BUILDERS[path.suffix.lower()],
        **notes,
    }
    split = to_split(table, columns, source, str(path), lines)
    return cap(split, limit, seed)


def load_hub_split(
    dataset: str,
    subset: str | None,
    split_name: str,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    label_column: str = "label",
    limit: int | None = None,
    seed: int = 13,
) -> tuple[Split, list[str] | None]:
    """For online users: a hub dataset split, plus its ClassLabel names when it has them."""
    import datasets

    try:
        table = datasets.load_dataset(dataset, subset, split=split_name)
    except Exception as exc:
        raise DataError(f"hub dataset {dataset}/{subset or ''} split {split_name}: cannot load ({exc})") from None
    feature = table.features.get(label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    source = {
        "kind": "hub",
        "dataset": dataset,
        "subset": subset,
        "split": split_name,
        "fingerprint": table._fingerprint,
    }
    where = f"hub {dataset}/{subset or ''}:{split_name}"
    split = to_split(table.to_dict(), (text_column, pair_column, label_column), source, where)
    if names is not None:
        split = replace(
            split,
            labels=[_class_name(names, v, f"{where} row {split.row_number(i)}") for i, v in enumerate(split.labels)],
        )
    return cap(split, limit, seed), names


def _class_name(names: list[str], value: object, where: str) -> str | int:
    """A ClassLabel id to its name; negative ids (unlabelled rows) stay numbers for encode_labels to report."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: class id {value!r:.40} is not an integer")
    if value >= len(names):
        raise DataError(f"{where}: class id {value} is out of range (the dataset names {len(names)} classes)")
    return names[value] if value >= 0 else value


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
        held.extend(int(i) for i in rows[: max(1, round(len(rows) * fraction))] if len(rows) > 1)
    held_set = set(held)
    if not held_set or len(held_set) == len(train):
        raise DataError(f"{train.source.get('path', 'train')}: too few rows to carve a validation split")
    keep = [i for i in range(len(train)) if i not in held_set]
    note = {"carved_from": "train", "fraction": fraction, "seed": seed}
    return (
        replace(train.subset(keep), source={**train.source, "carved_validation": note}),
        replace(train.subset(sorted(held)), source={**train.source, **note, "rows": len(held)}),
    )


def label_names(train: Split, given: list[str] | None = None) -> list[str]:
    """The head's class order: as given, else numeric order for numbers, else sorted names."""
    if given:
        names = [str(v) for v in given]
        if len(set(names)) != len(names):
            raise DataError(f"label list {names[:20]} names a label twice")
        return names
    seen = set(train.labels)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        return [_number_name(v) for v in sorted(seen)]
    return sorted(str(v) for v in seen)


def _number_name(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def encode_labels(split: Split, names: list[str], head: str, where: str) -> list[int] | list[float]:
    """Class ids for classification (DataError naming the row for an unknown label); floats for regression."""
    if head == "regression":
        values = []
        for i, value in enumerate(split.labels):
            try:
                number = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError, OverflowError):
                number = math.nan
            if not math.isfinite(number):
                raise DataError(
                    f"{where} row {split.row_number(i)}: regression label {value!r:.40} is not a finite number"
                )
            values.append(number)
        return values
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for i, value in enumerate(split.labels):
        name = _number_name(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        if name not in index:
            raise DataError(
                f"{where} row {split.row_number(i)}: unknown label {name!r} (known: {', '.join(names[:20])})"
            )
        ids.append(index[name])
    return ids
