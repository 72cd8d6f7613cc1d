"""`ContinualModel`: one frozen encoder, many tasks, each owning its adapters, LayerNorms and head.

This is the Python API the runner, the CLI and users build on. Each task's trainable tensors
live in their own `TaskModules`; nothing trainable is shared between tasks and the encoder's
parameters have `requires_grad=False` from construction on.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from continual_adapters.core.config import ADAPTER_METHODS, LORA_METHODS, AdapterConfig, TaskSpec
from continual_adapters.core.encoder import DEFAULT_ENCODER, load_encoder
from continual_adapters.core.errors import ConfigError, TaskExistsError, TaskNotFoundError
from continual_adapters.core.inject import Router, inject
from continual_adapters.core.prediction import Prediction, to_prediction
from continual_adapters.core.task_modules import TaskModules, count_parameters

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase
    from typing_extensions import Self


@dataclass(frozen=True)
class ParamCounts:
    """What one task adds on top of the shared base model.

    `total` is what must be stored for the task (the ledger's growth); `trained` is what its
    optimiser updated. They differ only for the naive baseline, which trains the whole shared
    encoder but keeps one copy of it for all tasks. `lora` is a LoRA task's A and B matrices.
    """

    adapter: int
    layer_norm: int
    head: int
    base: int
    bytes: int
    encoder: int = 0
    trained_encoder: int | None = None
    lora: int = 0

    @property
    def total(self) -> int:
        return self.adapter + self.layer_norm + self.head + self.encoder + self.lora

    @property
    def trained(self) -> int:
        encoder = self.encoder if self.trained_encoder is None else self.trained_encoder
        return self.adapter + self.layer_norm + self.head + encoder + self.lora

    @property
    def percent_of_base(self) -> float:
        return 100.0 * self.total / self.base

    def to_dict(self) -> dict[str, int]:
        """As recorded in bundle headers and the registry. `lora` only when there is one: the audit
        compares this dict with the one recorded at registration, so every other method's counts
        (and bundle bytes) stay exactly what they were before LoRA existed."""
        counts = {
            "adapter": self.adapter,
            "layer_norm": self.layer_norm,
            "head": self.head,
            "encoder": self.encoder,
            "total": self.total,
            "trained": self.trained,
            "bytes": self.bytes,
            "base": self.base,
        }
        if self.lora:
            counts["lora"] = self.lora
        return counts


#: Detached task modules kept for reuse (`ContinualModel.remove_task`): one confirmation round's worth.
MAX_SPARES = 16


def spare_key(spec: TaskSpec) -> tuple[AdapterConfig, str]:
    """What decides the shapes of a task's adapters and LayerNorms: the head is refitted on reuse
    (`TaskModules.reuse_for`), so tasks with different label counts share spares. Confirming a
    stream of datasets with 2, 3, 6 or 14 labels would otherwise build most rounds' modules anew."""
    return spec.adapter, spec.method


def tensor_digest(named: Sequence[tuple[str, torch.Tensor]]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, so any change to any tensor shows."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ContinualModel(nn.Module):
    def __init__(
        self, encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None, base_name: str = "custom"
    ):
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
        # A plain dict, not a ModuleDict: spares are not part of the model.
        self._spares: dict[tuple[AdapterConfig, str], list[TaskModules]] = {}
        self._takes_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
        self._base_sha256: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, revision: str | None = None, **kwargs: Any) -> Self:
        """Loads any supported `AutoModel` checkpoint; the default encoder when none is named."""
        name = name_or_path or DEFAULT_ENCODER
        encoder, tokenizer = load_encoder(name, revision)
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
    #: Whether rows of different tasks share one encoder pass (adapters route inside the encoder);
    #: models whose tasks change the encoder's own weights (baselines, LoRA) run one pass per task.
    mixes_in_one_pass = True

    def add_task(self, spec: TaskSpec, initialise: bool = True) -> TaskModules:
        """Attaches fresh modules for `spec`. `initialise=False` leaves their values unset (built on
        the meta device, then allocated): for a caller about to load every tensor from a bundle,
        which would otherwise pay for a random init it overwrites (most of attaching a task)."""
        if spec.name in self.tasks:
            raise TaskExistsError(f"task {spec.name!r} is already attached to this model")
        if spec.method not in ADAPTER_METHODS:
            home = "lora.LoraModel" if spec.method in LORA_METHODS else "baselines.BaselineModel"
            raise ConfigError(
                f"task {spec.name!r} uses method {spec.method!r}; load it with continual_adapters.core.{home}"
            )
        spares = self._spares.get(spare_key(spec), [])
        if initialise:
            modules = TaskModules(spec, self.hidden_size, self._base_norms).to(self.device)
        elif spares and next(spares[-1].parameters()).device == self.device:
            modules = spares.pop().reuse_for(spec)
        else:
            with torch.device("meta"):
                modules = TaskModules(spec, self.hidden_size, self._base_norms)
            modules = modules.to_empty(device=self.device)
        modules.train(self.training)
        self.tasks[spec.name] = modules
        return modules

    def remove_task(self, name: str) -> None:
        """Detaches a task. Its modules are kept as a spare (at most `MAX_SPARES`) for the next task
        of the same shape attached with `initialise=False`: confirming 200 tasks a round at a time
        then builds one round of modules, not 200 (building them costs more than loading them)."""
        modules = self.task_modules(name)
        if self.router.task is modules:
            self.router.task = None
        del self.tasks[name]
        if sum(map(len, self._spares.values())) < MAX_SPARES:
            self._spares.setdefault(spare_key(modules.spec), []).append(modules)

    def task_modules(self, name: str) -> TaskModules:
        if name not in self.tasks:
            known = ", ".join(self.tasks) or "none"
            raise TaskNotFoundError(f"no task {name!r} on this model (attached: {known})")
        modules = self.tasks[name]
        assert isinstance(modules, TaskModules)  # add_task is the only way in
        return modules

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
            adapter=count_parameters(modules.adapters),
            layer_norm=count_parameters(modules.norms),
            head=count_parameters(modules.head),
            base=self.base_parameter_count,
            bytes=sum(t.numel() * t.element_size() for t in tensors),
        )

    def _hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        encoder: nn.Module | None = None,
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        hidden: torch.Tensor = (encoder or self.encoder)(**kwargs).last_hidden_state
        return hidden

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        pooling: str = "mean",
        encoder: nn.Module | None = None,
    ) -> torch.Tensor:
        """Pooled sentence features through whatever task is routed (`encoder`: another copy)."""
        return pool(self._hidden(input_ids, attention_mask, token_type_ids, encoder), attention_mask, pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        task: str | None = None,
    ) -> torch.Tensor:
        """Logits of `task` (default: the active task)."""
        if task is not None:
            self.set_task(task)
        modules = self.router.task
        if modules is None:
            raise ConfigError("no task is active: call set_task(name) or pass task=")
        logits: torch.Tensor = modules.head(self._pooled(modules, input_ids, attention_mask, token_type_ids))
        return logits

    def features(
        self,
        name: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled features of `name`'s route, before its head: what distillation (LwF) applies
        several heads to after one encoder pass."""
        self.set_task(name)
        return self._pooled(self.task_modules(name), input_ids, attention_mask, token_type_ids)

    def _pooled(
        self,
        modules: TaskModules,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        return self.encode(input_ids, attention_mask, token_type_ids, modules.spec.pooling)

    def forward_mixed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        tasks: list[str],
    ) -> list[torch.Tensor]:
        """Logits for a batch whose rows belong to different tasks, in one pass of the encoder.

        Each wrapped sub-layer runs every task's adapter and LayerNorm on that task's rows only
        (the router's groups), so the shared frozen weights are read once for the whole batch.
        Returns one logit vector per row, in row order (tasks may have different label counts).
        """
        if not self.mixes_in_one_pass:
            return self._forward_per_task(input_ids, attention_mask, token_type_ids, tasks)
        if len(tasks) != input_ids.shape[0]:
            raise ConfigError(f"{len(tasks)} task names for a batch of {input_ids.shape[0]} rows")
        rows: dict[str, list[int]] = {}
        for i, name in enumerate(tasks):
            rows.setdefault(name, []).append(i)
        modules = {name: self.task_modules(name) for name in rows}
        # A task's rows as a slice when they are contiguous (probes, sorted batches): a view instead
        # of a gather and a scatter at every routed sub-layer, the main cost of mixing many tasks.
        index: dict[str, torch.Tensor | slice] = {
            name: slice(r[0], r[-1] + 1) if r[-1] - r[0] == len(r) - 1 else torch.tensor(r, device=input_ids.device)
            for name, r in rows.items()
        }
        self.router.groups = [(modules[name], index[name]) for name in rows]
        try:
            hidden = self._hidden(input_ids, attention_mask, token_type_ids)
        finally:
            self.router.groups = []
        out: dict[int, torch.Tensor] = {}
        for name, picked in index.items():
            pooled = pool(hidden[picked], attention_mask[picked], modules[name].spec.pooling)
            for row, logits in zip(rows[name], modules[name].head(pooled), strict=True):
                out[row] = logits
        return [out[row] for row in range(len(tasks))]

    def _forward_per_task(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        tasks: list[str],
    ) -> list[torch.Tensor]:
        """`forward_mixed` for models whose tasks change the encoder's own weights (the baselines,
        LoRA): one pass per task over that task's rows, the logits returned in row order."""
        if len(tasks) != input_ids.shape[0]:
            raise ConfigError(f"{len(tasks)} task names for a batch of {input_ids.shape[0]} rows")
        out: dict[int, torch.Tensor] = {}
        for name in dict.fromkeys(tasks):
            rows = [i for i, t in enumerate(tasks) if t == name]
            types = None if token_type_ids is None else token_type_ids[rows]
            for row, logits in zip(rows, self(input_ids[rows], attention_mask[rows], types, task=name), strict=True):
                out[row] = logits
        return [out[row] for row in range(len(tasks))]

    def tokenize(self, texts: list[str], pairs: list[str] | None = None, max_length: int = 128) -> BatchEncoding:
        if self.tokenizer is None:
            raise ConfigError("this model has no tokenizer; pass token ids to forward()")
        batch: BatchEncoding = self.tokenizer(
            texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        return batch

    @torch.no_grad()
    def predict(
        self,
        texts: list[str],
        task: str | list[str],
        pairs: list[str] | None = None,
        batch_size: int = 32,
        max_length: int = 128,
    ) -> list[Prediction]:
        """Label names with probabilities (or the regression value) for each text.

        `task` is one name, or one name per text: then each batch mixes tasks in one encoder
        pass (`forward_mixed`), which is what serving many tasks from one encoder is about.
        """
        per_row = [task] * len(texts) if isinstance(task, str) else list(task)
        if len(per_row) != len(texts):
            raise ConfigError(f"{len(per_row)} task names for {len(texts)} texts")
        for name in set(per_row):
            self.task_modules(name)
        was_training = self.training
        self.eval()
        results: list[Prediction] = []
        try:
            for start in range(0, len(texts), batch_size):
                chunk_pairs = pairs[start : start + batch_size] if pairs else None
                names = per_row[start : start + batch_size]
                batch = self.tokenize(texts[start : start + batch_size], chunk_pairs, max_length).to(self.device)
                args = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
                if len(set(names)) == 1:
                    rows = list(self(*args, task=names[0]).float().cpu())
                else:
                    rows = [r.float().cpu() for r in self.forward_mixed(*args, tasks=names)]
                results.extend(to_prediction(self.spec(name), row, name) for name, row in zip(names, rows, strict=True))
        finally:
            self.train(was_training)
        return results


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence features: the first token, or the mean over real (unpadded) tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
