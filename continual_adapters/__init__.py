"""continual_adapters: Houlsby adapters on a frozen encoder, one per task, with a registry."""
from .config import AdapterConfig, TaskSpec
from .errors import CadaptError
from .model import ContinualModel
from .registry import Registry
from .runner import Runner
from .taskdata import DataSpec
from .training import TrainConfig

__all__ = ["AdapterConfig", "CadaptError", "ContinualModel", "DataSpec", "Registry", "Runner", "TaskSpec",
           "TrainConfig"]
