"""One column of a scenario's comparison: a method with its settings, as its `methods:` entry says.

    methods:
      adapters: {adapter_size: 64, lr: 3.0e-3}
      ewc: {lr: 1.0e-4, ewc_lambda: 1.0e+4}
      replay-500: {method: replay, replay_size: 500}
      mtl: {lr: 1.0e-4}            # the multitask upper bound (scenario only)

The label names the run folder; `method` defaults to the label. Besides the learning rate, epochs,
adapter size and top-k layers, a method takes the `MethodOptions` that are its own (EWC's
`ewc_lambda` and `ewc_decay`, replay's `replay_size`, LwF's `lwf_temperature` and `lwf_weight`,
LoRA's `lora_rank`); one that belongs to another method is refused, not silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from continual_adapters.core.config import (
    MULTITASK,
    SCENARIO_METHODS,
    AdapterConfig,
    MethodOptions,
    TrainConfig,
)
from continual_adapters.core.errors import ConfigError

#: The settings every method takes.
COMMON_SETTINGS = ("lr", "epochs", "top_k")
#: The `MethodOptions` fields, each of which belongs to one method (`MethodOptions.for_method`).
OPTION_SETTINGS = tuple(f.name for f in fields(MethodOptions))


def _option_value(label: str, name: str, value: Any) -> Any:
    """An option as `MethodOptions` wants it: floats may be written as integers in YAML (`1e4` is a
    string there: PyYAML wants `1.0e+4`), integers stay integers (validated by MethodOptions)."""
    kind = next(f.type for f in fields(MethodOptions) if f.name == name)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "float" and not isinstance(value, float):
        raise ConfigError(f"method {label!r}: {name} must be a number, got {value!r} (write 1e4 as 1.0e+4)")
    return value


@dataclass(frozen=True)
class MethodSettings:
    """One column of the comparison: a method with its own learning rate, adapter size and options."""

    label: str
    method: str
    adapter_size: int | str = 0
    lr: float | None = None
    epochs: int | None = None
    top_k: int = 2
    #: The method's own options (defaults where the scenario gives none); see `options()`.
    method_options: MethodOptions = field(default_factory=MethodOptions)

    @classmethod
    def parse(cls, label: str, values: dict | None) -> MethodSettings:
        values = dict(values or {})
        method = values.pop("method", label)
        if method not in SCENARIO_METHODS:
            raise ConfigError(f"method {label!r}: unknown method {method!r}; choose from {', '.join(SCENARIO_METHODS)}")
        size = values.pop("adapter_size", 64 if method == "adapters" else 0)
        if size != "auto" and not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise ConfigError(f"method {label!r}: adapter_size must be an integer >= 0 or 'auto'")
        if method == MULTITASK and size != 0:
            raise ConfigError(f"method {label!r}: {MULTITASK} fine-tunes the whole encoder; it takes no adapter_size")
        given = {k: values.pop(k) for k in list(values) if k in OPTION_SETTINGS}
        unknown = set(values) - set(COMMON_SETTINGS)
        if unknown:
            raise ConfigError(f"method {label!r}: unknown settings {sorted(unknown)}")
        try:
            options = MethodOptions.given(method, **{k: _option_value(label, k, v) for k, v in given.items()})
        except TypeError as exc:
            raise ConfigError(f"method {label!r}: bad option ({exc})") from None
        except ConfigError as exc:
            raise ConfigError(f"method {label!r}: {exc}") from None
        return cls(label=label, method=method, adapter_size=size, method_options=options, **values)

    def options(self) -> MethodOptions:
        """The EWC, replay, LwF and LoRA settings, as `Runner.add_task` takes them (each method reads
        its own; the ones this method does not take are the defaults)."""
        return self.method_options

    def adapter(self) -> AdapterConfig:
        return AdapterConfig(bottleneck=64 if self.adapter_size == "auto" else int(self.adapter_size))

    def train_config(self, base: TrainConfig, seed: int) -> TrainConfig:
        return replace(base, seed=seed, lr=base.lr if self.lr is None else self.lr, epochs=self.epochs or base.epochs)
