"""A scenario's multitask upper bound (`mtl`): one model trained on every task of the stream at once.

The reference the continual-learning literature measures its methods against: a shared encoder
fine-tuned jointly on the union of all the tasks' training sets (training/multitask.py), one head
per task, evaluated once per task on its evaluation split. It sees the whole stream at once, so it
is not a continual method: there is no order, no accuracy matrix, no backward transfer or
forgetting, no registry and nothing to audit. Its run folder (`Scenario.run_dir`) holds

* `result.json` (`RESULT`): per-task scores, primary metrics and accuracy, the mean primary score
  (ACC), training and evaluation wall time, trained and stored parameters and bytes, the
  training history; written last, so its presence means the run finished (a rerun skips it);
* `final_correct.json` (`FINAL_CORRECT`): per-example correctness on each classification task's
  evaluation split, in the format adapters runs write after their audit, so the comparison gives
  the same bootstrap intervals.

Both are written atomically.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from continual_adapters.core.baselines import BaselineModel
from continual_adapters.core.config import MULTITASK, AdapterConfig, TaskSpec
from continual_adapters.core.errors import ConfigError
from continual_adapters.data.taskdata import load_task_data
from continual_adapters.files.atomic import atomic_write
from continual_adapters.stream.job import git_commit, library_versions
from continual_adapters.stream.scenario import Scenario, write_correct
from continual_adapters.stream.settings import MethodSettings
from continual_adapters.training.loop import Encoded, encode, evaluate, resolve_device
from continual_adapters.training.multitask import train_multitask

#: The run folder's record of a finished multitask run.
RESULT = "result.json"
#: The model mtl trains: BaselineModel's naive model is one shared fine-tuned encoder copy with a
#: head per task, which is exactly the multitask architecture (trained jointly instead of in turn).
SHARED_ENCODER_METHOD = "naive"


def read_result(folder: Path) -> dict[str, Any] | None:
    """A finished multitask run's result.json, or None if there is none (or it is unreadable)."""
    path = folder / RESULT
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("method") == MULTITASK else None


def run_multitask(
    scenario: Scenario,
    settings: MethodSettings,
    seed: int,
    out: Path,
    device: str | None = None,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Trains `scenario`'s tasks jointly for `settings` (a method `mtl`) and `seed`, evaluates each
    task once on its evaluation split and writes the run folder; returns its result. A folder that
    already holds a finished result is left alone (that result is returned)."""
    if settings.method != MULTITASK:
        raise ConfigError(f"method {settings.label!r} is {settings.method!r}, not {MULTITASK!r}")
    prefix = f"[{settings.label} seed {seed}]"
    folder = scenario.run_dir(Path(out), settings, seed)
    done = read_result(folder)
    if done is not None:
        log(f"{prefix} skip: multitask run already finished ({folder / RESULT})")
        return done
    config = settings.train_config(scenario.train, seed)
    names = [task.name for task in scenario.tasks]
    log(f"{prefix} loading {len(names)} tasks for joint training")
    loaded = {task.name: load_task_data(task.data) for task in scenario.tasks}
    model = BaselineModel.from_pretrained(scenario.encoder, method=SHARED_ENCODER_METHOD)
    model = model.to(resolve_device(device)).eval()
    torch.manual_seed(seed)
    specs = {
        task.name: TaskSpec(
            task.name,
            labels=tuple(loaded[task.name].labels),
            head=task.data.head,
            method=SHARED_ENCODER_METHOD,
            adapter=AdapterConfig(bottleneck=0),
        )
        for task in scenario.tasks
    }
    for name in names:
        model.add_task(specs[name])

    def tokenised(name: str, split: str) -> Encoded:
        data = loaded[name]
        part = {"train": data.train, "validation": data.validation}.get(split, data.evaluation)
        return encode(model.tokenizer, part.texts, part.pairs, data.targets[split], config.max_length, specs[name].head)

    metrics = {task.name: task.data.primary_metric for task in scenario.tasks}
    tasks = {name: (tokenised(name, "train"), tokenised(name, "validation"), metrics[name]) for name in names}
    log(f"{prefix} training {len(names)} tasks jointly ({sum(len(t[0]) for t in tasks.values())} examples)")
    trained = train_multitask(model, tasks, config, progress=progress)

    started = time.perf_counter()
    scores, correct, sizes = {}, {}, {}
    for name in names:
        encoded = tokenised(name, loaded[name].eval_split)
        evaluation = evaluate(model, name, encoded, config.eval_batch_size, progress=progress)
        scores[name] = evaluation.scores
        sizes[name] = len(encoded)
        if specs[name].head == "classification":
            correct[name] = (evaluation.predictions == encoded.targets.numpy()).tolist()
    eval_seconds = time.perf_counter() - started

    final = {name: scores[name][metrics[name]] for name in names}
    best = trained.history[trained.best_epoch - 1]
    result: dict[str, Any] = {
        "method": MULTITASK,
        "continual": False,
        "label": settings.label,
        "seed": seed,
        "scenario": scenario.name,
        "tasks": names,
        "primary_metrics": metrics,
        "scores": scores,
        "final": final,
        "accuracy": {name: scores[name].get("accuracy") for name in names},
        "acc": statistics.fmean(final.values()),
        "validation": {name: best[f"{name}/{metrics[name]}"] for name in names},
        "eval_splits": {name: loaded[name].eval_split for name in names},
        "eval_sizes": sizes,
        "train_seconds": trained.wall_time_s,
        "eval_seconds": eval_seconds,
        "best_epoch": trained.best_epoch,
        "best_validation_mean": trained.best_score,
        "history": trained.history,
        "steps": trained.steps,
        "train_tokens": trained.train_tokens,
        "parameters": _parameters(model, names),
        "train": config.to_dict(),
        "lr": config.lr,
        "encoder": model.base_name,
        "base_sha256": model.base_sha256(),
        "device": str(model.device),
        "library_versions": library_versions(),
        "git_commit": git_commit(),
        "data": {name: loaded[name].provenance() for name in names},
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_correct(folder, correct)
    atomic_write(folder / RESULT, (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    log(
        f"{prefix} done: ACC {result['acc']:.4f} ("
        + ", ".join(f"{name} {metrics[name]} {final[name]:.4f}" for name in names)
        + f"); best epoch {trained.best_epoch}"
    )
    return result


def _parameters(model: BaselineModel, names: list[str]) -> dict[str, Any]:
    """What the joint model trains and stores: the fine-tuned encoder once and every head. The
    pristine base is not needed to serve it, so it is not counted as stored."""
    unique = dict(model.tasks.named_parameters())  # the shared encoder once
    return {
        "base": model.base_parameter_count,
        "encoder": sum(p.numel() for p in model.task_modules(names[0]).encoder.parameters()),
        "heads": {name: sum(p.numel() for p in model.task_modules(name).head.parameters()) for name in names},
        "trained": sum(p.numel() for p in unique.values() if p.requires_grad),
        "stored": sum(p.numel() for p in unique.values()),
        "stored_bytes": sum(p.numel() * p.element_size() for p in unique.values()),
    }
