"""How well `--task auto` works on a registry: the measurement behind `cadapt report --task-id`.

It runs the model (every task's evaluation split through the base encoder for identification,
and through its own task for the given-task score), so it lives in the report layer on top of
the runner, apart from the identifier itself (stream/taskid.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from continual_adapters.core.errors import DataError
from continual_adapters.data.taskdata import load_eval_split
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.taskid import base_features, identifier


def evaluate_identification(runner: Runner, correct: Mapping[str, Sequence[bool]] | None = None) -> dict[str, Any]:
    """Task-identification accuracy on the evaluation split of every task's current version (the
    versions `--task auto` chooses among), and the end-to-end score when the task is predicted
    instead of given (a wrong task counts as a wrong answer).

    `correct` is each task's per-example correctness with the task given, where it is already known
    (a finished stream's audit re-scored every test example): those tasks are then not evaluated a
    second time, which on a long benchmark saves a pass over every test set."""
    ident = identifier(runner.registry, runner.model)
    per_task, hits, total = [], 0, 0
    for task in runner.registry.current_tasks():
        split, targets = load_eval_split(task.data, task.labels)
        guessed = ident.predict(base_features(runner.model, split.texts, split.pairs))
        right = np.array([g == task.name for g in guessed])
        row = {"task": task.name, "examples": len(guessed), "task_id_accuracy": float(right.mean())}
        if correct is not None and task.name in correct:
            known = np.asarray(correct[task.name], dtype=bool)
            if known.shape != right.shape:
                raise DataError(f"task {task.name!r}: {known.size} known scores for {right.size} evaluation examples")
        elif task.head == "classification":
            known = runner.evaluate_task(task.name).predictions == np.asarray(targets)
        else:
            known = None
        if known is not None:
            row["accuracy_given_task"] = float(known.mean())
            row["accuracy_predicted_task"] = float((known & right).mean())
        per_task.append(row)
        hits, total = hits + int(right.sum()), total + len(guessed)
    chance = 1.0 / max(1, len(per_task))
    return {
        "task_id_accuracy": hits / total if total else None,
        "chance": chance,
        "router": ident.router,
        "tasks": per_task,
    }
