"""Data-parallel training through accelerate, under `accelerate launch` (or `torchrun`).

`train_task` runs one code path whatever the launch: an `accelerate.Accelerator` prepares the new
task's modules, the optimizer, the learning-rate schedule and the data loader. Under a
multi-process launch that means:

* DistributedDataParallel wraps `TaskStep`, whose only submodule is the new task's modules: DDP
  broadcasts rank 0's initial values of exactly those parameters and all-reduces exactly their
  gradients (bucketed, overlapped with the backward pass). The base encoder and every earlier task
  are no parameters of it, so they are neither exchanged nor touched, and stay bit-identical.
* The data loader is split with `split_batches`: every process follows the same seeded order of
  global batches of `--batch-size` rows and takes an equal slice of each. A last, short global
  batch is padded by accelerate with rows from the start of the epoch; `Exchange.batches` drops
  that padding again (a process left with padding only runs it at weight zero, so it still joins
  the gradient exchange). Each slice's mean loss is weighted by its share of the global batch
  (times the number of processes, which DDP's averaging divides out), so the update is the one a
  single process makes on the whole batch, up to the order of floating-point sums.
* Precision stays cadapt's own (bf16 autocast on CUDA, fp32 elsewhere: `loop.autocast_for`), not
  accelerate's `--mixed_precision`: evaluation, probes and the confirmation of earlier tasks run
  outside the prepared module and must compute exactly as training did. A launch asking for fp16
  or fp8 is refused (`check_launch`) rather than silently ignored.

Evaluation runs in full on every process: the weights are identical on all of them, so every
process picks the same best epoch without another exchange. Only the main process (rank 0)
writes to the registry, and creates a missing one before the others read it (`main_first`);
the others plan from it, train and exit. A single-process run goes through the same
Accelerator, which then wraps nothing: its weights are bit-identical to the loop without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, PartialState
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from continual_adapters.core.config import SHARED_METHODS
from continual_adapters.core.errors import ConfigError

#: What a launcher may ask for with --mixed_precision: "bf16" is what cadapt does on CUDA anyway.
ACCEPTED_PRECISIONS = ("no", "bf16")


@dataclass(frozen=True)
class World:
    """This process's place in the launch, as the launcher's environment states it (read without
    joining any process group, so planning a task costs nothing)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """From RANK / WORLD_SIZE / LOCAL_RANK (exported by accelerate launch and torchrun); one process if none."""
    return World(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def device_for(current: World, device: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK under a multi-GPU launch (the device accelerate gives DDP)."""
    if current.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", current.local_rank)
    return device


def main_first(current: World, device: torch.device, step: Callable[[], object]) -> None:
    """Runs `step` (creating or migrating the registry) on the main process before the others run
    it: they then find the registry ready and only read it, so only rank 0 ever writes."""
    if not current.active:
        step()
        return
    with PartialState(cpu=device.type == "cpu").main_process_first():
        step()


def check_launch(current: World, method: str, batch_size: int) -> None:
    """Refuses, before anything is written, what this launch cannot train as one process would."""
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision not in ACCEPTED_PRECISIONS:
        raise ConfigError(
            f"--mixed_precision {precision} is not cadapt's precision (bf16 autocast on CUDA, fp32 elsewhere, "
            "the same for training, evaluation and probes); launch with --mixed_precision no"
        )
    if not current.active:
        return
    if method in SHARED_METHODS and method != "naive":
        raise ConfigError(f"method {method!r} trains in one process only (its state lives on the main one)")
    if batch_size % current.size:
        raise ConfigError(
            f"--batch-size {batch_size} is not a multiple of the {current.size} processes: each takes an "
            "equal slice of every global batch"
        )


class TaskStep(nn.Module):
    """What DDP wraps: the new task's modules as the only submodule (so their parameters are all it
    exchanges), and a forward that is the training objective run through the whole model. `loss`
    is a plain callable, not a submodule: the model it reaches stays outside DDP."""

    def __init__(self, trainable: nn.Module, loss: Callable[[list[int], Any, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.trainable = trainable
        self.loss = loss

    def forward(self, rows: list[int], batch: Any, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(rows, batch, targets)


class EpochOrder(Sampler[int]):
    """A fresh permutation of the training rows on every pass, from one seeded generator: the batch
    order `train_task` has always used. Its `generator` is the one accelerate keeps in step across
    processes."""

    def __init__(self, size: int, generator: torch.Generator):
        self.size, self.generator = size, generator

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.size


class Rows(Dataset[int]):
    """The training rows by index: the loop pads and encodes the rows of each batch itself."""

    def __init__(self, size: int):
        self.size = size

    def __getitem__(self, index: int) -> int:
        return index

    def __len__(self) -> int:
        return self.size


class Exchange:
    """One task's training under accelerate (see the module docstring); `close` releases it."""

    def __init__(
        self,
        device: torch.device,
        step: TaskStep,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        rows: int,
        batch_size: int,
        generator: torch.Generator,
    ):
        current = world()
        self.accelerator = Accelerator(
            cpu=current.active and device.type == "cpu",
            device_placement=False,
            mixed_precision="no",
            dataloader_config=DataLoaderConfiguration(split_batches=True, even_batches=True),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        accelerator = self.accelerator
        if accelerator.num_processes > 1 and accelerator.device.type != device.type:
            raise ConfigError(f"this launch trains on {accelerator.device}, the model is on {device}")
        order = BatchSampler(EpochOrder(rows, generator), batch_size, drop_last=False)
        # The loader's own generator only seeds worker processes (there are none); it is given so
        # that iterating draws nothing from torch's global generator, which dropout uses.
        loader = DataLoader(Rows(rows), batch_sampler=order, collate_fn=list, generator=torch.Generator())
        self.step, self.optimizer, self.scheduler, self.loader = accelerator.prepare(step, optimizer, scheduler, loader)
        self.rows, self.batch_size = rows, batch_size
        self.processes, self.rank = accelerator.num_processes, accelerator.process_index

    def batches(self) -> Iterator[tuple[list[int], float]]:
        """Per step: this process's rows of the global batch, and their share of it (zero for a
        process whose slice of a short last batch is only accelerate's padding)."""
        piece = self.batch_size // self.processes
        for index, local in enumerate(self.loader):
            in_batch = min(self.batch_size, self.rows - index * self.batch_size)
            real = local[: max(0, min(len(local), in_batch - self.rank * piece))]
            yield (real, len(real) / in_batch) if real else (local, 0.0)

    def backward(self, loss: torch.Tensor, share: float) -> None:
        """The slice's mean loss weighted by its share; DDP averages over processes, hence the
        factor, so the gradient is that of the whole batch's mean loss."""
        self.accelerator.backward(loss * (share * self.processes))

    def update(self) -> None:
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def total(self, value: float) -> float:
        """`value` summed over the processes (the loss curve and token count of the global batches)."""
        if self.processes == 1:
            return value
        summed = self.accelerator.reduce(
            torch.tensor(value, dtype=torch.float64, device=self.accelerator.device), "sum"
        )
        return float(summed.item())

    def close(self) -> None:
        """Drops the DDP wrapper (its hooks on the task's parameters go with it) and the prepared objects."""
        self.accelerator.free_memory()
