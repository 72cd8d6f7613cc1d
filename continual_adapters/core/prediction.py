"""What `predict` answers per text: a label with its probabilities (or a regression value), from logits.

Kept apart from the model so that a server (serve/) and the CLI can build and read answers without
the model's routing code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from continual_adapters.core.config import TaskSpec


@dataclass(frozen=True)
class Prediction:
    label: str | float
    score: float
    probabilities: dict[str, float]
    task: str | None = None

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]


def to_prediction(spec: TaskSpec, logits: torch.Tensor, task: str) -> Prediction:
    """One row's logits as a label with probabilities (softmax), or the regression value: the one
    conversion `predict` and the HTTP server (serve/) share, so both answer alike."""
    if spec.head == "regression":
        return Prediction(label=float(logits[0]), score=float(logits[0]), probabilities={}, task=task)
    probs = logits.softmax(-1)
    best = int(probs.argmax())
    return Prediction(
        label=spec.labels[best],
        score=float(probs[best]),
        task=task,
        probabilities={label: float(p) for label, p in zip(spec.labels, probs, strict=True)},
    )
