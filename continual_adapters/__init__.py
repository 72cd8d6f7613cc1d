"""continual_adapters: Houlsby adapters on a frozen encoder, one per task, with a registry."""
from .config import AdapterConfig, TaskSpec
from .errors import CadaptError
from .model import ContinualModel

__all__ = ["AdapterConfig", "CadaptError", "ContinualModel", "TaskSpec"]
