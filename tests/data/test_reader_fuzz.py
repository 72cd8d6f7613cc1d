"""Malformed datasets: hypothesis-generated JSONL, JSON, CSV and TSV files fed to the loaders.

The property, for files built from rows we know to be valid or not: a file with any invalid row
raises a DataError naming the file (never another exception), and a file of valid rows loads to
exactly those rows. Blank lines are the one documented skip, and are counted in the provenance.
A second property feeds raw bytes: only DataError may escape, and whatever loads is valid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continual_adapters.core.errors import DataError
from continual_adapters.data.reader import load_split
from continual_adapters.data.taskdata import DataSpec, load_task_data

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABELS = ["pos", "neg", "neutral", "naïve", "日本"]
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40
).filter(lambda t: t.strip())


COUNTS = {"files": 0, "invalid": 0, "raw": 0}


@dataclass
class Row:
    text: str
    label: str
    fault: str | None = None


JSON_FAULTS = [
    "bad_json",
    "nan_literal",
    "infinity_literal",
    "overflow_number",
    "duplicate_key",
    "deep_nesting",
    "text_number",
    "text_null",
    "text_list",
    "label_null",
    "label_dict",
    "missing_text",
    "missing_label",
    "empty_text",
    "blank_text",
    "nul_in_text",
    "surrogate",
    "not_object",
    "non_utf8",
    "label_nan_string",
]
CSV_FAULTS = [
    "field_count",
    "empty_label",
    "nan_label",
    "inf_label",
    "nul_in_text",
    "non_utf8",
    "huge_field",
    "empty_text",
    "blank_text",
    "unclosed_quote",
]


@st.composite
def rows_strategy(draw, faults: list[str]):
    """About half the files are all valid rows; the others hide one to three broken rows among them."""
    rows = draw(st.lists(st.builds(Row, TEXT, st.sampled_from(LABELS)), min_size=0, max_size=8))
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            broken = draw(st.builds(Row, TEXT, st.sampled_from(LABELS), st.sampled_from(faults)))
            rows.insert(draw(st.integers(0, len(rows))), broken)
    return rows


def json_line(row: Row) -> bytes:
    record = {"text": row.text, "label": row.label, "id": 7}
    special = {
        "bad_json": b'{"text": "x", "label": ',
        "nan_literal": b'{"text": "x", "label": NaN}',
        "infinity_literal": b'{"text": "x", "label": -Infinity}',
        "overflow_number": b'{"text": "x", "label": 1e999}',
        "duplicate_key": b'{"text": "x", "label": "pos", "label": "neg"}',
        "deep_nesting": b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b', "label": "pos"}',
        "non_utf8": b'{"text": "caf\xe9", "label": "pos"}',
        "not_object": b'["x", "pos"]',
    }
    if row.fault in special:
        return special[row.fault]
    edits = {
        "text_number": ("text", 42),
        "text_null": ("text", None),
        "text_list": ("text", ["x"]),
        "label_null": ("label", None),
        "label_dict": ("label", {"a": 1}),
        "empty_text": ("text", ""),
        "blank_text": ("text", " \t "),
        "nul_in_text": ("text", "a\x00b"),
        "surrogate": ("text", "a\ud800"),
        "label_nan_string": ("label", "NaN"),
    }
    if row.fault in edits:
        key, value = edits[row.fault]
        record[key] = value
    if row.fault == "missing_text":
        del record["text"]
    if row.fault == "missing_label":
        del record["label"]
    return json.dumps(record).encode("utf-8", "surrogatepass")


def csv_content(rows: list[Row], delimiter: str, quotings: list[int], crlf: bool) -> bytes:
    out = io.StringIO(newline="")
    terminator = "\r\n" if crlf else "\n"
    csv.writer(out, delimiter=delimiter, lineterminator=terminator).writerow(["text", "label"])
    raw = [out.getvalue().encode()]
    for i, row in enumerate(rows):
        cells = {
            "empty_label": [row.text, ""],
            "nan_label": [row.text, "nan"],
            "inf_label": [row.text, "-Infinity"],
            "nul_in_text": ["a\x00b", row.label],
            "huge_field": ["x" * 200_000, row.label],
            "empty_text": ["", row.label],
            "blank_text": ["   ", row.label],
            "field_count": [row.text, row.label, "extra"],
        }.get(row.fault, [row.text, row.label])
        line = io.StringIO(newline="")
        # The writer leaves a lone CR unquoted when the terminator is LF, and a reader then rightly
        # takes it for a line break: such a cell must be quoted to mean what the generator meant.
        quoting = csv.QUOTE_ALL if any("\r" in c for c in cells) else quotings[i % len(quotings)]
        csv.writer(line, delimiter=delimiter, lineterminator=terminator, quoting=quoting).writerow(cells)
        data = line.getvalue().encode()
        if row.fault == "non_utf8":
            data = b"caf\xe9" + delimiter.encode() + row.label.encode() + terminator.encode()
        if row.fault == "unclosed_quote":
            data = b'"never closed' + delimiter.encode() + b"pos" + terminator.encode()
        raw.append(data)
    return b"".join(raw)


FOLDER: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _folder(tmp_path_factory):
    FOLDER.append(tmp_path_factory.mktemp("fuzz"))


def _write(suffix: str, content: bytes) -> Path:
    path = FOLDER[-1] / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(content)
    return path


def _check(path: Path, rows: list[Row], blank: int, must_fail: bool) -> None:
    COUNTS["files"] += 1
    COUNTS["invalid"] += must_fail
    try:
        split = load_split(path)
    except DataError as exc:
        assert must_fail, f"valid file rejected: {exc}\n{path.read_bytes()[:500]!r}"
        assert str(path) in str(exc)
        return
    assert not must_fail, f"invalid rows accepted silently: {[r.fault for r in rows]}\n{path.read_bytes()[:500]!r}"
    assert split.texts == [r.text for r in rows]
    assert split.labels == [r.label for r in rows]
    assert split.source.get("blank_lines_skipped", 0) == blank


@SETTINGS
@given(
    rows=rows_strategy(JSON_FAULTS),
    bom=st.booleans(),
    crlf=st.booleans(),
    blank_every=st.integers(0, 4),
    as_array=st.booleans(),
)
def test_jsonl_and_json(rows, bom, crlf, blank_every, as_array):
    if as_array and not any(r.fault for r in rows):
        content = json.dumps([{"text": r.text, "label": r.label} for r in rows]).encode()
        path, blank = _write(".json", (b"\xef\xbb\xbf" if bom else b"") + content), 0
    else:
        lines, blank = [], 0
        for i, row in enumerate(rows):
            if blank_every and i % blank_every == 0:
                lines.append(b"   ")
                blank += 1
            lines.append(json_line(row))
        content = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if lines else b"")
        path = _write(".jsonl", (b"\xef\xbb\xbf" if bom else b"") + content)
    _check(path, rows, blank, must_fail=not rows or any(r.fault for r in rows))


@SETTINGS
@given(
    rows=rows_strategy(CSV_FAULTS),
    tsv=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
    quotings=st.lists(
        st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]), min_size=1, max_size=3
    ),
)
def test_csv_and_tsv(rows, tsv, crlf, bom, quotings):
    content = csv_content(rows, "\t" if tsv else ",", quotings, crlf)
    path = _write(".tsv" if tsv else ".csv", (b"\xef\xbb\xbf" if bom else b"") + content)
    _check(path, rows, 0, must_fail=not rows or any(r.fault for r in rows))


@SETTINGS
@given(
    content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))),
    suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv"]),
)
def test_arbitrary_bytes_never_crash(content, suffix):
    path = _write(suffix, content)
    COUNTS["raw"] += 1
    try:
        split = load_split(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    for text, label in zip(split.texts, split.labels, strict=True):
        assert isinstance(text, str) and text.strip() and "\x00" not in text
        assert isinstance(label, (str, int, float)) and not (isinstance(label, float) and not math.isfinite(label))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"text,label\n", "no rows"),
        (b"\n\n\n", "no rows"),
        (b"", "file is empty"),
        (b"text,text,label\nx,y,pos\n", "duplicate column"),
        (b"sentence,label\nx,pos\n", "no column 'text'"),
    ],
)
def test_empty_splits_and_missing_columns(content, message):
    path = _write(".csv", content)
    with pytest.raises(DataError, match=message):
        load_split(path)


def test_numeric_csv_labels_keep_numeric_order():
    rows = "".join(f"t{i},{label}\n" for i, label in enumerate([10, 2, 1, 2, 10]))
    split = load_split(_write(".csv", b"text,label\n" + rows.encode()))
    assert split.labels == [10, 2, 1, 2, 10]
    mixed = load_split(_write(".csv", b"text,label\na,1\nb,x\n"))
    assert mixed.labels == ["1", "x"]


def _jsonl(rows: list[dict]) -> str:
    return str(_write(".jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()))


def test_unseen_label_in_evaluation_is_named():
    train = _jsonl([{"text": f"t{i}", "label": ("a", "b")[i % 2]} for i in range(10)])
    test = _jsonl([{"text": "x", "label": "a"}, {"text": "y", "label": "c"}])
    with pytest.raises(DataError, match=r"test.* row 2: unknown label 'c'|row 2: unknown label 'c'"):
        load_task_data(DataSpec(train=train, test=test))


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", '"abc"', "true"])
def test_regression_labels_must_be_finite_numbers(value):
    train = _write(
        ".jsonl",
        "".join(f'{{"text": "t{i}", "label": {v}}}\n' for i, v in enumerate(["0.5", "1.5", value, "2.0"] * 3)).encode(),
    )
    with pytest.raises(DataError):
        load_task_data(DataSpec(train=str(train), head="regression"))


def test_dataset_json_is_validated(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    for meta, message in (
        [b"[1]", "JSON object"],
        [b'{"labels": ["x", "x"]}', "distinct"],
        [b'{"labels": "x"}', "distinct"],
        [b'{"pair": "yes"}', "pair"],
        [b'{"labels": ["x"], "labels": ["y"]}', "duplicate key"],
    ):
        (tmp_path / "dataset.json").write_bytes(meta)
        with pytest.raises(DataError, match=message):
            DataSpec.from_folder(tmp_path)


def test_figures():
    """Prints the figures docs/reliability.md quotes (runs last in this module; `pytest -s`)."""
    assert COUNTS["files"] and COUNTS["raw"]
    print(f"\nFIGURES datasets {COUNTS}")
