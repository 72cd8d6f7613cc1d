"""Training and evaluating one task's modules, as in Houlsby et al. 2019.

AdamW with linear warm-up over the first 10% of steps and linear decay to zero, batch 32,
best epoch kept by validation score. Examples are tokenised once without padding and padded
per batch (dynamic padding): short sentences no longer pay for the longest one. Evaluation
batches examples of similar length together and restores the original order, so the same
data always gives the same batches and therefore bit-identical scores on the same machine.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.scoring import higher_is_better, score
from continual_adapters.training import distributed

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

    from continual_adapters.core.model import ContinualModel


@dataclass
class Encoded:
    """Token ids per example (unpadded) and the targets, ready for dynamic padding."""

    features: list[dict[str, list[int]]]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class Evaluation:
    scores: dict[str, float]
    predictions: np.ndarray
    logits: torch.Tensor
    predictions_sha256: str


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    wall_time_s: float = 0.0
    train_tokens: int = 0


def resolve_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _require_tokenizer(tokenizer: PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase:
    """Training and evaluation start from text, so the model must carry its tokenizer."""
    if tokenizer is None:
        raise ConfigError("this model has no tokenizer; pass token ids to forward()")
    return tokenizer


def encode(
    tokenizer: PreTrainedTokenizerBase | None,
    texts: list[str],
    pairs: list[str] | None,
    targets: Sequence[int] | Sequence[float],
    max_length: int,
    head: str,
) -> Encoded:
    enc = _require_tokenizer(tokenizer)(texts, pairs, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
    dtype = torch.float32 if head == "regression" else torch.long
    return Encoded(features, torch.tensor(targets, dtype=dtype))


def pad_batch(
    tokenizer: PreTrainedTokenizerBase, encoded: Encoded, rows: list[int], pad_to: int | None
) -> BatchEncoding:
    """Rows of `encoded` padded together: to the longest row, or to `pad_to` when given."""
    padding = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": "longest"}
    return tokenizer.pad([encoded.features[i] for i in rows], return_tensors="pt", **padding)


def _batches(
    tokenizer: PreTrainedTokenizerBase, encoded: Encoded, order: list[int], batch_size: int, pad_to: int | None
) -> Iterator[tuple[list[int], BatchEncoding, torch.Tensor]]:
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, pad_batch(tokenizer, encoded, rows, pad_to), encoded.targets[rows]


def autocast_for(device: torch.device) -> AbstractContextManager[Any]:
    """The precision every forward of cadapt runs in: bf16 autocast on CUDA, fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Runs CPU forwards on one thread, for probes: a multi-threaded GEMM splits its sums by the
    shape of the whole batch, so a row's logits depend on what it is batched with (MiniLM on an
    AVX-512 CPU: rows in batches of 8 or 16 rows were 2.7e-6 off the same rows alone, at 2 and 4
    threads); at one thread the 272 batch sizes, widths and positions tried were all bit-identical.
    The thread count is process-wide, so it is restored on the way out."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _forward(model: ContinualModel, task: str, batch: BatchEncoding, device: torch.device) -> torch.Tensor:
    moved = {k: v.to(device) for k, v in batch.items()}
    with autocast_for(device):
        return model(moved["input_ids"], moved["attention_mask"], moved.get("token_type_ids"), task=task)


def predictions_sha256(predictions: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(predictions).tobytes()).hexdigest()


@torch.no_grad()
def evaluate(
    model: ContinualModel, task: str, encoded: Encoded, batch_size: int = 64, progress: bool = False
) -> Evaluation:
    spec = model.spec(task)
    tokenizer = _require_tokenizer(model.tokenizer)
    device = model.device
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.features[i]["input_ids"]))
    logits = torch.empty(len(encoded), spec.num_outputs)
    bar = tqdm(total=len(encoded), desc=f"eval {task}", unit="ex", disable=not progress, leave=False)
    try:
        for rows, batch, _ in _batches(tokenizer, encoded, order, batch_size, None):
            logits[rows] = _forward(model, task, batch, device).float().cpu()
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    targets = encoded.targets.numpy()
    if spec.head == "regression":
        predictions = logits[:, 0].numpy().astype(np.float32)
    else:
        predictions = logits.argmax(-1).numpy().astype(np.int64)
    return Evaluation(score(spec.head, targets, predictions), predictions, logits, predictions_sha256(predictions))


def head_loss(head: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A task's own loss: cross-entropy for a classification head, MSE for a regression head."""
    if head == "regression":
        return torch.nn.functional.mse_loss(logits[:, 0].float(), targets)
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def task_loss(model: ContinualModel, task: str, batch: BatchEncoding, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss of `task` on one padded batch (moved to the model's device here)."""
    device = model.device
    return head_loss(model.spec(task).head, _forward(model, task, batch, device), targets.to(device))


class Objective:
    """What `train_task` minimises for the task it trains. This base class is the task's own loss
    (adapters, LoRA, the fine-tuning baselines); the continual-learning methods that share one
    encoder add their term in a subclass (ewc.py: a penalty, replay.py: rehearsal, lwf.py:
    distillation). `rows` are the batch's indices into the training split."""

    def loss(
        self, model: ContinualModel, task: str, rows: list[int], batch: BatchEncoding, targets: torch.Tensor
    ) -> torch.Tensor:
        return task_loss(model, task, batch, targets)


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at `step`: linear warm-up over `warmup` steps, then linear decay to
    zero at `total` (the schedule of Houlsby et al.; multitask training shares it)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def train_task(
    model: ContinualModel,
    task: str,
    train: Encoded,
    validation: Encoded,
    config: TrainConfig,
    metric: str,
    progress: bool = True,
    objective: Objective | None = None,
) -> TrainResult:
    """Trains only `task`'s modules, minimising `objective` (the task's own loss by default);
    returns with the best validation epoch's weights loaded. Under a multi-process launch the
    processes share every global batch through accelerate (distributed.py)."""
    tokenizer = _require_tokenizer(model.tokenizer)
    modules = model.task_modules(task)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_warmup_decay(s, warmup, total))
    pad_to = config.max_length if config.pad_to_max_length else None
    sign = 1.0 if higher_is_better(metric) else -1.0
    step = distributed.TaskStep(modules, functools.partial((objective or Objective()).loss, model, task))
    exchange = distributed.Exchange(model.device, step, optimizer, scheduler, len(train), config.batch_size, generator)
    result = TrainResult(best_epoch=0, best_score=-math.inf * sign)
    best_state: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    bar = tqdm(total=total, desc=f"train {task}", unit="step", disable=not progress or exchange.rank != 0)
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            running = 0.0
            for index, (rows, share) in enumerate(exchange.batches()):
                batch = pad_batch(tokenizer, train, rows, pad_to)
                loss = exchange.step(rows, batch, train.targets[rows])
                exchange.backward(loss, share)
                if share:
                    running += share * loss.item()
                    result.train_tokens += int(batch["attention_mask"].sum())
                exchange.update()
                result.steps += 1
                bar.update(1)
                # Rank 0's estimate of the batch loss from its own slices (exact in one process).
                bar.set_postfix(epoch=epoch, loss=f"{running * exchange.processes / (index + 1):.4f}")
            val = evaluate(model, task, validation, config.eval_batch_size)
            epoch_loss = exchange.total(running) / steps_per_epoch
            result.history.append({"epoch": epoch, "train_loss": epoch_loss, **val.scores})
            if sign * val.scores[metric] > sign * result.best_score:
                result.best_epoch, result.best_score = epoch, val.scores[metric]
                best_state = {k: v.detach().clone() for k, v in modules.state_dict().items()}
        result.train_tokens = int(exchange.total(result.train_tokens))
    finally:
        bar.close()
        exchange.close()
    if best_state is None:
        raise ConfigError(f"training {task!r} diverged: no epoch gave a finite validation {metric}")
    modules.load_state_dict(best_state)
    model.eval()
    result.wall_time_s = time.perf_counter() - started
    return result
