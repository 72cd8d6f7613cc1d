"""What one task owns: two adapters and two LayerNorm copies per layer, and a head.

Kept apart from the model so that the injected wrappers (inject.py) and the model that routes
them (model.py) can both name a task's modules without importing each other.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from continual_adapters.core.adapter import Adapter
from continual_adapters.core.config import TaskSpec


class Head(nn.Module):
    def __init__(self, hidden_size: int, spec: TaskSpec):
        super().__init__()
        self.dropout = nn.Dropout(spec.head_dropout)
        self.out = nn.Linear(hidden_size, spec.num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.out(self.dropout(pooled))
        return logits


class TaskModules(nn.Module):
    """A task's trainable state: 2 adapters and 2 LayerNorm copies per layer, and a head."""

    def __init__(self, spec: TaskSpec, hidden_size: int, base_norms: list[nn.LayerNorm]):
        super().__init__()
        self.spec = spec
        slots = len(base_norms) if spec.adapter.bottleneck else 0
        self.adapters = nn.ModuleList(Adapter(hidden_size, spec.adapter) for _ in range(slots))
        self.norms = nn.ModuleList(copy.deepcopy(norm) for norm in base_norms)
        self.head = Head(hidden_size, spec)
        for param in self.parameters():
            param.requires_grad_(True)

    def reuse_for(self, spec: TaskSpec) -> TaskModules:
        """These modules, renamed to `spec`, for a caller that loads every tensor next: the adapters
        and LayerNorms are kept (same shapes), the head only when its output size and dropout fit."""
        head = self.head.out
        if head.out_features != spec.num_outputs or self.head.dropout.p != spec.head_dropout:
            with torch.device("meta"):
                fresh = Head(head.in_features, spec)
            self.head = fresh.to_empty(device=head.weight.device)
        self.spec = spec
        return self


def count_parameters(module: nn.Module) -> int:
    """Every parameter of `module`, trainable or not: what storing it costs."""
    return sum(p.numel() for p in module.parameters())
