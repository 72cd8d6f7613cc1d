"""Data-parallel training under `accelerate launch` (or `torchrun`), with no change to the loop.

The launchers export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. When
WORLD_SIZE > 1 every process runs the same `train_task`: the same seeded batch order, each
process taking its slice of every global batch, and gradients summed across processes with
each slice's loss weighted by its share of the batch. The update is therefore the one a single
process would make on the whole batch, and every process ends with the same weights.

Only the main process (rank 0) touches the registry; the others train and exit. Evaluation
runs in full on every process (identical weights give identical scores, so all processes pick
the same best epoch without another exchange).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
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
    """This process's place in the launch, from the launcher's environment (single process if none)."""
    return World(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init(device: torch.device) -> World:
    """Joins the process group once (NCCL on CUDA, Gloo on CPU)."""
    current = world()
    if current.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current


def device_for(current: World, device: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK under a multi-GPU launch."""
    if current.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", current.local_rank)
    return device


def shard(rows: list[int], current: World) -> list[int]:
    return rows[current.rank :: current.size] if current.active else rows


def broadcast_parameters(params: Sequence[torch.Tensor], current: World) -> None:
    """Start every process from rank 0's initial weights, whatever their seeds did."""
    if current.active:
        for param in params:
            dist.broadcast(param.data, src=0)


def sum_gradients(params: Sequence[torch.Tensor], current: World) -> None:
    if current.active:
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)


def barrier(current: World) -> None:
    if current.active and dist.is_initialized():
        dist.barrier()
