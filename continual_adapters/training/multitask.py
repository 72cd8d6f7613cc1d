"""Training one model on every task at once: the multitask upper bound of continual learning.

`train_multitask` fine-tunes a shared encoder and one head per task on the union of the tasks'
training sets, shuffled together, so every batch mixes tasks. It is what a continual method
would reach if it could see the whole stream at once (it is not a continual method: nothing is
learned in order, so nothing can be forgotten). The schedule is `train_task`'s: AdamW, linear
warm-up over the first `warmup_ratio` of steps and linear decay to zero, best epoch kept on
validation (here the mean over tasks of each task's primary metric).

`mixed_batch_loss` is the loss of one such batch, each example scored by its own task's head;
experience replay uses it too (a batch of new examples mixed with stored ones).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.scoring import higher_is_better
from continual_adapters.training.loop import Encoded, TrainResult, evaluate, linear_warmup_decay, pad_batch, task_loss

if TYPE_CHECKING:
    from transformers import BatchEncoding

    from continual_adapters.core.model import ContinualModel

#: One task's part of a mixed batch: its name, its rows padded together, and their targets.
Group = tuple[str, "BatchEncoding", torch.Tensor]


def mixed_batch_loss(model: ContinualModel, groups: Sequence[Group], device: torch.device) -> torch.Tensor:
    """The loss of a batch whose rows belong to several tasks: the mean over all its examples of
    each example's own task loss (cross-entropy, or MSE for a regression head).

    `groups` holds one `(task_name, batch_encoding, targets)` per task present in the batch, each
    group padded on its own. Each group runs through its task's modules (under `autocast_for`
    `device`) and its mean loss is weighted by its share of the batch, so the result is
    sum over groups of (group size x group mean loss) / total size: a task with more rows in the
    batch weighs more, exactly as if every example's loss were averaged. Gradients flow to
    whatever the groups' tasks train (a shared encoder and every head present here).
    """
    total = sum(len(targets) for _, _, targets in groups)
    if total == 0:
        raise ConfigError("a mixed batch needs at least one example")
    loss = torch.zeros((), device=device)
    for name, batch, targets in groups:
        if len(targets):
            loss = loss + task_loss(model, name, batch, targets) * (len(targets) / total)
    return loss


def mixed_batches(order: Sequence[tuple[str, int]], batch_size: int) -> list[list[tuple[str, list[int]]]]:
    """Consecutive batches of `(task, row)` pairs, each as its tasks in order of first appearance
    with their rows in batch order."""
    out = []
    for start in range(0, len(order), batch_size):
        groups: dict[str, list[int]] = {}
        for task, row in order[start : start + batch_size]:
            groups.setdefault(task, []).append(row)
        out.append(list(groups.items()))
    return out


def selection_score(scores: Mapping[str, float], metrics: Mapping[str, str]) -> float:
    """The mean over tasks of their validation primary metric, the lower-is-better ones (MSE)
    negated so that higher is always better."""
    return sum(scores[name] * (1.0 if higher_is_better(metrics[name]) else -1.0) for name in scores) / len(scores)


def train_multitask(
    model: ContinualModel,
    tasks: Mapping[str, tuple[Encoded, Encoded, str]],
    config: TrainConfig,
    progress: bool = True,
) -> TrainResult:
    """Trains every task of `tasks` (name -> (train, validation, primary metric), all attached to
    `model`) jointly; returns with the best epoch's weights loaded.

    Each epoch shuffles the union of the `(task, row)` pairs with a generator seeded from
    `config.seed`, cuts it into batches of `config.batch_size` that mix tasks, and takes one AdamW
    step per batch over every trainable parameter of every task (the shared encoder once, every
    head). The best epoch is the one with the highest mean over tasks of the validation primary
    metric (`selection_score`); its score, and each task's validation scores per epoch, are in the
    result. Single process: no data-parallel launch.
    """
    if not tasks:
        raise ConfigError("multitask training needs at least one task")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError("this model has no tokenizer; multitask training starts from text")
    device = model.device
    metrics = {name: metric for name, (_, _, metric) in tasks.items()}
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    params: dict[int, torch.nn.Parameter] = {}
    for name in tasks:
        for param in model.task_modules(name).parameters():
            if param.requires_grad:
                params.setdefault(id(param), param)
    named = dict(model.tasks.named_parameters())  # each shared tensor once
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.lr, weight_decay=config.weight_decay)
    pairs = [(name, row) for name, (train, _, _) in tasks.items() for row in range(len(train))]
    if not pairs:
        raise ConfigError("multitask training needs at least one training example")
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_warmup_decay(s, warmup, total))
    pad_to = config.max_length if config.pad_to_max_length else None
    result = TrainResult(best_epoch=0, best_score=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    bar = tqdm(total=total, desc=f"train {len(tasks)} tasks jointly", unit="step", disable=not progress)
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = [pairs[i] for i in torch.randperm(len(pairs), generator=generator).tolist()]
            running = 0.0
            for step, batch in enumerate(mixed_batches(order, config.batch_size), 1):
                groups = []
                for name, rows in batch:
                    train = tasks[name][0]
                    padded = pad_batch(tokenizer, train, rows, pad_to)
                    groups.append((name, padded, train.targets[rows]))
                    result.train_tokens += int(padded["attention_mask"].sum())
                loss = mixed_batch_loss(model, groups, device)
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += loss.item()
                result.steps += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{running / step:.4f}")
            scores = {
                name: evaluate(model, name, validation, config.eval_batch_size).scores
                for name, (_, validation, _) in tasks.items()
            }
            selected = selection_score({name: scores[name][metrics[name]] for name in tasks}, metrics)
            entry: dict[str, float] = {"epoch": epoch, "train_loss": running / steps_per_epoch, "selection": selected}
            entry.update({f"{name}/{key}": value for name in tasks for key, value in scores[name].items()})
            result.history.append(entry)
            if selected > result.best_score:
                result.best_epoch, result.best_score = epoch, selected
                best_state = {key: param.detach().clone() for key, param in named.items()}
    finally:
        bar.close()
    if best_state is None:
        raise ConfigError("multitask training diverged: no epoch gave a finite mean validation score")
    with torch.no_grad():
        for key, param in named.items():
            param.copy_(best_state[key])
    model.eval()
    result.wall_time_s = time.perf_counter() - started
    return result
