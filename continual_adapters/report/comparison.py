"""Comparing methods over one scenario: the table of Houlsby et al. 2019, from our own registries.

Everything here is read back from the registries a scenario run wrote (one per method and
seed), so the document it renders can always be regenerated from the run folder, and every
number in it traces back to evaluation rows.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from continual_adapters.core.config import MULTITASK, SHARED_METHODS
from continual_adapters.metrics.bootstrap import LEVEL, average_accuracy_interval, difference_interval
from continual_adapters.registry.registry import Registry
from continual_adapters.report.reporting import stream_report
from continual_adapters.stream.scenario import FINAL_CORRECT, Scenario
from continual_adapters.stream.settings import MethodSettings

PAPER = {
    "source": "Houlsby et al. 2019, Table 1 (GLUE test, BERT-large)",
    "rows": [
        {"method": "full fine-tuning", "average": 80.4, "trained_percent": 100.0, "total_multiple": 9.0},
        {"method": "adapters (8-256)", "average": 80.0, "trained_percent": 3.6, "total_multiple": 1.3},
        {"method": "adapters (64)", "average": 79.6, "trained_percent": 2.1, "total_multiple": 1.2},
    ],
}


def mean_present(values: list) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _std(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else None


def final_correct(folder: Path, task_names: list[str], metrics: list[str]) -> list[np.ndarray] | None:
    """Each task's per-example correctness at the end of a run (written after its audit), in stream
    order; None unless every task has one and every primary metric is accuracy (an interval of
    accuracy says nothing about a Matthews correlation)."""
    path = folder / FINAL_CORRECT
    if not path.is_file() or any(metric != "accuracy" for metric in metrics):
        return None
    stored = json.loads(path.read_text())["tasks"]
    if any(name not in stored for name in task_names):
        return None
    return [np.frombuffer(stored[name].encode(), dtype=np.uint8) - ord("0") for name in task_names]


def recorded_audit(folder: Path, task_names: list[str]) -> bool | None:
    """The verdict of the audit that ended a run, as its folder recorded it, if that audit covered
    exactly `task_names` (None otherwise: a stream extended since, a run made before verdicts were
    kept, or none recorded)."""
    path = folder / FINAL_CORRECT
    audit = json.loads(path.read_text()).get("audit") if path.is_file() else None
    if not isinstance(audit, dict) or audit.get("tasks") != task_names or not isinstance(audit.get("ok"), bool):
        return None
    return audit["ok"]


def seed_mean(vectors: list[list[np.ndarray] | None]) -> list[np.ndarray] | None:
    """Per-example correctness averaged over a method's seeds (same examples), or None."""
    present = [v for v in vectors if v is not None]
    if not vectors or len(present) != len(vectors):
        return None
    return [np.mean([v[i] for v in present], axis=0) for i in range(len(present[0]))]


def method_summary(registry: Registry, task_names: list[str]) -> dict | None:
    """One method's numbers from one registry; None while it holds no task."""
    if not registry.initialized() or not registry.tasks():
        return None
    report = stream_report(registry)
    names, R = report["matrix"]["tasks"], report["matrix"]["R"]
    base = report["base_model"]["parameters"]
    final = dict(zip(names, R[-1], strict=True))
    learned = {name: R[i][i] for i, name in enumerate(names)}
    trained, wall, sizes, validation = [], 0.0, {}, {}
    metrics = {t["name"]: t["metric"] for t in report["tasks"]}
    for name in names:
        bundle = registry.bundle(name)
        scores = [e.get(f"validation_{metrics[name]}") for e in bundle.hyperparameters.get("size_search", [])]
        validation[name] = max((v for v in scores if v is not None), default=None)
        counts = bundle.param_counts
        trained.append(100.0 * counts.get("trained", counts["total"]) / base)
        wall += bundle.wall_time_s or 0.0
        sizes[name] = bundle.config.get("task", {}).get("adapter", {}).get("bottleneck")
    return {
        "tasks": names,
        "complete": names == task_names,
        "final": [final.get(n) for n in task_names],
        "validation": [validation.get(n) for n in task_names],
        "learned": [learned.get(n) for n in task_names],
        "metrics": report["metrics"],
        "trained_percent": mean_present(trained),
        "total_multiple": report["ledger_totals"].get("total_multiple"),
        "one_model_per_task_multiple": report["ledger_totals"].get("full_finetune_multiple"),
        "bytes": sum(r["added_bytes"] or 0 for r in report["ledger"]),
        "state_bytes": report["method_state"]["bytes"],
        "replay_examples": (report["method_state"]["replay"] or {}).get("examples"),
        "train_seconds": wall,
        "R": R,
        "ledger": report["ledger"],
        "base_parameters": base,
        "adapter_sizes": sizes,
        "primary_metrics": [t["metric"] for t in report["tasks"]],
    }


#: How the comparison marks the multitask upper bound wherever it shows it.
UPPER_BOUND = "upper bound, not a continual method"


def multitask_summary(folder: Path, task_names: list[str]) -> dict | None:
    """One multitask (`mtl`) run's numbers from its result.json (stream/multitask.py); None until it
    finished. Shaped like `method_summary` where the two share a meaning; no R, ledger or BWT."""
    from continual_adapters.stream.multitask import read_result

    result = read_result(folder)
    if result is None:
        return None
    metrics = result["primary_metrics"]
    params = result["parameters"]
    final = [result["final"].get(n) for n in task_names]
    complete = result["tasks"] == task_names
    vectors = final_correct(folder, task_names, [metrics.get(n, "") for n in task_names]) if complete else None
    return {
        "seed": result["seed"],
        "tasks": result["tasks"],
        "complete": complete,
        "final": final,
        "validation": [result["validation"].get(n) for n in task_names],
        "learned": [None] * len(task_names),
        "metrics": {"acc": mean_present(final), "bwt": None, "forgetting": None, "learning_accuracy": None},
        "trained_parameters": params["trained"],
        "stored_parameters": params["stored"],
        "base_parameters": params["base"],
        "trained_percent": 100.0 * params["trained"] / params["base"],
        # What serving it takes: the fine-tuned encoder and the heads (no pristine base beside it).
        "total_multiple": params["stored"] / params["base"],
        "bytes": params["stored_bytes"],
        "train_seconds": result["train_seconds"],
        "eval_seconds": result["eval_seconds"],
        "best_epoch": result["best_epoch"],
        "primary_metrics": [metrics.get(n) for n in task_names],
        "audit_ok": None,
        "acc_ci95": average_accuracy_interval(vectors) if vectors else None,
        "correct": vectors,
    }


def run_summary(
    scenario: Scenario,
    settings: MethodSettings,
    out: Path,
    seed: int,
    task_names: list[str],
    audits: dict | None = None,
) -> dict | None:
    """One run's numbers (`method_summary`, or `multitask_summary` for `mtl`) with its seed, the
    audit's verdict, the bootstrap interval of its ACC and its per-example correctness under
    `correct` (None unless the run finished with accuracy as every primary metric); None while the
    run holds no task. `audits` maps (label, seed) to a verdict that overrides the folder's."""
    folder = scenario.run_dir(out, settings, seed)
    if settings.method == MULTITASK:
        return multitask_summary(folder, task_names)
    db = folder / "registry.db"
    if not db.exists():
        return None
    registry = Registry(db)
    try:
        summary = method_summary(registry, task_names)
    finally:
        registry.close()
    if summary is None:
        return None
    summary["seed"] = seed
    verdict = (audits or {}).get((settings.label, seed))
    if verdict is None and summary["complete"]:
        verdict = recorded_audit(folder, task_names)
    summary["audit_ok"] = verdict
    vectors = final_correct(folder, task_names, summary["primary_metrics"]) if summary["complete"] else None
    summary["acc_ci95"] = average_accuracy_interval(vectors) if vectors else None
    summary["correct"] = vectors
    return summary


def method_row(settings: MethodSettings, lr: float, runs: list[dict]) -> dict:
    """One method's row over its runs (one per seed, from `run_summary`, however they were kept):
    the mean of every figure, ACC's std over seeds, and the bootstrap interval of the per-example
    correctness averaged over seeds. Takes each run's `correct` out (the row keeps no vectors). The
    multitask upper bound is marked `continual: False` and has no BWT or forgetting."""
    pooled = seed_mean([r.pop("correct", None) for r in runs])
    n_tasks = len(runs[0]["final"])
    row: dict[str, Any] = {
        "label": settings.label,
        "method": settings.method,
        "continual": settings.method != MULTITASK,
        "adapter_size": settings.adapter_size,
        "lr": lr,
        "seeds": [r["seed"] for r in runs],
        "complete": all(r["complete"] for r in runs),
        **{
            key: [mean_present([r[key][j] for r in runs]) for j in range(n_tasks)]
            for key in ("final", "learned", "validation")
        },
        "metrics": {
            key: mean_present([r["metrics"].get(key) for r in runs])
            for key in ("acc", "bwt", "forgetting", "learning_accuracy")
        },
        "acc_std": _std([r["metrics"].get("acc") for r in runs]),
        "acc_ci95": average_accuracy_interval(pooled) if pooled else None,
        "audit_ok": [r["audit_ok"] for r in runs],
        "runs": runs,
    }
    shared = ["trained_percent", "total_multiple", "bytes", "train_seconds"]
    if row["continual"]:
        extra = ["state_bytes", "replay_examples"]
    else:
        row["note"] = UPPER_BOUND
        extra = ["trained_parameters", "stored_parameters", "eval_seconds"]
    row.update({key: mean_present([r[key] for r in runs]) for key in shared + extra})
    return row


def compare(scenario: Scenario, out: str | Path, audits: dict | None = None) -> dict:
    """Per method: means over seeds of every figure, plus the per-seed summaries. The multitask
    upper bound (`mtl`) gets its row from its result files, marked `continual: False`; it is never
    one side of a difference between methods."""
    out = Path(out)
    task_names = [t.name for t in scenario.tasks]
    methods: list[dict[str, Any]] = []
    correct: dict[str, list[np.ndarray] | None] = {}  # per method, averaged over seeds: for the intervals
    for settings in scenario.methods:
        runs = [
            summary
            for seed in scenario.seeds
            if (summary := run_summary(scenario, settings, out, seed, task_names, audits)) is not None
        ]
        if not runs:
            continue
        if settings.method != MULTITASK:
            correct[settings.label] = seed_mean([r["correct"] for r in runs])
        methods.append(method_row(settings, settings.lr or scenario.train.lr, runs))
    differences = []
    accs = {m["label"]: m["metrics"]["acc"] for m in methods if m["continual"]}
    pairs = [("adapters", other) for other in ("full", "lora", *SHARED_METHODS)]
    for first, second in pairs:
        a, b = correct.get(first), correct.get(second)
        if a is not None and b is not None and accs.get(first) is not None and accs.get(second) is not None:
            low, high = difference_interval(a, b)
            gap = accs[first] - accs[second]
            differences.append({"first": first, "second": second, "acc_difference": gap, "ci95": [low, high]})
    return {
        "scenario": scenario.name,
        "differences": differences,
        "ci_level": LEVEL,
        "description": scenario.description,
        "notes": scenario.notes,
        "source": scenario.source,
        "tasks": task_names,
        "datasets": [t.dataset_name for t in scenario.tasks],
        "caps": {
            t.name: {
                "max_train": t.data.max_train,
                "max_eval": t.data.max_eval,
                "max_validation": t.data.max_validation,
            }
            for t in scenario.tasks
        },
        "train": scenario.train.to_dict(),
        "encoder": scenario.encoder,
        "methods": methods,
        "paper": PAPER,
    }


def seeds_on_disk(out: str | Path, label: str) -> tuple[int, ...]:
    """The seeds with a run folder for method `label` under `out`, whatever `--seeds` made them."""
    names = (p.name.removeprefix("seed") for p in (Path(out) / label).glob("seed*") if p.is_dir())
    return tuple(sorted(int(name) for name in names if name.isdigit()))


def finished_row(settings: MethodSettings, lr: float, runs: dict[int, dict]) -> dict | None:
    """A method's row for a stream run in parts, from its runs by seed: the mean over the seeds that
    finished or, while none has, its lowest seed's run so far. The other seeds are listed under
    `unfinished` and never averaged in: a half-done run would pull the mean toward its first tasks."""
    if not runs:
        return None
    chosen = [seed for seed, run in sorted(runs.items()) if run["complete"]] or [min(runs)]
    row = method_row(settings, lr, [runs[seed] for seed in chosen])
    row["unfinished"] = [
        {"seed": seed, "tasks": len(run["tasks"])} for seed, run in sorted(runs.items()) if seed not in chosen
    ]
    return row


def compare_finished(scenario: Scenario, out: str | Path) -> dict:
    """compare() over the runs found under `out`, for streams run in parts (a seed at a time, over
    days): each method's row is `finished_row` of its seeds on disk. Methods may differ in seeds
    here, so no paired difference is drawn (`differences` is empty)."""
    task_names = [t.name for t in scenario.tasks]
    methods = []
    for settings in scenario.methods:
        runs = {
            seed: summary
            for seed in seeds_on_disk(out, settings.label)
            if (summary := run_summary(scenario, settings, Path(out), seed, task_names)) is not None
        }
        row = finished_row(settings, settings.lr or scenario.train.lr, runs)
        if row is not None:
            methods.append(row)
    return {**compare(replace(scenario, methods=()), out), "methods": methods}
