"""Serving registered tasks: read inputs, load only the bundles needed, predict in mixed batches.

`cadapt predict` is a thin shell over `predict_inputs`. Inputs come as arguments, a file
(JSONL, CSV, TSV: columns; TXT: one text per line) or stdin lines. A task column, or
`task="auto"`, gives each row its own task; rows of different tasks then share each encoder
pass (`ContinualModel.forward_mixed`).

Each task is served as it was evaluated when it was registered (`task_settings`): with the
`max_length` its bundle records and in the precision of that evaluation (bf16 autocast when it
ran on CUDA, fp32 otherwise), so that what is served is what the registry's scores describe.
`cadapt serve` (serve/) answers with the same settings.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from continual_adapters.core.errors import DataError
from continual_adapters.stream.confirm import TASKS_PER_ROUND, rounds

if TYPE_CHECKING:
    from continual_adapters.core.prediction import Prediction
    from continual_adapters.registry import BundleRecord, Registry
    from continual_adapters.stream.runner import Runner

#: What a task's bundle records when its hyperparameters predate `max_length` (TrainConfig's default).
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class TaskSettings:
    """How a task is run to be served as it was evaluated: its tokenizer cut and its precision."""

    max_length: int
    precision: str  # "float32" or "bfloat16"


def settings_from(bundle: BundleRecord) -> TaskSettings:
    """The evaluation settings a bundle row records: `max_length` from its hyperparameters, and bf16
    when it was trained and evaluated on CUDA (evaluation runs under bf16 autocast there), else fp32."""
    hyper = bundle.hyperparameters or {}
    max_length = hyper.get("max_length", DEFAULT_MAX_LENGTH)
    if type(max_length) is not int or max_length < 1:
        max_length = DEFAULT_MAX_LENGTH
    device = str(hyper.get("device") or "cpu")
    return TaskSettings(max_length, "bfloat16" if device.startswith("cuda") else "float32")


def task_settings(registry: Registry, names: Sequence[str]) -> dict[str, TaskSettings]:
    """`settings_from` for each named ready task, from one query."""
    return {name: settings_from(record) for name, record in registry.bundles(list(names)).items()}


def precision_context(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """Runs a forward in `precision` on `device`: bf16 autocast (on CPU too, for a task evaluated on
    CUDA and served on CPU), or plain fp32, also on CUDA for a task that was evaluated in fp32."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Inputs:
    texts: list[str]
    pairs: list[str] | None = None
    tasks: list[str] | None = None


def _rows_from_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}: row {number} is not JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: row {number} is not a JSON object")
                rows.append(row)
        return rows
    if suffix in (".csv", ".tsv"):
        return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    return [{"text": line} for line in text.splitlines() if line.strip()]


def read_inputs(
    texts: tuple[str, ...] = (),
    file: str | None = None,
    text_column: str = "text",
    pair_column: str | None = None,
    task_column: str | None = None,
    stdin: Iterable[str] | None = None,
) -> Inputs:
    """Arguments win; else the file ('-' or nothing: stdin, one text per line)."""
    if texts:
        if task_column:
            raise DataError("--task-column needs a file with that column")
        return Inputs(list(texts))
    if file and file != "-":
        path = Path(file)
        rows = _rows_from_file(path)
        where = str(path)
    else:
        rows = [{"text": line.rstrip("\n")} for line in (stdin or sys.stdin) if line.strip()]
        where = "stdin"
    if not rows:
        raise DataError(f"{where}: no inputs")
    out = Inputs([])
    for number, row in enumerate(rows, 1):
        for column in filter(None, (text_column, pair_column, task_column)):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: row {number} has no text in column {column!r}")
        out.texts.append(row[text_column])
    if pair_column:
        out.pairs = [row[pair_column] for row in rows]
    if task_column:
        out.tasks = [row[task_column] for row in rows]
    return out


def predict_inputs(
    runner: Runner,
    inputs: Inputs,
    task: str | None,
    batch_size: int = 32,
    max_length: int | None = None,
    tasks_per_round: int = TASKS_PER_ROUND,
) -> list[Prediction]:
    """Predictions for every input, in input order. Only the tasks it routes to are attached
    (sha256-verified), `tasks_per_round` at a time and released after their rows, so a file that
    spans 200 tasks never holds 200 adapters; rows of one round still share encoder passes (those
    of tasks with the same recorded settings). `max_length` overrides every task's recorded one.

    Tasks are references (core/versions.py): a bare name is the task's current version, `name@N`
    and `name@alias` others; each row's prediction names the version that answered it (its key).
    A retired or unfinished version is refused with the registry's typed error, before any work."""
    if task == "auto":
        from continual_adapters.stream.taskid import base_features, identifier

        names = identifier(runner.registry, runner.model).predict(
            base_features(runner.model, inputs.texts, inputs.pairs)
        )
    elif inputs.tasks is not None or task:
        refs = inputs.tasks if inputs.tasks is not None else [str(task)] * len(inputs.texts)
        versions = runner.registry.resolve_ready(refs)
        names = [versions[ref].name for ref in refs]
    else:
        raise DataError("name a task (--task NAME or --task auto) or give a task column")
    routed = list(dict.fromkeys(names))
    settings = task_settings(runner.registry, routed)
    if max_length is not None:
        settings = {name: TaskSettings(max_length, s.precision) for name, s in settings.items()}
    resident = set(runner.model.tasks)
    results: list[Prediction | None] = [None] * len(names)
    for group in rounds(routed, tasks_per_round):
        members = set(group)
        for name in group:
            runner.attach(name)
        for setting in dict.fromkeys(settings[name] for name in group):
            rows = [i for i, name in enumerate(names) if name in members and settings[name] == setting]
            with precision_context(setting.precision, runner.model.device):
                predicted = runner.model.predict(
                    [inputs.texts[i] for i in rows],
                    task=[names[i] for i in rows],
                    pairs=[inputs.pairs[i] for i in rows] if inputs.pairs else None,
                    batch_size=batch_size,
                    max_length=setting.max_length,
                )
            for i, prediction in zip(rows, predicted, strict=True):
                results[i] = prediction
        if runner.model.isolates_tasks:  # release what this call attached: memory stays bounded
            for name in members - resident:
                runner.model.remove_task(name)
    return [r for r in results if r is not None]
