"""The methods adapters are measured against, behind the same model interface as adapters.

* ``full``: each task fine-tunes its own copy of the whole encoder (the accuracy reference;
  100% of the parameters per task).
* ``top-k``: each task fine-tunes its own copy of the top k layers; the layers below stay the
  shared frozen base (Houlsby et al.'s "variable fine-tuning" baseline).
* ``naive``: one copy of the encoder is fine-tuned task after task, with a new head per task.
  Earlier tasks keep their heads but see the encoder drift: this is what forgetting looks like.
  ``ewc``, ``replay`` and ``lwf`` share the encoder the same way and train it with another
  objective (training/ewc.py, replay.py, lwf.py).

`BaselineModel` is a `ContinualModel` whose tasks own encoder weights instead of adapters, so
the runner, the trainer, bundles, the registry and the audit treat all methods alike. The
pristine base is never modified by any method: ``naive`` trains a shared copy of it, which is
part of every naive task's state, so the runner's before/after hashes expose the drift.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from continual_adapters.core.config import BASELINE_METHODS, LORA_METHODS, SHARED_METHODS, TaskSpec
from continual_adapters.core.errors import ConfigError, TaskExistsError
from continual_adapters.core.inject import encoder_layers
from continual_adapters.core.model import ContinualModel, ParamCounts
from continual_adapters.core.task_modules import TaskModules, count_parameters

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class BaselineTask(TaskModules):
    """A task's trainable state under a baseline: its head plus encoder weights (own or shared).

    It has no adapters and no LayerNorm copies (both lists stay empty); `encoder` is set for
    ``full`` and the shared-encoder methods, `layers` for ``top-k``.
    """

    encoder: PreTrainedModel
    layers: nn.ModuleList

    def __init__(
        self,
        spec: TaskSpec,
        hidden_size: int,
        encoder: PreTrainedModel | None = None,
        layers: nn.ModuleList | None = None,
    ):
        super().__init__(spec, hidden_size, [])
        if encoder is not None:
            self.encoder = encoder
        if layers is not None:
            self.layers = layers
        for param in self.parameters():
            param.requires_grad_(True)


class BaselineModel(ContinualModel):
    """One frozen pristine base plus, per task, the encoder weights the method fine-tunes."""

    #: Each task owns encoder weights: a mixed batch is one pass per task.
    mixes_in_one_pass = False

    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        base_name: str = "custom",
        method: str = "full",
        top_k: int = 2,
    ):
        if method not in BASELINE_METHODS:
            raise ConfigError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINE_METHODS)}")
        super().__init__(encoder, tokenizer, base_name)
        if method == "top-k" and not 0 < top_k <= self.num_layers:
            raise ConfigError(f"top_k must be between 1 and {self.num_layers}, got {top_k}")
        self.method = method
        self.top_k = top_k if method == "top-k" else 0
        self.isolates_tasks = method not in SHARED_METHODS
        self._layer_list = encoder_layers(encoder)
        self._shared: PreTrainedModel | None = None

    def _encoder_copy(self) -> PreTrainedModel:
        clone = copy.deepcopy(self.encoder)
        clone.requires_grad_(True)
        return clone

    def add_task(self, spec: TaskSpec, initialise: bool = True) -> BaselineTask:
        """Attaches `spec`'s modules: copies of the encoder (or its top layers) and a head. `initialise`
        is accepted for ContinualModel's interface; copies need no random init to skip."""
        if spec.name in self.tasks:
            raise TaskExistsError(f"task {spec.name!r} is already attached to this model")
        if spec.method != self.method or spec.top_k != self.top_k:
            raise ConfigError(
                f"task {spec.name!r} is {spec.method!r} (top_k {spec.top_k}); this model runs "
                f"{self.method!r} (top_k {self.top_k})"
            )
        if self.method == "full":
            modules = BaselineTask(spec, self.hidden_size, encoder=self._encoder_copy())
        elif self.method in SHARED_METHODS:
            if self._shared is None:
                self._shared = self._encoder_copy()
            modules = BaselineTask(spec, self.hidden_size, encoder=self._shared)
        else:
            top = list(self._layer_list)[-self.top_k :]
            modules = BaselineTask(spec, self.hidden_size, layers=copy.deepcopy(nn.ModuleList(top)))
        modules = modules.to(self.device)
        modules.train(self.training)
        self.tasks[spec.name] = modules
        return modules

    def task_modules(self, name: str) -> BaselineTask:
        modules = super().task_modules(name)
        assert isinstance(modules, BaselineTask)  # add_task only attaches these
        return modules

    def _pooled(
        self,
        modules: TaskModules,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        assert isinstance(modules, BaselineTask)  # the router only holds this model's tasks
        if self.method == "top-k":
            with self._swapped_layers(modules.layers):
                return self.encode(input_ids, attention_mask, token_type_ids, modules.spec.pooling)
        return self.encode(input_ids, attention_mask, token_type_ids, modules.spec.pooling, modules.encoder)

    @contextmanager
    def _swapped_layers(self, layers: nn.ModuleList) -> Iterator[None]:
        """Runs the shared encoder with the task's own top layers in place of the frozen ones."""
        start = self.num_layers - len(layers)
        originals = [self._layer_list[start + i] for i in range(len(layers))]
        try:
            for i, layer in enumerate(layers):
                self._layer_list[start + i] = layer
            yield
        finally:
            for i, layer in enumerate(originals):
                self._layer_list[start + i] = layer

    def parameter_counts(self, name: str) -> ParamCounts:
        """Stored cost per task: the encoder copy (full), the top layers (top-k) or nothing
        beyond the head (naive keeps one shared encoder, though it trains all of it)."""
        modules = self.task_modules(name)
        head = count_parameters(modules.head)
        tensors = list(modules.state_dict().values())
        if self.method in SHARED_METHODS:
            encoder, trained = 0, count_parameters(modules.encoder)
        else:
            encoder = count_parameters(modules.encoder if self.method == "full" else modules.layers)
            trained = None
        return ParamCounts(
            adapter=0,
            layer_norm=0,
            head=head,
            base=self.base_parameter_count,
            bytes=sum(t.numel() * t.element_size() for t in tensors),
            encoder=encoder,
            trained_encoder=trained,
        )


def model_for_method(method: str, encoder: str | None = None, top_k: int = 2) -> ContinualModel:
    """The model a runner needs for `method`: adapters and ln-only share one plain ContinualModel;
    LoRA has its own (imported here, so that other methods never load PEFT)."""
    if method in BASELINE_METHODS:
        return BaselineModel.from_pretrained(encoder, method=method, top_k=top_k)
    if method in LORA_METHODS:
        from continual_adapters.core.lora import LoraModel

        return LoraModel.from_pretrained(encoder)
    return ContinualModel.from_pretrained(encoder)
