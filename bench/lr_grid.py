"""Learning-rate selection on validation data only, for the Long Sequence Benchmark's protocol.

Each (method, learning rate) trains a fresh task on each of the first tasks of a stream, scored
on its validation split (the test split is never loaded), and the grid's mean validation score
picks the learning rate that the whole stream then uses (docs/long_benchmark.md). LoRA runs at
the default rank (core/config.py DEFAULT_LORA_RANK: 64 on query and value, the parameter count of
the m=64 adapters) and shares the adapters' grid: both train small modules on a frozen base. Sequential
methods that fine-tune the shared encoder (naive, and the regularised ones) take the learning
rate chosen for per-task full fine-tuning: the same update, selected on the same tasks.

Resumable: every finished (method, lr, task, seed) is written to the JSON at once, and a rerun
skips it. Example (what produced bench/results/lr_grid_long.json):

    python bench/lr_grid.py --out bench/results/lr_grid_long.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from continual_adapters.core.baselines import model_for_method
from continual_adapters.core.config import AdapterConfig, MethodOptions, TaskSpec, TrainConfig
from continual_adapters.data.reader import default_data_dir
from continual_adapters.data.taskdata import DataSpec, load_task_data
from continual_adapters.training.loop import encode, train_task

TASKS = ("long_mnli", "long_cb", "long_wic", "long_copa")  # the first four tasks of order 4
#: Each grid was widened by one step where its best rate sat at its edge: adapters and LoRA at
#: 1e-2, full fine-tuning at 3e-4 and, when 3e-4 won, 1e-3 (a choice at the edge says only that
#: the best may lie beyond).
GRID = {
    "adapters": (3e-4, 1e-3, 3e-3, 1e-2),
    "lora": (3e-4, 1e-3, 3e-3, 1e-2),
    "full": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
}


def train_one(method: str, lr: float, folder: str, data_dir: Path, epochs: int, max_length: int, seed: int) -> dict:
    spec = DataSpec.from_folder(folder, data_dir)
    loaded = load_task_data(spec)
    model = model_for_method(method)
    task = TaskSpec(
        "grid",
        labels=tuple(loaded.labels),
        method=method,
        adapter=AdapterConfig(bottleneck=64 if method == "adapters" else 0),
        lora=MethodOptions().lora() if method == "lora" else None,
    )
    torch.manual_seed(seed)
    model.add_task(task)
    train_set = encode(
        model.tokenizer, loaded.train.texts, loaded.train.pairs, loaded.targets["train"], max_length, spec.head
    )
    val_set = encode(
        model.tokenizer,
        loaded.validation.texts,
        loaded.validation.pairs,
        loaded.targets["validation"],
        max_length,
        spec.head,
    )
    config = TrainConfig(epochs=epochs, lr=lr, max_length=max_length, seed=seed)
    started = time.perf_counter()
    result = train_task(model, "grid", train_set, val_set, config, spec.primary_metric, progress=False)
    return {
        "method": method,
        "lr": lr,
        "task": folder,
        "seed": seed,
        "epochs": epochs,
        "max_length": max_length,
        "train_examples": len(train_set),
        "validation_examples": len(val_set),
        "validation_accuracy": result.best_score,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "wall_time_s": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }


def summary(runs: list[dict]) -> dict:
    """Mean validation accuracy per (method, lr) over the tasks, and the chosen lr per method."""
    table: dict[str, dict[str, float]] = {}
    for method, lrs in GRID.items():
        for lr in lrs:
            scores = [r["validation_accuracy"] for r in runs if r["method"] == method and r["lr"] == lr]
            if len(scores) == len(TASKS):
                table.setdefault(method, {})[repr(lr)] = statistics.fmean(scores)
    chosen = {m: float(max(row, key=row.get)) for m, row in table.items() if len(row) == len(GRID[m])}
    return {"mean_validation_accuracy": table, "chosen_lr": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/lr_grid_long.json"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--methods", default=",".join(GRID))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    state = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    done = {(r["method"], r["lr"], r["task"], r["seed"]) for r in state["runs"]}
    for method in args.methods.split(","):
        for lr in GRID[method]:
            for folder in TASKS:
                if (method, lr, folder, args.seed) in done:
                    continue
                run = train_one(method, lr, folder, data_dir, args.epochs, args.max_length, args.seed)
                print(
                    f"{method} lr {lr:g} {folder}: validation {run['validation_accuracy']:.4f} "
                    f"({run['wall_time_s']:.0f} s)",
                    flush=True,
                )
                state["runs"].append(run)
                state.update(summary(state["runs"]))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=1) + "\n")
                os.replace(tmp, args.out)
    print(json.dumps(summary(state["runs"]), indent=1))


if __name__ == "__main__":
    main()
