"""The Houlsby bottleneck adapter: the only new math in the toolkit.

h ← h + W_up · f(W_down · h + b_down) + b_up   (Houlsby et al. 2019, Fig. 2)

The internal skip plus a tiny initialisation (truncated normal, std 1e-2, cut at two std,
zero biases) makes a fresh adapter almost the identity, so training starts from the frozen
encoder's behaviour instead of from noise.

Two implementations of the same function (docs/performance.md has the measurements):

* `Adapter.reference_forward` — the formula as written, `h + up(act(down(h)))`;
* the fast path (the default `forward`) — the tokens flattened to one matrix, both
  projections called as `addmm` directly (no `nn.Linear` dispatch), and the residual added
  in place into the up-projection's output, which saves one full-size temporary per adapter.

The fast path performs the same floating-point operations in the same order (IEEE addition is
commutative, and `nn.Linear` on a 3-D input is this very `addmm` on the flattened tokens), so in
fp32 its outputs and gradients are bit-identical to the reference — which keeps `cadapt audit`'s
exact golden-logit check valid for tasks registered before it existed. tests/test_adapter.py
checks `torch.equal`. `set_fast_path(False)` switches every adapter back to the reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from continual_adapters.core.config import ACTIVATIONS, AdapterConfig

# The module behind each name of config.ACTIVATIONS, in that order.
_ACTIVATION_MODULES = dict(zip(ACTIVATIONS, (nn.GELU, nn.ReLU, nn.Tanh, nn.SiLU, nn.Identity), strict=True))


class Adapter(nn.Module):
    """d → m → d bottleneck with an internal residual connection."""

    def __init__(self, hidden_size: int, config: AdapterConfig):
        super().__init__()
        self.down = nn.Linear(hidden_size, config.bottleneck)
        self.act = _ACTIVATION_MODULES[config.activation]()
        self.up = nn.Linear(config.bottleneck, hidden_size)
        self.init_std = config.init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.init_std
        for linear in (self.down, self.up):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not _FAST_PATH or _autocast_changes_dtype(hidden):
            return self.reference_forward(hidden)
        shape = hidden.shape
        flat = hidden.reshape(-1, shape[-1])
        inner = self.act(torch.addmm(self.down.bias, flat, self.down.weight.t()))
        out = torch.addmm(self.up.bias, inner, self.up.weight.t())
        # In place: AddmmBackward keeps only its matrix operands, never its output, so autograd
        # allows writing the residual into it; t + x == x + t bit for bit.
        return out.add_(flat).view(shape)

    def reference_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The paper's formula, op for op; the fast path matches it bit for bit."""
        update: torch.Tensor = self.up(self.act(self.down(hidden)))
        return hidden + update


def _autocast_changes_dtype(hidden: torch.Tensor) -> bool:
    """Under autocast the projections run in the autocast dtype: adding an fp32 residual in place
    into their output would round the sum to that dtype, where the reference promotes to fp32,
    so that case keeps the reference formula."""
    device = hidden.device.type
    return torch.is_autocast_enabled(device) and hidden.dtype != torch.get_autocast_dtype(device)


_FAST_PATH = True


def set_fast_path(enabled: bool) -> None:
    """Chooses the implementation every `Adapter.forward` uses (process-wide; default fast)."""
    global _FAST_PATH
    _FAST_PATH = bool(enabled)


def fast_path_enabled() -> bool:
    return _FAST_PATH


@contextlib.contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    """`with fast_path(False): ...` runs the reference formula inside the block."""
    previous = _FAST_PATH
    set_fast_path(enabled)
    try:
        yield
    finally:
        set_fast_path(previous)


def adapter_parameter_count(hidden_size: int, bottleneck: int, num_layers: int) -> int:
    """Closed form from the paper: two adapters per layer, each 2md + d + m parameters."""
    if bottleneck == 0:
        return 0
    return 2 * num_layers * (2 * bottleneck * hidden_size + hidden_size + bottleneck)
