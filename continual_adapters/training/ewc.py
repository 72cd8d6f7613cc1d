"""Elastic weight consolidation (Kirkpatrick et al. 2017), in its online form (Schwarz et al. 2018).

One shared encoder is fine-tuned task after task, as under ``naive``; EWC adds a quadratic pull
toward the weights the previous task left, weighted per weight by how much the earlier tasks'
loss depends on it (the diagonal of the Fisher information):

    loss = task loss + lambda / 2 * sum_i F_i (theta_i - theta*_i)^2

Online EWC keeps one running Fisher, ``F <- decay * F + F(task)``, and one anchor ``theta*``
(the encoder after the latest task) rather than one penalty per earlier task: its cost stays
flat as the stream grows. ``F(task)`` is the empirical Fisher: the squared gradient of the loss
of mini-batches of `FISHER_BATCH` training examples (their true labels), averaged over the
batches, over at most `FISHER_EXAMPLES` examples — the way Avalanche's EWC plugin estimates it.
The penalty covers the shared encoder only: earlier heads are frozen and the new head is new.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from continual_adapters.core.errors import BundleError
from continual_adapters.training.loop import Encoded, Objective, pad_batch, task_loss

if TYPE_CHECKING:
    from transformers import BatchEncoding

    from continual_adapters.core.model import ContinualModel

#: Examples per mini-batch, and at most how many training examples, for a task's Fisher.
FISHER_BATCH = 8
FISHER_EXAMPLES = 1024
FISHER_FORMAT = "cadapt-fisher"
#: The prefix of the shared encoder's tensors in a shared-encoder task's state (BaselineTask.encoder).
ENCODER_PREFIX = "encoder."


def ewc_penalty(
    params: Mapping[str, torch.Tensor], fisher: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """sum_i F_i (theta_i - theta*_i)^2 over every tensor the Fisher covers (lambda / 2 is the caller's)."""
    terms = [(fisher[name] * (params[name] - anchor[name]).pow(2)).sum() for name in fisher]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def shared_parameters(model: ContinualModel, task: str) -> dict[str, torch.nn.Parameter]:
    """The shared encoder's parameters as `task` holds them, by their name in its state."""
    return {
        name: param for name, param in model.task_modules(task).named_parameters() if name.startswith(ENCODER_PREFIX)
    }


class ElasticPenalty(Objective):
    """The new task's loss plus lambda / 2 times the Fisher-weighted distance to the anchor."""

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        fisher: Mapping[str, torch.Tensor],
        anchor: Mapping[str, torch.Tensor],
        weight: float,
    ):
        missing = sorted(set(fisher) - set(params))
        if missing or set(fisher) != set(anchor):
            raise BundleError(f"the stored Fisher does not match this encoder (e.g. {missing[:3]})")
        self.params, self.fisher, self.anchor, self.weight = params, fisher, anchor, weight

    def loss(
        self, model: ContinualModel, task: str, rows: list[int], batch: BatchEncoding, targets: torch.Tensor
    ) -> torch.Tensor:
        penalty = ewc_penalty(self.params, self.fisher, self.anchor)
        return task_loss(model, task, batch, targets) + self.weight / 2 * penalty


@torch.enable_grad()
def fisher_diagonal(model: ContinualModel, task: str, train: Encoded, seed: int) -> dict[str, torch.Tensor]:
    """The empirical Fisher of `task` over its shared-encoder weights (see the module docstring),
    from a seeded sample of its training rows, with dropout off."""
    params = shared_parameters(model, task)
    fisher = {name: torch.zeros_like(param) for name, param in params.items()}
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(train), generator=generator)[:FISHER_EXAMPLES].tolist()
    assert model.tokenizer is not None, "a model that trained a task carries its tokenizer"
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for start in range(0, len(rows), FISHER_BATCH):
            chunk = rows[start : start + FISHER_BATCH]
            model.zero_grad(set_to_none=True)
            task_loss(model, task, pad_batch(model.tokenizer, train, chunk, None), train.targets[chunk]).backward()
            for name, param in params.items():
                if param.grad is not None:
                    fisher[name] += param.grad.detach().float().pow(2)
            batches += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: value / max(1, batches) for name, value in fisher.items()}


def fisher_bytes(task: str, fisher: Mapping[str, torch.Tensor], decay: float) -> bytes:
    """The running Fisher after `task`, as a safetensors file (kind ``fisher`` in the registry)."""
    meta = {"format": FISHER_FORMAT, "task": task, "decay": decay}
    tensors = {name: value.detach().float().cpu().contiguous() for name, value in fisher.items()}
    return save(tensors, metadata={"cadapt": json.dumps(meta, sort_keys=True)})


def parse_fisher(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """A stored running Fisher; `BundleError` naming `source` for anything that is not one."""
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise BundleError(f"{source}: not a Fisher file ({exc})") from None
    bad = [name for name, value in tensors.items() if value.dtype != torch.float32 or not torch.isfinite(value).all()]
    if bad or not tensors:
        raise BundleError(f"{source}: a Fisher file holds finite float32 tensors only (bad: {bad[:3]})")
    if any((value < 0).any() for value in tensors.values()):
        raise BundleError(f"{source}: a Fisher diagonal is never negative")
    return tensors
