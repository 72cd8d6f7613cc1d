"""The one place that puts adapters into a Hugging Face encoder.

Houlsby et al. place an adapter on the output of each sub-layer (attention, feed-forward),
after its projection and dropout, before the residual add and LayerNorm. Rather than copying
Hugging Face `forward` code, we wrap two modules per layer, named in a small per-architecture
table (architectures.py):

* the last module before the residual add (usually the sub-layer's dropout) is wrapped by
  an `AdapterSlot`, which runs the module and then the active task's adapter;
* the LayerNorm that follows the residual add is wrapped by a `TaskLayerNorm`, which uses the
  active task's own copy of that LayerNorm (the paper trains LayerNorm per task).

Both wrappers ask a shared `Router` which task is active, so switching tasks is one
assignment and the base weights are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from continual_adapters.core.architectures import architecture_for


@dataclass
class Router:
    """Which task's modules the wrapped encoder uses for the current forward pass.

    `task` routes the whole batch to one task. `groups` (task modules, row indices) routes
    each example to its own task in one forward pass; it wins over `task` when set.
    """

    task: nn.Module | None = None
    groups: list[tuple[nn.Module, torch.Tensor]] = field(default_factory=list)


def _route(router: Router, x: torch.Tensor, pick, fallback) -> torch.Tensor:
    if router.groups:
        out = torch.empty_like(x)
        for task, rows in router.groups:
            out[rows] = pick(task)(x[rows])
        return out
    return pick(router.task)(x) if router.task is not None else fallback(x)


class AdapterSlot(nn.Module):
    """Runs the wrapped sub-layer output module, then the active task's adapter number `index`."""

    def __init__(self, inner: nn.Module, router: Router, index: int):
        super().__init__()
        self.inner = inner
        self.index = index
        self.__dict__["router"] = router  # shared state, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inner(x)
        router = self.router
        if router.task is None and not router.groups:
            return x
        return _route(router, x, self._adapter_of, _identity)

    def _adapter_of(self, task: nn.Module):
        return task.adapters[self.index] if len(task.adapters) else _identity


class TaskLayerNorm(nn.Module):
    """Uses the active task's copy of LayerNorm number `index`; the frozen original otherwise."""

    def __init__(self, base: nn.LayerNorm, router: Router, index: int):
        super().__init__()
        self.base = base
        self.index = index
        self.__dict__["router"] = router

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _route(self.router, x, self._norm_of, self.base)

    def _norm_of(self, task: nn.Module):
        """Tasks without LayerNorm copies (the fine-tuning baselines) use the base one."""
        return task.norms[self.index] if len(task.norms) else self.base


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _replace(root: nn.Module, path: str, wrap) -> nn.Module:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    original = getattr(parent, attr)
    setattr(parent, attr, wrap(original))
    return original


def inject(encoder: nn.Module, router: Router) -> list[nn.LayerNorm]:
    """Wraps 2 modules and 2 LayerNorms per layer; returns the base LayerNorms in slot order.

    Slot order is layer by layer, attention first: slot 2k is layer k's attention adapter and
    LayerNorm, slot 2k+1 its feed-forward ones. Bundles store tensors by slot number.
    """
    arch = architecture_for(encoder.config.model_type)
    norms: list[nn.LayerNorm] = []
    for layer in encoder.get_submodule(arch.layers):
        for out_path, norm_path in ((arch.attention_out, arch.attention_norm), (arch.ffn_out, arch.ffn_norm)):
            index = len(norms)
            _replace(layer, out_path, partial(AdapterSlot, router=router, index=index))
            norms.append(_replace(layer, norm_path, partial(TaskLayerNorm, router=router, index=index)))
    return norms
