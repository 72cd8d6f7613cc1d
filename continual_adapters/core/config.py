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
#: One LoRA (Hu et al. 2021, through PEFT) per task on the frozen base: isolated like adapters.
LORA_METHODS = ("lora",)
#: Methods that fine-tune one shared encoder task after task, earlier tasks keeping their heads:
#: naive sequential fine-tuning, and the continual-learning methods that fight its forgetting
#: (EWC: a penalty; replay: rehearsal of stored examples; LwF: distillation of the earlier heads).
SHARED_METHODS = ("naive", "ewc", "replay", "lwf")
BASELINE_METHODS = SHARED_METHODS + ("top-k", "full")
METHODS = ADAPTER_METHODS + LORA_METHODS + BASELINE_METHODS
#: The registry artifact a shared-encoder method carries from one task to the next (stream/methods.py).
METHOD_STATE_KINDS = {"ewc": "fisher", "replay": "replay"}
#: Scenario-only: one model trained on every task of the stream jointly. The multitask upper bound
#: of the continual-learning literature; it is not a continual method and has no `add-task`.
MULTITASK = "mtl"
SCENARIO_METHODS = METHODS + (MULTITASK,)
#: Learning rate per method when none is given: the values the shipped scenarios and docs use
#: (adapters want a rate over ten times that of fine-tuning the encoder; docs/clinc_lr.md).
DEFAULT_LR = {
    "adapters": 3e-3,
    "ln-only": 3e-3,
    "lora": 1e-3,
    "top-k": 2e-4,
    "full": 1e-4,
    "naive": 1e-4,
    "ewc": 1e-4,
    "replay": 1e-4,
    "lwf": 1e-4,
    MULTITASK: 1e-4,
}
#: LoRA rank per task: at r=64 on the query and value projections of all-MiniLM-L6-v2, 589,824
#: parameters, against 595,200 for the m=64 Houlsby adapters (plus 9,216 in their LayerNorms).
DEFAULT_LORA_RANK = 64
#: Online EWC's penalty weight (lambda) and the decay of the running Fisher (gamma = 1: no decay).
#: Set by the penalty's scale (bench/ewc_scale.py): on MiniLM a second task left free moved the
#: encoder by sum_i F_i d_i^2 = 4.8e-6, so lambda = 1e5 prices that drift at 0.24, the size of a task's
#: loss (1e4 would price it at 0.02 and hold nothing). Not tuned per stream; --ewc-lambda sets it.
DEFAULT_EWC_LAMBDA = 1e5
DEFAULT_EWC_DECAY = 1.0
#: Experience replay's memory: a reservoir of this many training examples over the whole stream.
DEFAULT_REPLAY_SIZE = 1000
#: LwF's distillation temperature and weight (Li & Hoiem 2016 use T = 2).
DEFAULT_LWF_TEMPERATURE = 2.0
DEFAULT_LWF_WEIGHT = 1.0


def method_family(method: str) -> str:
    """Methods that can share a registry share a family: adapters and ln-only run on one model;
    every other method needs its own model, hence a registry of its own."""
    return "adapters" if method in ADAPTER_METHODS else method


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


#: Separates a task's name from a version or alias: `sst2@2`, `sst2@production` (core/versions.py).
VERSION_SEPARATOR = "@"


def version_key(name: str, version: int) -> str:
    """The key a version of task `name` is stored, attached and filed under: the bare name for
    version 1, so every task registered before versions existed keeps its key, bundle and module
    names; `name@N` for a later one, the same spelling that addresses it on the command line."""
    return name if version == 1 else f"{name}{VERSION_SEPARATOR}{version}"


def validate_task_key(key: str) -> str:
    """A task name or the key of one of its later versions (`name@N`, N >= 2, as `version_key`
    writes it): what a bundle, a probe and the model's modules are named by."""
    name, separator, version = key.partition(VERSION_SEPARATOR) if isinstance(key, str) else (key, "", "")
    validate_task_name(name)
    if separator and not (version.isdigit() and version[0] != "0" and version.isascii() and int(version) >= 2):
        raise ConfigError(f"invalid task version key {key!r}: a later version is written name@N with N >= 2")
    return key


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
class LoraSettings:
    """One task's LoRA (Hu et al. 2021): rank, scaling alpha (scale = alpha / rank), dropout on its
    input, and the modules it adapts (empty: the architecture's attention query and value
    projections, architectures.py; filled in with their names when the task is built)."""

    rank: int = DEFAULT_LORA_RANK
    alpha: float = float(DEFAULT_LORA_RANK)
    dropout: float = 0.1
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA needs alpha > 0 and 0 <= dropout < 1, got {self.alpha!r}, {self.dropout!r}")
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))


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
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        validate_task_key(self.name)
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if (self.method in LORA_METHODS) != (self.lora is not None):
            raise ConfigError(f"task {self.name!r}: LoRA settings go with method 'lora' and only with it")
        if self.method in LORA_METHODS and self.adapter.bottleneck:
            raise ConfigError(f"task {self.name!r}: method 'lora' trains no adapter (bottleneck must be 0)")
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
        """As stored in bundle headers; `lora` only when set, so that the specs (and bundle bytes) of
        every other method stay what they were before LoRA existed."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        if self.lora is None:
            del data["lora"]
        else:
            data["lora"]["targets"] = list(self.lora.targets)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        try:
            fields = dict(data)
            fields["adapter"] = AdapterConfig(**fields.get("adapter", {}))
            fields["labels"] = tuple(fields.get("labels", ()))
            if fields.get("lora") is not None:
                fields["lora"] = LoraSettings(**fields["lora"])
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


@dataclass(frozen=True)
class MethodOptions:
    """The settings of the methods beyond adapters and plain fine-tuning; each method reads its own
    (`for_method`, which is also what the task's hyperparameters record)."""

    ewc_lambda: float = DEFAULT_EWC_LAMBDA
    ewc_decay: float = DEFAULT_EWC_DECAY
    replay_size: int = DEFAULT_REPLAY_SIZE
    lwf_temperature: float = DEFAULT_LWF_TEMPERATURE
    lwf_weight: float = DEFAULT_LWF_WEIGHT
    lora_rank: int = DEFAULT_LORA_RANK

    def __post_init__(self) -> None:
        if not self.ewc_lambda >= 0 or not 0 < self.ewc_decay <= 1:
            raise ConfigError(f"EWC needs lambda >= 0 and 0 < decay <= 1, got {self.ewc_lambda!r}, {self.ewc_decay!r}")
        if isinstance(self.replay_size, bool) or not isinstance(self.replay_size, int) or self.replay_size < 1:
            raise ConfigError(f"replay size must be an integer >= 1 (examples kept), got {self.replay_size!r}")
        if not self.lwf_temperature > 0 or not self.lwf_weight >= 0:
            raise ConfigError(
                f"LwF needs temperature > 0 and weight >= 0, got {self.lwf_temperature!r}, {self.lwf_weight!r}"
            )
        LoraSettings(rank=self.lora_rank)

    @classmethod
    def given(cls, method: str, **values: Any) -> MethodOptions:
        """Options set by a user for `method` (None: not given), refusing any that `method` does not
        read: a replay size on adapters is a mistake to report, not to ignore."""
        chosen = {k: v for k, v in values.items() if v is not None}
        own = cls().for_method(method)
        foreign = sorted(set(chosen) - set(own))
        if foreign:
            takes = f"it takes {', '.join(sorted(own))}" if own else "it takes none of them"
            raise ConfigError(f"{', '.join(foreign)}: these options belong to another method than {method!r}; {takes}")
        return cls(**chosen)

    def for_method(self, method: str) -> dict[str, Any]:
        """The options `method` uses, by name (none for adapters and the plain baselines)."""
        prefix = {"ewc": "ewc_", "replay": "replay_", "lwf": "lwf_", "lora": "lora_"}.get(method)
        return {k: v for k, v in asdict(self).items() if prefix and k.startswith(prefix)}

    def lora(self) -> LoraSettings:
        return LoraSettings(rank=self.lora_rank, alpha=float(self.lora_rank))
