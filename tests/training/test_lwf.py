"""LwF: the distillation term is T^2 KL(teacher || student) and is exactly zero while the model has
not moved from the teacher; it grows once the shared encoder moves."""

from __future__ import annotations

import math

import pytest
import torch

from continual_adapters.core.baselines import BaselineModel
from continual_adapters.core.config import TaskSpec
from continual_adapters.training.loop import encode, pad_batch, task_loss
from continual_adapters.training.lwf import Distillation, distillation_loss, record_teacher


def test_distillation_by_hand():
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # softmax at T=1: (1/4, 3/4)
    student = torch.tensor([[0.0, 0.0]])  # (1/2, 1/2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert distillation_loss(student, teacher, 1.0, "classification").item() == pytest.approx(kl, rel=1e-5)
    # at T=2 the teacher is softmax(0, ln3 / 2) = (1, sqrt 3) / (1 + sqrt 3); the student stays uniform
    p = torch.tensor([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0))
    kl2 = float((p * (p / 0.5).log()).sum())
    assert distillation_loss(student, teacher, 2.0, "classification").item() == pytest.approx(4 * kl2, rel=1e-5)
    assert distillation_loss(teacher, teacher, 2.0, "classification").item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(torch.tensor([[1.0]]), torch.tensor([[3.0]]), 2.0, "regression").item() == 4.0


def test_the_term_is_zero_until_the_encoder_moves(tiny_encoder_dir):
    model = BaselineModel.from_pretrained(tiny_encoder_dir, method="naive").eval()
    for name, labels in (("old", ("a", "b", "c")), ("older", ("x", "y")), ("new", ("p", "q"))):
        model.add_task(TaskSpec(name, labels=labels, method="naive"))
    texts = [f"text {i} about {'cats' if i % 3 else 'dogs'}" for i in range(10)]
    train = encode(model.tokenizer, texts, None, [i % 2 for i in range(10)], 32, "classification")
    teacher = record_teacher(model, ["old", "older"], train, batch_size=4)
    assert teacher["old"].shape == (10, 3) and teacher["older"].shape == (10, 2)
    objective = Distillation(teacher, temperature=2.0, weight=1.0)
    rows = [7, 2, 5]
    batch = pad_batch(model.tokenizer, train, rows, None)
    plain = task_loss(model, "new", batch, train.targets[rows])
    assert objective.loss(model, "new", rows, batch, train.targets[rows]).item() == pytest.approx(
        plain.item(), abs=1e-6
    )
    with torch.no_grad():
        for param in model.task_modules("new").encoder.parameters():
            param.add_(0.05 * torch.randn_like(param))
    moved = objective.loss(model, "new", rows, batch, train.targets[rows])
    assert moved.item() > task_loss(model, "new", batch, train.targets[rows]).item() + 1e-4
