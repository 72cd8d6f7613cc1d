"""The Houlsby bottleneck adapter: the only new math in the toolkit.

h ← h + W_up · f(W_down · h + b_down) + b_up   (Houlsby et al. 2019, Fig. 2)

The internal skip plus a tiny initialisation (truncated normal, std 1e-2, cut at two std,
zero biases) makes a fresh adapter almost the identity, so training starts from the frozen
encoder's behaviour instead of from noise.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import AdapterConfig

_ACTIVATIONS = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "swish": nn.SiLU,
    "identity": nn.Identity,
}


class Adapter(nn.Module):
    """d → m → d bottleneck with an internal residual connection."""

    def __init__(self, hidden_size: int, config: AdapterConfig):
        super().__init__()
        self.down = nn.Linear(hidden_size, config.bottleneck)
        self.act = _ACTIVATIONS[config.activation]()
        self.up = nn.Linear(config.bottleneck, hidden_size)
        self.init_std = config.init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.init_std
        for linear in (self.down, self.up):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


def adapter_parameter_count(hidden_size: int, bottleneck: int, num_layers: int) -> int:
    """Closed form from the paper: two adapters per layer, each 2md + d + m parameters."""
    if bottleneck == 0:
        return 0
    return 2 * num_layers * (2 * bottleneck * hidden_size + hidden_size + bottleneck)
