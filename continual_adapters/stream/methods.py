"""What the continual-learning methods that share one encoder add to an addition.

``naive`` fine-tunes the shared encoder on the new task alone. The others train it with a
different objective (training/ewc.py, replay.py, lwf.py), built here from the earlier tasks'
state, and leave state for the next task as a registered artifact of the new one, committed with
its bundle, so that a stream resumes in a new process exactly where it stopped:

* ``ewc``: the running Fisher after each task (kind ``fisher``); the anchor is the shared encoder
  as the previous task left it, which is that task's bundle, already attached.
* ``replay``: the reservoir memory after each task (kind ``replay``), text and labels.
* ``lwf``: nothing: its teacher is the earlier heads' outputs on the new task's own inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from continual_adapters.core.config import METHOD_STATE_KINDS
from continual_adapters.core.errors import ConfigError, IntegrityError
from continual_adapters.training.ewc import (
    ElasticPenalty,
    fisher_bytes,
    fisher_diagonal,
    parse_fisher,
    shared_parameters,
)
from continual_adapters.training.loop import Objective
from continual_adapters.training.lwf import Distillation, record_teacher
from continual_adapters.training.replay import Rehearsal, ReplayBuffer, encode_memory

if TYPE_CHECKING:
    import torch

    from continual_adapters.core.model import ContinualModel
    from continual_adapters.registry import Registry
    from continual_adapters.stream.job import EncodedSplits, TaskJob

#: The artifact each method keeps per task, beside the bundle, probe and centroids every task has.
STATE_KINDS = METHOD_STATE_KINDS
FISHER_KIND, REPLAY_KIND = STATE_KINDS["ewc"], STATE_KINDS["replay"]


def previous_state(registry: Registry, method: str, earlier: list[str]) -> bytes | None:
    """The state the latest earlier task left (None for the first task of the stream)."""
    kind = STATE_KINDS.get(method)
    if kind is None or not earlier:
        return None
    found = registry.read_artifacts(kind, [earlier[-1]])
    if earlier[-1] not in found:
        raise IntegrityError(f"task {earlier[-1]!r} has no {kind} artifact: a {method} stream cannot go on without it")
    return found[earlier[-1]]


class MethodState:
    """Reads the earlier tasks' state (before anything is written: a bad one refuses the task),
    builds the new task's objective before training and its state artifact after."""

    def __init__(self, model: ContinualModel, registry: Registry, job: TaskJob, earlier: list[str]):
        self.model, self.job, self.earlier = model, job, earlier
        previous = previous_state(registry, job.method, earlier)
        source = f"{STATE_KINDS.get(job.method)} of task {earlier[-1]!r}" if earlier else ""
        self.fisher = parse_fisher(previous, source) if job.method == "ewc" and previous is not None else None
        self.buffer = ReplayBuffer(job.options.replay_size)
        if job.method == "replay" and previous is not None:
            self.buffer = ReplayBuffer.from_bytes(previous, source)
            if self.buffer.capacity != job.options.replay_size:
                raise ConfigError(
                    f"this stream's replay memory holds {self.buffer.capacity} examples: pass --replay-size "
                    f"{self.buffer.capacity} (--replay-size {job.options.replay_size} would change it mid-stream)"
                )

    def objective(self, encoded: EncodedSplits) -> Objective:
        """Called with the new task attached and every earlier task loaded (shared encoder current)."""
        job, model, options = self.job, self.model, self.job.options
        frozen_heads(model, self.earlier)
        if job.method == "ewc" and self.fisher is not None:
            params = shared_parameters(model, job.name)
            anchor = {name: param.detach().clone() for name, param in params.items()}
            fisher = {name: value.to(model.device) for name, value in self.fisher.items()}
            return ElasticPenalty(params, fisher, anchor, options.ewc_lambda)
        if job.method == "replay" and self.buffer.items:
            memory = encode_memory(model, self.buffer, job.train.max_length)
            pad_to = job.train.max_length if job.train.pad_to_max_length else None
            return Rehearsal(memory, job.train.batch_size, job.train.seed, pad_to)
        if job.method == "lwf" and self.earlier:
            teacher = record_teacher(model, self.earlier, encoded.train, job.train.eval_batch_size)
            return Distillation(teacher, options.lwf_temperature, options.lwf_weight)
        return Objective()

    def artifact(self, encoded: EncodedSplits) -> tuple[str, bytes] | None:
        """The state the trained task leaves for the next one, as (kind, bytes)."""
        job, options = self.job, self.job.options
        if job.method == "ewc":
            fisher = fisher_diagonal(self.model, job.name, encoded.train, job.train.seed)
            if self.fisher is not None:
                fisher = {n: options.ewc_decay * self.fisher[n].to(v.device) + v for n, v in fisher.items()}
            return FISHER_KIND, fisher_bytes(job.name, fisher, options.ewc_decay)
        if job.method == "replay":
            train, loaded = job.loaded.train, job.loaded
            targets = loaded.targets["train"]
            labels = [loaded.labels[int(t)] for t in targets] if loaded.labels else [repr(float(t)) for t in targets]
            self.buffer.add(job.name, train.texts, train.pairs, labels, job.train.seed)
            return REPLAY_KIND, self.buffer.to_bytes()
        return None


def replay_summary(data: bytes, source: str) -> dict[str, int]:
    """Examples kept, per task and in total, and their bytes: what the ledger reports for replay."""
    buffer = ReplayBuffer.from_bytes(data, source)
    per_task = {task: len(items) for task, items in buffer.by_task().items()}
    return {"examples": len(buffer.items), "seen": buffer.seen, "bytes": len(data), **per_task}


def frozen_heads(model: ContinualModel, earlier: list[str]) -> list[torch.nn.Parameter]:
    """Earlier heads are registered and never rewritten: no gradient reaches them while the new task
    trains (replay and LwF route loss through them). Returns the parameters it froze."""
    frozen = [p for name in earlier for p in model.task_modules(name).head.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    return frozen
