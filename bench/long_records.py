"""bench/results/long/: one small record per run of the Long Sequence Benchmark, from its run folder.

A long run's folder (runs/long_orderO/<method>/seed<S>: registry and bundles, up to 1.3 GB) stays
out of the repository and dies with the machine that holds it; its record (report/run_record.py,
a few kilobytes) is committed as soon as the run finishes, and docs/long_benchmark.md is rendered
from the records alone. Refreshing the records from whatever run folders are present:

    python bench/long_records.py --runs runs

For the methods that keep the base encoder intact (adapters, LoRA) a finished run's record also
holds its scores with the task unknown, as the published O-LoRA and L2P rows are: each test
example's task is identified from base-encoder features (`--task auto`'s Mahalanobis router,
stream/taskid.py) and a wrong task counts as a wrong answer. That pass runs the base encoder over
every test set once per run and is cached beside the run (`identification.json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from continual_adapters.core.config import MULTITASK
from continual_adapters.data.taskdata import load_eval_split
from continual_adapters.files.atomic import atomic_write
from continual_adapters.registry import Registry
from continual_adapters.report.comparison import run_summary, seeds_on_disk
from continual_adapters.report.identification import evaluate_identification
from continual_adapters.report.run_record import write_run_record
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.scenario import FINAL_CORRECT, Scenario, load_scenario

# long_tables.py lies beside this file, however it is loaded.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_tables import ORDERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "bench" / "results" / "long"
#: Methods whose base encoder stays intact, so task identification can route their test examples.
IDENTIFIABLE = ("adapters", "lora")
IDENTIFICATION = "identification.json"


def long_scenario(order: int) -> Scenario:
    return load_scenario(ROOT / "scenarios" / f"long_order{order}.yaml")


def record_path(records: Path, order: int, label: str, seed: int) -> Path:
    return records / f"long_order{order}" / f"{label}_seed{seed}.json"


def identify(run: Path, measure: bool = True) -> dict | None:
    """Task-id accuracy and the accuracy with the task unknown, for one finished run (cached; with
    `measure=False` only the cache is read). The task-given scores are the audit's own
    (final_correct.json), so no test set is scored twice."""
    cached = run / IDENTIFICATION
    if cached.exists():
        return json.loads(cached.read_text())
    if not measure or not (run / FINAL_CORRECT).exists():
        return None
    given = json.loads((run / FINAL_CORRECT).read_text())["tasks"]
    registry = Registry(run / "registry.db")
    try:
        found = evaluate_identification(
            Runner(registry, progress=False), {task: [c == "1" for c in marks] for task, marks in given.items()}
        )
    finally:
        registry.close()
    tasks = {
        row["task"]: {
            "examples": row["examples"],
            "task_id_accuracy": row["task_id_accuracy"],
            "accuracy_task_given": row["accuracy_given_task"],
            "accuracy_task_unknown": row["accuracy_predicted_task"],
        }
        for row in found["tasks"]
    }
    result = {
        "router": found["router"],
        "task_id_accuracy": found["task_id_accuracy"],
        "acc_task_given": statistics.fmean(t["accuracy_task_given"] for t in tasks.values()),
        "acc_task_unknown": statistics.fmean(t["accuracy_task_unknown"] for t in tasks.values()),
        "tasks": tasks,
    }
    atomic_write(cached, json.dumps(result, indent=2, sort_keys=True).encode())
    return result


def stream_seconds(run: Path) -> float | None:
    """Wall time of a run's additions, each task from its pending row to ready (training, the
    evaluation of every task, probes and bookkeeping), from the registry's timestamps."""
    if not (run / "registry.db").exists():
        return None
    registry = Registry(run / "registry.db")
    try:
        tasks = registry.tasks()
        return sum((t.updated_at - t.created_at).total_seconds() for t in tasks) if tasks else None
    finally:
        registry.close()


def majority_shares(registry_path: Path) -> dict[str, float]:
    """Each classification task's share of its most frequent test label: what answering that label
    for every example scores (read from the exact test sets a run recorded)."""
    registry = Registry(registry_path)
    try:
        tasks = [task for task in registry.current_tasks() if task.head == "classification"]
        targets = {task.name: load_eval_split(task.data, task.labels)[1] for task in tasks}
    finally:
        registry.close()
    return {name: float(np.bincount(np.asarray(t)).max() / len(t)) for name, t in targets.items()}


def record_runs(
    runs: Path,
    records: Path = RECORDS,
    scenario_of: Callable[[int], Scenario] = long_scenario,
    identification: bool = True,
) -> list[Path]:
    """Write (or rewrite) the record of every run folder under `runs/long_order<O>`, finished or
    not, against order O's scenario; a record whose folder is gone stays as it is. With
    `identification=False` a finished run's task-unknown scores are recorded only if already
    measured: a finished run is then kept in minutes, not after its identification pass."""
    written = []
    for order in ORDERS:
        folder = runs / f"long_order{order}"
        if not folder.is_dir():
            continue
        scenario = scenario_of(order)
        names = [t.name for t in scenario.tasks]
        for settings in scenario.methods:
            for seed in seeds_on_disk(folder, settings.label):
                summary = run_summary(scenario, settings, folder, seed, names)
                if summary is None:
                    continue
                run = scenario.run_dir(folder, settings, seed)
                extra: dict = {"order": order, "label": settings.label, "seed": seed}
                extra["lr"] = settings.lr or scenario.train.lr
                extra["wall_seconds"] = stream_seconds(run) if settings.method != MULTITASK else None
                if summary["complete"] and settings.method != MULTITASK:
                    extra["majority"] = majority_shares(run / "registry.db")
                if summary["complete"] and settings.method in IDENTIFIABLE:
                    extra["identification"] = identify(run, measure=identification)
                written.append(write_run_record(record_path(records, order, settings.label, seed), summary, **extra))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs", help="The folder holding long_order4/, long_order5/, long_order6/.")
    parser.add_argument("--records", default=str(RECORDS))
    parser.add_argument(
        "--no-identification", action="store_true", help="Record task-unknown scores only where already measured."
    )
    args = parser.parse_args()
    for path in record_runs(Path(args.runs), Path(args.records), identification=not args.no_identification):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
