"""Parsing local data files into columns: JSONL, JSON, CSV, TSV (parsed here) and parquet (pyarrow).

Kept apart from `data.reader`, which validates the rows and turns them into a `Split`: this
module only knows file formats. Files are parsed here, not by a dataframe library, so that
nothing is coerced silently: text must be strict UTF-8, JSON strict (see `strictjson`), CSV
records must have exactly the header's fields, and every problem is a `DataError` naming the
file and line. A row lacking a wanted column gets `MISSING`, which validation reports by row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path
from typing import Any

from continual_adapters.core.errors import DataError
from continual_adapters.data import strictjson

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()
_INT = re.compile(r"[+-]?\d{1,18}")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def decode_utf8(path: Path, raw: bytes) -> str:
    """Strict UTF-8 (a leading byte-order mark is accepted and dropped); a bad byte is named by line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def json_value(text: str, where: str) -> Any:
    """Strict JSON (see strictjson); nesting too deep for Python is a DataError like any other
    malformed row."""
    try:
        return strictjson.loads(text)
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DataError(f"{where}: not valid JSON ({message})") from None


def _json_rows(path: Path, text: str) -> tuple[list[dict[str, Any]], list[int], int]:
    """JSON Lines, or (for .json) one array of objects. Blank lines are skipped and counted."""
    rows: list[Any]
    lines: list[int]
    where: list[str]
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        rows = json_value(text, str(path))
        lines = list(range(1, len(rows) + 1))
        where = [f"{path} row {n}" for n in lines]
        blank = 0
    else:
        rows, lines, where, blank = [], [], [], 0
        physical = text.split("\n")
        if physical and physical[-1] == "":
            physical.pop()
        for number, line in enumerate(physical, 1):
            if not line.strip():
                blank += 1
                continue
            rows.append(json_value(line, f"{path} line {number}"))
            lines.append(number)
            where.append(f"{path} row {number}")
    for row, place in zip(rows, where, strict=True):
        if not isinstance(row, dict):
            raise DataError(f"{place}: expected a JSON object, got {type(row).__name__}")
    return rows, lines, blank


def _csv_rows(path: Path, text: str) -> tuple[list[dict[str, Any]], list[int], int]:
    """The csv module in strict mode; every record must have exactly the header's fields. Records
    are numbered by the physical line they start on, so quoted newlines do not shift the count."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    blank, header = 0, None
    start = 1
    try:
        for record in reader:
            if not record:
                blank += 1
            elif header is None:
                header = record
                duplicated = sorted({c for c in header if header.count(c) > 1})
                if duplicated:
                    raise DataError(f"{path} line {start}: duplicate column names {duplicated}")
            elif len(record) != len(header):
                raise DataError(f"{path} row {start}: {len(record)} fields, the header has {len(header)}")
            else:
                rows.append(dict(zip(header, record, strict=True)))
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(
            f"{path} line {reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})"
        ) from None
    return rows, lines, blank


def _infer_numbers(values: list[Any]) -> list[Any]:
    """CSV cells are text; a label column whose every cell is a number is read as numbers (as
    pandas would), so numeric labels keep their numeric class order."""
    if values and all(isinstance(v, str) and _INT.fullmatch(v.strip()) for v in values):
        return [int(v) for v in values]
    if values and all(isinstance(v, str) and _FLOAT.fullmatch(v.strip()) for v in values):
        return [float(v) for v in values]
    return values


def _parquet_rows(path: Path) -> tuple[dict[str, list[Any]], int]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read as parquet ({message})") from None
    return table, len(next(iter(table.values()), []))


def read_rows(
    path: Path, columns: tuple[str, str | None, str]
) -> tuple[dict[str, list[Any]], list[int], dict[str, Any]]:
    """The wanted columns of a local file as lists, the line each row came from, and notes on what
    was skipped. Rows lacking a column get MISSING, which validation reports by row."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in BUILDERS:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(BUILDERS)}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not raw:
        raise DataError(f"{path}: file is empty")
    notes: dict[str, Any] = {"sha256": hashlib.sha256(raw).hexdigest()}
    if suffix == ".parquet":
        table, count = _parquet_rows(path)
        return table, list(range(1, count + 1)), notes
    text = decode_utf8(path, raw)
    rows, lines, blank = (_csv_rows if BUILDERS[suffix] == "csv" else _json_rows)(path, text)
    if blank:
        notes["blank_lines_skipped"] = blank
    present = set().union(*rows) if rows else set()
    for column in columns:
        if column is not None and rows and column not in present:
            raise DataError(f"{path}: no column {column!r} (columns: {', '.join(sorted(present))})")
    table = {c: [row.get(c, MISSING) for row in rows] for c in columns if c is not None}
    if BUILDERS[suffix] == "csv" and columns[2] in table:
        table[columns[2]] = _infer_numbers(table[columns[2]])
    return table, lines, notes
