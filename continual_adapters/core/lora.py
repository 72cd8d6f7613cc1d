"""`--method lora`: one LoRA (Hu et al. 2021) per task on the frozen base, through PEFT.

A LoRA adds ``scale · B·A·x`` to the output of a frozen linear layer ``W·x``, with A of shape
(r, d_in), B of shape (d_out, r) and ``scale = alpha / r``. B starts at zero, so a new task's
encoder computes exactly what the base computes, as a fresh Houlsby adapter almost does.

PEFT does the layer surgery: `inject_adapter_in_model` wraps each target linear layer once and
keeps one named adapter per task inside it (``lora_A[task]``, ``lora_B[task]``), which is the
isolation the registry's proof needs: a task's matrices are its own tensors, never shared.
What this module adds on top is the model interface every other method has:

* `LoraTask` holds *references* to its task's PEFT submodules (and its head), so its
  `state_dict()` is exactly what the bundle stores and its `parameters()` exactly what trains;
* `LoraModel` activates the routed task's adapter in every PEFT layer before each encoder pass,
  and none when no task is routed (bare-encoder features for task identification).

The base weights are captured (and hashed) by `ContinualModel` before any injection, and PEFT
wraps them without copying, so `base_sha256(refresh=True)` reads the very tensors every task
runs on; they stay frozen (`requires_grad=False`) throughout.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from continual_adapters.core.architectures import architecture_for
from continual_adapters.core.config import LORA_METHODS, LoraSettings, TaskSpec
from continual_adapters.core.errors import ConfigError, TaskExistsError
from continual_adapters.core.model import ContinualModel, ParamCounts
from continual_adapters.core.task_modules import TaskModules, count_parameters

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def layer_key(path: str) -> str:
    """A module path as a `ModuleDict` key (which may not contain dots): the bundle's tensor keys
    then name the adapted module, e.g. ``lora.encoder-layer-0-attention-self-query.A.weight``."""
    return path.replace(".", "-")


class LoraTask(TaskModules):
    """A task's trainable state under LoRA: its A and B matrices in every target layer, and its head.

    `lora` maps each adapted layer (`layer_key` of its path in the encoder) to the PEFT modules of
    this task in that layer: ``A`` and ``B`` (bias-free linears) and ``dropout`` (no parameters; held
    so that `train()`/`eval()` on the task reach it). They are the same module objects PEFT runs, so
    training them trains the task and loading a bundle into them loads the task. No adapters and no
    LayerNorm copies: the injected wrappers of `ContinualModel` then run the base ones.
    """

    lora: nn.ModuleDict

    def __init__(self, spec: TaskSpec, hidden_size: int, layers: dict[str, LoraLayer]):
        super().__init__(spec, hidden_size, [])
        name = spec.name
        self.lora = nn.ModuleDict(
            {
                layer_key(path): nn.ModuleDict(
                    {"A": layer.lora_A[name], "B": layer.lora_B[name], "dropout": layer.lora_dropout[name]}
                )
                for path, layer in layers.items()
            }
        )
        for param in self.parameters():
            param.requires_grad_(True)


class LoraModel(ContinualModel):
    """One frozen base with one PEFT LoRA adapter per task, named after the task."""

    #: Each task's LoRA changes the encoder's weights: a mixed batch is one pass per task.
    mixes_in_one_pass = False

    def __init__(
        self, encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None, base_name: str = "custom"
    ):
        super().__init__(encoder, tokenizer, base_name)
        #: Every PEFT layer in the encoder (any task's), in module order: where activation is set.
        self._lora_layers: list[LoraLayer] = []
        #: The adapters every PEFT layer has active, when known (None: set them before the next pass).
        self._active: list[str] | None = None

    def lora_targets(self, settings: LoraSettings) -> tuple[str, ...]:
        """The module names `settings` adapt: its own, else the architecture's query and value."""
        return settings.targets or architecture_for(self.architecture).lora_targets

    def lora_config(self, settings: LoraSettings) -> LoraConfig:
        """PEFT's config for `settings`: plain LoRA (Kaiming A, zero B, no bias, scale alpha / r)."""
        return LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,  # type: ignore[arg-type]  # annotated int; PEFT only divides it by r
            lora_dropout=settings.dropout,
            target_modules=list(self.lora_targets(settings)),
            bias="none",
        )

    def _target_linears(self, settings: LoraSettings) -> Iterator[tuple[str, nn.Linear]]:
        """(path, base linear layer) of every module `settings` would adapt, matched by PEFT's own
        rule; modules inside PEFT layers (their wrapped base, other tasks' matrices) are not
        candidates, and a PEFT layer stands for the linear layer it wraps."""
        config = self.lora_config(settings)
        inside: list[str] = []
        for path, module in self.encoder.named_modules():
            if any(path.startswith(prefix) for prefix in inside):
                continue
            if isinstance(module, LoraLayer):
                inside.append(path + ".")
                module = module.get_base_layer()
            if isinstance(module, nn.Linear) and check_target_module_exists(config, path):
                yield path, module

    def lora_parameter_count(self, settings: LoraSettings) -> int:
        """rank · (d_in + d_out) per adapted linear layer: what attaching `settings` allocates, known
        before anything is allocated (bundle loading checks a file's claim against it)."""
        return sum(
            settings.rank * (linear.in_features + linear.out_features) for _, linear in self._target_linears(settings)
        )

    def add_task(self, spec: TaskSpec, initialise: bool = True) -> LoraTask:
        """Injects a LoRA named after the task into every target layer and attaches a new head.

        `initialise` is accepted for ContinualModel's interface (bundle loading passes False): a
        LoRA's own init (Kaiming A, zero B) costs little next to reading the bundle that overwrites it.
        The attached spec records the resolved target names, so the bundle says what was adapted.
        """
        if spec.name in self.tasks:
            raise TaskExistsError(f"task {spec.name!r} is already attached to this model")
        if spec.method not in LORA_METHODS or spec.lora is None:
            raise ConfigError(
                f"task {spec.name!r} uses method {spec.method!r}; this model runs 'lora' "
                "(adapters and ln-only: ContinualModel; the baselines: BaselineModel)"
            )
        settings = replace(spec.lora, targets=self.lora_targets(spec.lora))
        spec = replace(spec, lora=settings)
        if not any(True for _ in self._target_linears(settings)):
            raise ConfigError(
                f"task {spec.name!r}: LoRA targets {list(settings.targets)} match no linear layer of this "
                f"{self.architecture!r} encoder"
            )
        self._active = None  # injection changes which adapter each PEFT layer has active
        try:
            with warnings.catch_warnings():
                # Several named adapters in the same layers is what we want, not a mistake.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(self.lora_config(settings), self.encoder, adapter_name=spec.name)
            self._lora_layers = [m for m in self.encoder.modules() if isinstance(m, LoraLayer)]
            layers = {
                path: m
                for path, m in self.encoder.named_modules()
                if isinstance(m, LoraLayer) and (spec.name in m.lora_A or spec.name in m.lora_embedding_A)
            }
            if any(spec.name not in m.lora_A or not isinstance(m.get_base_layer(), nn.Linear) for m in layers.values()):
                raise ConfigError(f"task {spec.name!r}: LoRA targets {list(settings.targets)} must be linear layers")
            modules = LoraTask(spec, self.hidden_size, layers).to(self.device)
        except ValueError as exc:  # PEFT's refusals: unsupported module, bad adapter name
            self._delete_adapter(spec.name)
            raise ConfigError(f"task {spec.name!r}: PEFT cannot inject its LoRA ({exc})") from None
        except BaseException:
            self._delete_adapter(spec.name)
            raise
        modules.train(self.training)
        self.tasks[spec.name] = modules
        self._activate(None)  # and every task's LoRA trainable again, whatever injection toggled
        return modules

    def remove_task(self, name: str) -> None:
        """Detaches a task and deletes its adapter from every PEFT layer (no spares: a LoRA is cheap
        to build, and a deleted adapter frees its memory)."""
        modules = self.task_modules(name)
        if self.router.task is modules:
            self.router.task = None
        del self.tasks[name]
        self._delete_adapter(name)

    def _delete_adapter(self, name: str) -> None:
        """Removes adapter `name` wherever PEFT put it. Nothing is active first: PEFT warns and
        activates another adapter when the active one is deleted."""
        self._lora_layers = [m for m in self.encoder.modules() if isinstance(m, LoraLayer)]
        self._active = None
        self._activate(None)
        for layer in self._lora_layers:
            if name in layer.lora_A or name in layer.lora_embedding_A:
                layer.delete_adapter(name)
        configs = getattr(self.encoder, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(name, None)

    def task_modules(self, name: str) -> LoraTask:
        modules = super().task_modules(name)
        assert isinstance(modules, LoraTask)  # add_task only attaches these
        return modules

    def _activate(self, name: str | None) -> None:
        """Makes `name`'s adapter (none for None) the active one in every PEFT layer.

        PEFT's `set_adapter` also freezes every other adapter of the layer; every task's LoRA is
        made trainable again (only the active one enters the graph, and training optimises only
        its own task's parameters), so a task's `parameters()` keep `requires_grad` whatever ran
        before. The base weights are untouched either way."""
        wanted = [] if name is None else [name]
        if self._active == wanted:
            return
        for layer in self._lora_layers:
            layer.set_adapter(wanted)
        for task in self.tasks.values():
            task.requires_grad_(True)
        self._active = wanted

    def _hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        encoder: nn.Module | None = None,
    ) -> torch.Tensor:
        """Every encoder pass (forward, encode, features) runs the routed task's LoRA, or none."""
        task = self.router.task
        self._activate(None if task is None else task.spec.name)
        return super()._hidden(input_ids, attention_mask, token_type_ids, encoder)

    def parameter_counts(self, name: str) -> ParamCounts:
        """A task stores and trains its LoRA matrices and its head; nothing else."""
        modules = self.task_modules(name)
        tensors = list(modules.state_dict().values())
        return ParamCounts(
            adapter=0,
            layer_norm=0,
            head=count_parameters(modules.head),
            base=self.base_parameter_count,
            bytes=sum(t.numel() * t.element_size() for t in tensors),
            lora=count_parameters(modules.lora),
        )
