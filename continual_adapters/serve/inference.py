"""Rows of any tasks to answers, each task run as it was evaluated when it was registered.

A row is tokenized with its task's recorded `max_length` (no padding yet); rows are then grouped by
their task's recorded precision (fp32, or bf16 autocast for tasks evaluated on CUDA), ordered by
task so each task's rows are one contiguous slice (`forward_mixed` then takes views, not gathers),
padded together to a multiple of `PROBE_WIDTH_MULTIPLE` tokens, and run in chunks of at most
`max_batch` rows under `torch.inference_mode`.

Why that padding: some kernels' reductions depend on the padded width (training/probe.py measured
it), and probes are recorded padded to that multiple. So a task's probe rows, sent as one request
to an idle server, come back with exactly the logits its probe recorded (tests/serve checks it),
and a request's answers depend on fewer things than the longest row that happened to share its
batch. Labels agree with `cadapt predict` and the evaluation path; logits agree within float
rounding (about 1e-6) when the batch around a row differs.

`task: "auto"` rows are first embedded by the bare encoder and routed by the served tasks' stored
statistics (stream/taskid.py), as `cadapt predict --task auto` routes them; below
`min_confidence` a row is answered with no task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from continual_adapters.core.errors import ConfigError, RequestError
from continual_adapters.core.prediction import Prediction, to_prediction
from continual_adapters.stream.serving import precision_context
from continual_adapters.stream.taskid import base_features
from continual_adapters.training.probe import PROBE_WIDTH_MULTIPLE

if TYPE_CHECKING:
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.serve.state import ServingState

AUTO = "auto"


@dataclass(frozen=True)
class Row:
    """One input of a request: its text (and second text), and its task's name or "auto"."""

    text: str
    pair: str | None
    task: str


@dataclass(frozen=True)
class Answer:
    """What a row gets: its task and how it was chosen ("given" or "auto", with the router's
    confidence), the prediction (None when auto routing found no task confident enough) and the
    raw logits as computed (float32)."""

    task: str | None
    source: str
    confidence: float | None
    prediction: Prediction | None
    logits: list[float] | None


def check_rows(state: ServingState, rows: Sequence[Row]) -> None:
    """TaskNotFoundError for a task not served now, RequestError for "auto" with no router."""
    for row in rows:
        if row.task == AUTO:
            if state.identifier is None or not state.identifier.tasks:
                raise RequestError('task "auto" needs routing statistics, and no served task has them')
        else:
            state.require(row.task)


def route(
    model: ContinualModel, state: ServingState, rows: Sequence[Row], min_confidence: float | None
) -> list[tuple[str | None, str, float | None]]:
    """(task, source, confidence) per row: given tasks as the versions they name (their keys),
    "auto" rows by the router."""
    out: list[tuple[str | None, str, float | None]] = [
        (row.task if row.task == AUTO else state.require(row.task).name, "given", None) for row in rows
    ]
    auto = [i for i, row in enumerate(rows) if row.task == AUTO]
    if not auto:
        return out
    if state.identifier is None:
        raise RequestError('task "auto" needs routing statistics, and no served task has them')
    for paired in (False, True):
        picked = [i for i in auto if (rows[i].pair is not None) == paired]
        if not picked:
            continue
        pairs = [rows[i].pair or "" for i in picked] if paired else None
        names, confidence = state.identifier.identify(base_features(model, [rows[i].text for i in picked], pairs))
        for i, name, value in zip(picked, names, confidence, strict=True):
            chosen = None if min_confidence is not None and value < min_confidence else name
            out[i] = (chosen, AUTO, value)
    return out


def _pad_width(model: ContinualModel, longest: int) -> int | None:
    """`PROBE_WIDTH_MULTIPLE` unless rounding up would pass the model's positions."""
    tokenizer = model.tokenizer
    assert tokenizer is not None
    positions = getattr(model.encoder.config, "max_position_embeddings", None) or longest
    limit = min(positions, tokenizer.model_max_length)
    rounded = -(-longest // PROBE_WIDTH_MULTIPLE) * PROBE_WIDTH_MULTIPLE
    return PROBE_WIDTH_MULTIPLE if rounded <= limit else None


def run_rows(
    model: ContinualModel,
    state: ServingState,
    rows: Sequence[Row],
    max_batch: int,
    min_confidence: float | None = None,
) -> list[Answer]:
    """Answers for `rows`, in order (see the module docstring). Every named task must be served in
    `state` (`check_rows`); call it only from the thread that owns `model`."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError("serving needs the model's tokenizer")
    routed = route(model, state, rows, min_confidence)
    features: dict[int, dict[str, list[int]]] = {}
    by_length: dict[tuple[int, bool], list[int]] = {}  # one tokenizer call per cut, with or without a pair
    for i, (task, _, _) in enumerate(routed):
        if task is not None:
            by_length.setdefault((state.require(task).max_length, rows[i].pair is not None), []).append(i)
    for (max_length, paired), picked in by_length.items():
        pairs = [rows[i].pair or "" for i in picked] if paired else None
        encoded = tokenizer([rows[i].text for i in picked], pairs, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        for n, i in enumerate(picked):
            features[i] = {k: encoded[k][n] for k in keys}
    logits: dict[int, torch.Tensor] = {}
    groups: dict[str, list[int]] = {}
    for i in sorted(features, key=lambda i: (routed[i][0] or "", i)):
        groups.setdefault(state.require(routed[i][0] or "").precision, []).append(i)
    was_training = model.training
    model.eval()
    try:
        for precision, picked in groups.items():
            for start in range(0, len(picked), max_batch):
                chunk = picked[start : start + max_batch]
                longest = max(len(features[i]["input_ids"]) for i in chunk)
                batch = tokenizer.pad(
                    [features[i] for i in chunk],
                    padding="longest",
                    pad_to_multiple_of=_pad_width(model, longest),
                    return_tensors="pt",
                ).to(model.device)
                names = [routed[i][0] or "" for i in chunk]
                with torch.inference_mode(), precision_context(precision, model.device):
                    out = model.forward_mixed(
                        batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), tasks=names
                    )
                for i, row in zip(chunk, out, strict=True):
                    logits[i] = row.float().cpu().clone()
    finally:
        model.train(was_training)
    answers = []
    for i, (task, source, confidence) in enumerate(routed):
        if task is None:
            answers.append(Answer(None, source, confidence, None, None))
            continue
        spec = model.spec(task)
        answers.append(Answer(task, source, confidence, to_prediction(spec, logits[i], task), logits[i].tolist()))
    return answers
