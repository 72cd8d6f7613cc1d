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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from continual_adapters.core.architectures import architecture_for
from continual_adapters.core.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from continual_adapters.core.task_modules import TaskModules

#: What routing applies to one task's rows: a module, or a plain function, of the hidden states.
Layer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Router:
    """Which task's modules the wrapped encoder uses for the current forward pass.

    `task` routes the whole batch to one task. `groups` (task modules, row indices or a slice) routes
    each example to its own task in one forward pass; it wins over `task` when set.
    """

    task: TaskModules | None = None
    groups: list[tuple[TaskModules, torch.Tensor | slice]] = field(default_factory=list)


def _route(router: Router, x: torch.Tensor, pick: Callable[[TaskModules], Layer], fallback: Layer) -> torch.Tensor:
    if router.groups:
        out = torch.empty_like(x)
        for task, rows in router.groups:
            out[rows] = pick(task)(x[rows])
        return out
    return pick(router.task)(x) if router.task is not None else fallback(x)


class AdapterSlot(nn.Module):
    """Runs the wrapped sub-layer output module, then the active task's adapter number `index`."""

    router: Router  # set through __dict__ in __init__

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

    def _adapter_of(self, task: TaskModules) -> Layer:
        return task.adapters[self.index] if len(task.adapters) else _identity


class TaskLayerNorm(nn.Module):
    """Uses the active task's copy of LayerNorm number `index`; the frozen original otherwise."""

    router: Router  # set through __dict__ in __init__

    def __init__(self, base: nn.LayerNorm, router: Router, index: int):
        super().__init__()
        self.base = base
        self.index = index
        self.__dict__["router"] = router

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _route(self.router, x, self._norm_of, self.base)

    def _norm_of(self, task: TaskModules) -> Layer:
        """Tasks without LayerNorm copies (the fine-tuning baselines) use the base one."""
        return task.norms[self.index] if len(task.norms) else self.base


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _replace(root: nn.Module, path: str, replacement: nn.Module) -> None:
    """Puts `replacement` where the submodule at dotted `path` under `root` was."""
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, replacement)


def encoder_layers(encoder: PreTrainedModel) -> nn.ModuleList:
    """The encoder's list of layers, where its architecture entry says it is."""
    model_type = encoder.config.model_type
    layers = encoder.get_submodule(architecture_for(model_type).layers)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(f"the layers of a {model_type!r} encoder are not a ModuleList")
    return layers


def inject(encoder: PreTrainedModel, router: Router) -> list[nn.LayerNorm]:
    """Wraps 2 modules and 2 LayerNorms per layer; returns the base LayerNorms in slot order.

    Slot order is layer by layer, attention first: slot 2k is layer k's attention adapter and
    LayerNorm, slot 2k+1 its feed-forward ones. Bundles store tensors by slot number.
    """
    arch = architecture_for(encoder.config.model_type)
    norms: list[nn.LayerNorm] = []
    for layer in encoder_layers(encoder):
        for out_path, norm_path in ((arch.attention_out, arch.attention_norm), (arch.ffn_out, arch.ffn_norm)):
            index = len(norms)
            _replace(layer, out_path, AdapterSlot(layer.get_submodule(out_path), router, index))
            norm = layer.get_submodule(norm_path)
            if not isinstance(norm, nn.LayerNorm):
                raise UnsupportedArchitectureError(f"{norm_path!r} in a {arch.layers!r} layer is not a LayerNorm")
            _replace(layer, norm_path, TaskLayerNorm(norm, router, index))
            norms.append(norm)
    return norms
