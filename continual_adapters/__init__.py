"""continual_adapters: Houlsby adapters on a frozen encoder, one per task, with a registry.

The package is built in layers, each a subpackage that imports only the ones below it:
core (the model) < metrics < data < files < registry < training < transfer < stream < report < serve < cli
(`LAYERS`).
The names below are the public Python API; they are imported on first use, so that
`import continual_adapters` (and every command that only reads the registry) does not pay for
torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The subpackages from the bottom up. A module may import from its own subpackage and from those
#: before it, never from one after it (tests/test_layers.py walks every import and checks).
LAYERS = (
    "core",
    "metrics",
    "data",
    "files",
    "registry",
    "training",
    "transfer",
    "stream",
    "report",
    "serve",
    "cli",
)

if TYPE_CHECKING:
    from continual_adapters.core.config import AdapterConfig, TaskSpec, TrainConfig
    from continual_adapters.core.errors import CadaptError
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.data.taskdata import DataSpec
    from continual_adapters.files.bundle import load_task, save_task
    from continual_adapters.registry import Registry
    from continual_adapters.stream.runner import Runner

_EXPORTS = {
    "AdapterConfig": "continual_adapters.core.config",
    "TaskSpec": "continual_adapters.core.config",
    "CadaptError": "continual_adapters.core.errors",
    "ContinualModel": "continual_adapters.core.model",
    "DataSpec": "continual_adapters.data.taskdata",
    "Registry": "continual_adapters.registry",
    "Runner": "continual_adapters.stream.runner",
    "TrainConfig": "continual_adapters.core.config",
    "save_task": "continual_adapters.files.bundle",
    "load_task": "continual_adapters.files.bundle",
}

__all__ = [
    "AdapterConfig",
    "CadaptError",
    "ContinualModel",
    "DataSpec",
    "Registry",
    "Runner",
    "TaskSpec",
    "TrainConfig",
    "load_task",
    "save_task",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'continual_adapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
