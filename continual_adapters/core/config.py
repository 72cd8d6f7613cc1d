"""Typed configuration: what an adapter is, what a task is, and how a task is trained.

These dataclasses are the contract between the model, the bundle file (they are stored in its
header as JSON) and the registry, so they are frozen, validated on construction and
round-trip through `to_dict` / `from_dict`. They live here, apart from the code that uses them
(and free of torch), so that the CLI and the registry can build and read them without loading
the model's libraries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from continual_adapters.core.errors import ConfigError

ACTIVATIONS = ("gelu", "relu", "tanh", "swish", "identity")
HEADS = ("classification", "regression")
POOLINGS = ("mean", "cls")
ADAPTER_METHODS = ("adapters", "ln-only")
BASELINE_METHODS = ("naive", "top-k", "full")
METHODS = ADAPTER_METHODS + BASELINE_METHODS
#: Learning rate per method when none is given: the values the shipped scenarios and docs use
#: (adapters want a rate over ten times that of fine-tuning the encoder; docs/clinc_lr.md).
DEFAULT_LR = {"adapters": 3e-3, "ln-only": 3e-3, "top-k": 2e-4, "full": 1e-4, "naive": 1e-4}
DEFAULT_EPOCHS = 2
#: Layers `--method top-k` fine-tunes per task unless told otherwise.
DEFAULT_TOP_LAYERS = 2
TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: `--task auto` means "identify the task", so no task may be called that.
RESERVED_TASK_NAMES = ("auto",)


def validate_task_name(name: str) -> str:
    """Task names become file names, module keys and CLI arguments, so only slugs are allowed."""
    if not isinstance(name, str) or not TASK_NAME.match(name):
        raise ConfigError(
            f"invalid task name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    if name in RESERVED_TASK_NAMES:
        raise ConfigError(f"invalid task name {name!r}: reserved ({name!r} means 'identify the task' in predict)")
    return name


@dataclass(frozen=True)
class AdapterConfig:
    """Houlsby bottleneck settings.

    `bottleneck=0` means no adapter at all: only the per-task LayerNorms and the head train,
    which is the paper's LayerNorm-only ablation.
    """

    bottleneck: int = 64
    activation: str = "gelu"
    init_std: float = 1e-2

    def __post_init__(self) -> None:
        if not isinstance(self.bottleneck, int) or self.bottleneck < 0:
            raise ConfigError(f"adapter bottleneck must be a non-negative integer, got {self.bottleneck!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if not self.init_std > 0:
            raise ConfigError(f"init_std must be positive, got {self.init_std!r}")


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to rebuild a task's trainable modules before loading its weights."""

    name: str
    labels: tuple[str, ...] = ()
    head: str = "classification"
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    pooling: str = "mean"
    head_dropout: float = 0.1
    method: str = "adapters"
    top_k: int = 0

    def __post_init__(self) -> None:
        validate_task_name(self.name)
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if (self.method == "top-k") != (self.top_k > 0):
            raise ConfigError(f"task {self.name!r}: top_k > 0 goes with method 'top-k' and only with it")
        if self.method == "ln-only" and self.adapter.bottleneck:
            raise ConfigError(f"task {self.name!r}: method 'ln-only' trains no adapter (bottleneck must be 0)")
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.head == "classification" and len(self.labels) < 2:
            raise ConfigError(f"task {self.name!r}: a classification head needs at least 2 labels")
        if self.head == "regression" and self.labels:
            raise ConfigError(f"task {self.name!r}: a regression head takes no labels")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task {self.name!r}: duplicate label names")

    @property
    def num_outputs(self) -> int:
        return 1 if self.head == "regression" else len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        try:
            fields = dict(data)
            fields["adapter"] = AdapterConfig(**fields.get("adapter", {}))
            fields["labels"] = tuple(fields.get("labels", ()))
            return cls(**fields)
        except TypeError as exc:
            raise ConfigError(f"malformed task spec: {exc}") from None


@dataclass(frozen=True)
class TrainConfig:
    """How one task is trained (the paper's AdamW schedule); stored with the bundle's
    hyperparameters, and built by the CLI before any model library is imported."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    lr: float = DEFAULT_LR["adapters"]
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 0
    eval_batch_size: int = 64
    pad_to_max_length: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("epochs and batch sizes must be at least 1")
        if not self.lr > 0 or not 0 <= self.warmup_ratio < 1 or self.max_length < 8:
            raise ConfigError("need lr > 0, 0 <= warmup_ratio < 1 and max_length >= 8")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
