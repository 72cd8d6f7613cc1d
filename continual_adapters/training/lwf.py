"""Learning without Forgetting (Li & Hoiem 2016) on one shared encoder with a head per task.

Before the new task trains, every earlier head's outputs on the new task's training inputs are
recorded, through the encoder as the previous task left it (the teacher). While the new task
trains, its loss gains ``weight * sum_h T^2 * KL(softmax(teacher_h / T) || softmax(student_h / T))``,
where ``student_h`` is earlier head h applied to the current encoder's features of the same
inputs. No earlier data is kept: the new task's own inputs carry the old behaviour.

The earlier heads stay frozen (their bundles are registered and never rewritten), so the
distillation holds the shared encoder alone; Li & Hoiem fine-tune the old heads too. A
regression head is distilled by the squared difference of its outputs (its T^2 is 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from continual_adapters.training.loop import Encoded, Objective, autocast_for, head_loss, pad_batch

if TYPE_CHECKING:
    from transformers import BatchEncoding

    from continual_adapters.core.model import ContinualModel


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, head: str) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, averaged over rows (Hinton et al. 2015's
    scaling keeps its gradients comparable across temperatures); MSE for a regression head."""
    if head == "regression":
        return torch.nn.functional.mse_loss(student.float(), teacher.float())
    log_student = torch.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher.float() / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def _inputs(model: ContinualModel, batch: BatchEncoding) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    moved = {k: v.to(model.device) for k, v in batch.items()}
    return moved["input_ids"], moved["attention_mask"], moved.get("token_type_ids")


def head_outputs(model: ContinualModel, heads: list[str], task: str, batch: BatchEncoding) -> dict[str, torch.Tensor]:
    """Each head's logits (dropout off) on the features of `task`'s route: one encoder pass,
    since every task of a shared-encoder method reads the same encoder."""
    with autocast_for(model.device):
        features = model.features(task, *_inputs(model, batch))
        return {name: model.task_modules(name).head.out(features) for name in heads}


@torch.no_grad()
def record_teacher(
    model: ContinualModel, heads: list[str], train: Encoded, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """The earlier heads' logits on every training row of the new task, before it trains."""
    assert model.tokenizer is not None, "a model that trains carries its tokenizer"
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in heads}
    try:
        for start in range(0, len(train), batch_size):
            rows = list(range(start, min(start + batch_size, len(train))))
            logits = head_outputs(model, heads, heads[0], pad_batch(model.tokenizer, train, rows, None))
            for name in heads:
                out[name].append(logits[name].float().cpu())
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in out.items()}


class Distillation(Objective):
    """The new task's loss plus `weight` times the distillation of every earlier head."""

    def __init__(self, teacher: Mapping[str, torch.Tensor], temperature: float, weight: float):
        self.teacher, self.temperature, self.weight = teacher, temperature, weight

    def loss(
        self, model: ContinualModel, task: str, rows: list[int], batch: BatchEncoding, targets: torch.Tensor
    ) -> torch.Tensor:
        with autocast_for(model.device):
            features = model.features(task, *_inputs(model, batch))
            logits = model.task_modules(task).head(features)
            earlier = {name: model.task_modules(name).head.out(features) for name in self.teacher}
        loss = head_loss(model.spec(task).head, logits, targets.to(model.device))
        for name, student in earlier.items():
            teacher = self.teacher[name][rows].to(model.device)
            loss = loss + self.weight * distillation_loss(student, teacher, self.temperature, model.spec(name).head)
        return loss
