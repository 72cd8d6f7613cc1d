"""A tiny registry with two versions of one task, for the task-version tests (stream and CLI): tasks
`alpha` and `beta` on the tiny encoder, then `alpha` trained again on other data as `alpha@2`.

Built once per test module (training takes seconds, not minutes); tests that change it work on a
copy (`copy_registry`), so each starts from the same three versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from continual_adapters.data.taskdata import load_eval_split
from continual_adapters.registry import Registry
from tests.support.cli import cli_ok
from tests.support.reliability import write_tiny_data

COMMON = ["--epochs", "1", "--adapter-size", "8", "--max-length", "32", "--quiet"]


def data_args(folder: Path, seed: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = write_tiny_data(folder, seed=seed)
    return ["--train", files["train"], "--validation", files["validation"], "--test", files["test"]]


def build_versioned(root: Path, encoder: str) -> Path:
    """alpha (seed 0), beta (seed 1), and alpha's version 2 trained on seed-2 data with another seed."""
    url = root / "registry.db"
    for name, seed in (("alpha", 0), ("beta", 1)):
        cli_ok(
            "--registry", url, "add-task", name, *data_args(root / f"data-{name}", seed), "--encoder", encoder, *COMMON
        )
    cli_ok(
        "--registry",
        url,
        "add-task",
        "alpha",
        "--new-version",
        *data_args(root / "data-alpha2", 2),
        "--seed",
        "3",
        *COMMON,
        "--json",
    )
    return url


def golden_probabilities(registry: Registry, key: str) -> tuple[list[str], torch.Tensor]:
    """The evaluation rows whose logits version `key` recorded at registration (its golden logits),
    and those logits as probabilities, in label order: what serving that version must answer."""
    task = registry.task(key)
    golden = task.proof["golden"]
    split, _ = load_eval_split(task.data, task.labels)
    texts = [split.texts[i] for i in golden["rows"]]
    return texts, torch.tensor(golden["logits"]).softmax(-1)


def predicted_probabilities(url: Path, ref: str, texts: list[str], labels: list[str]) -> tuple[str, torch.Tensor]:
    """`cadapt predict --task REF --json` on `texts`: the version that answered, and its
    probabilities in `labels` order."""
    out = cli_ok("--registry", url, "predict", "--task", ref, "--top-k", str(len(labels)), "--json", *texts).output
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    answered = {row["task"] for row in rows}
    assert len(answered) == 1, answered
    table = [{entry["label"]: entry["score"] for entry in row["top"]} for row in rows]
    return answered.pop(), torch.tensor([[scores[label] for label in labels] for scores in table])
