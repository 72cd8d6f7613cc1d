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


def multitask_row(scenario: Scenario, settings: MethodSettings, out: Path, task_names: list[str]) -> dict | None:
    """The multitask upper bound's row: ACC mean ± std over seeds with its bootstrap interval,
    parameters and time; BWT and forgetting do not apply (None). `continual: False` marks it."""
    runs = []
    for seed in scenario.seeds:
        summary = multitask_summary(scenario.run_dir(out, settings, seed), task_names)
        if summary is not None:
            runs.append(summary)
    if not runs:
        return None
    pooled = seed_mean([r.pop("correct") for r in runs])
    return {
        "label": settings.label,
        "method": settings.method,
        "continual": False,
        "note": UPPER_BOUND,
        "adapter_size": settings.adapter_size,
        "lr": settings.lr or scenario.train.lr,
        "seeds": [r["seed"] for r in runs],
        "complete": all(r["complete"] for r in runs),
        **{
            key: [mean_present([r[key][j] for r in runs]) for j in range(len(task_names))]
            for key in ("final", "learned", "validation")
        },
        "metrics": {
            "acc": mean_present([r["metrics"]["acc"] for r in runs]),
            "bwt": None,
            "forgetting": None,
            "learning_accuracy": None,
        },
        "acc_std": _std([r["metrics"]["acc"] for r in runs]),
        "acc_ci95": average_accuracy_interval(pooled) if pooled else None,
        "trained_percent": mean_present([r["trained_percent"] for r in runs]),
        "total_multiple": mean_present([r["total_multiple"] for r in runs]),
        "trained_parameters": mean_present([r["trained_parameters"] for r in runs]),
        "stored_parameters": mean_present([r["stored_parameters"] for r in runs]),
        "bytes": mean_present([r["bytes"] for r in runs]),
        "train_seconds": mean_present([r["train_seconds"] for r in runs]),
        "eval_seconds": mean_present([r["eval_seconds"] for r in runs]),
        "audit_ok": [None for _ in runs],
        "runs": runs,
    }


def compare(scenario: Scenario, out: str | Path, audits: dict | None = None) -> dict:
    """Per method: means over seeds of every figure, plus the per-seed summaries. The multitask
    upper bound (`mtl`) gets its row from its result files (`multitask_row`), marked `continual:
    False`; it is never one side of a difference between methods."""
    out = Path(out)
    task_names = [t.name for t in scenario.tasks]
    methods: list[dict[str, Any]] = []
    correct: dict[str, list[np.ndarray] | None] = {}  # per method, averaged over seeds: for the intervals
    for settings in scenario.methods:
        if settings.method == MULTITASK:
            row = multitask_row(scenario, settings, out, task_names)
            if row is not None:
                methods.append(row)
            continue
        runs = []
        per_seed: list[list[np.ndarray] | None] = []
        for seed in scenario.seeds:
            db = scenario.run_dir(out, settings, seed) / "registry.db"
            summary = method_summary(Registry(db), task_names) if db.exists() else None
            if summary is not None:
                summary["seed"] = seed
                verdict = (audits or {}).get((settings.label, seed))
                if verdict is None and summary["complete"]:
                    verdict = recorded_audit(db.parent, task_names)
                summary["audit_ok"] = verdict
                vectors = final_correct(db.parent, task_names, summary["primary_metrics"])
                vectors = vectors if summary["complete"] else None
                summary["acc_ci95"] = average_accuracy_interval(vectors) if vectors else None
                per_seed.append(vectors)
                runs.append(summary)
        if not runs:
            continue
        per_task = {
            key: [mean_present([r[key][j] for r in runs]) for j in range(len(task_names))]
            for key in ("final", "learned", "validation")
        }
        metrics = {
            key: mean_present([r["metrics"].get(key) for r in runs])
            for key in ("acc", "bwt", "forgetting", "learning_accuracy")
        }
        correct[settings.label] = seed_mean(per_seed)
        methods.append(
            {
                "label": settings.label,
                "method": settings.method,
                "continual": True,
                "adapter_size": settings.adapter_size,
                "lr": settings.lr or scenario.train.lr,
                "seeds": [r["seed"] for r in runs],
                "complete": all(r["complete"] for r in runs),
                **per_task,
                "metrics": metrics,
                "acc_std": _std([r["metrics"].get("acc") for r in runs]),
                "acc_ci95": average_accuracy_interval(pooled) if (pooled := seed_mean(per_seed)) else None,
                "trained_percent": mean_present([r["trained_percent"] for r in runs]),
                "total_multiple": mean_present([r["total_multiple"] for r in runs]),
                "bytes": mean_present([r["bytes"] for r in runs]),
                "state_bytes": mean_present([r["state_bytes"] for r in runs]),
                "replay_examples": mean_present([r["replay_examples"] for r in runs]),
                "train_seconds": mean_present([r["train_seconds"] for r in runs]),
                "audit_ok": [r["audit_ok"] for r in runs],
                "runs": runs,
            }
        )
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


def compare_finished(scenario: Scenario, out: str | Path) -> dict:
    """compare() over the runs found under `out`, for streams run in parts (a seed at a time, over
    days): each method's row averages its finished seeds (mean ± std over them) or, while none has
    finished, shows its lowest seed's run so far. Seeds still running or cut off are listed in the
    row's `unfinished` and never averaged in: a half-done run would pull the mean toward its first
    tasks. Methods may differ in seeds here, so no paired difference is drawn (`differences` is empty)."""
    methods = []
    for settings in scenario.methods:
        rows = {}
        for seed in seeds_on_disk(out, settings.label):
            found = compare(replace(scenario, methods=(settings,), seeds=(seed,)), out)["methods"]
            if found:
                rows[seed] = found[0]
        if not rows:
            continue
        finished = tuple(seed for seed, row in rows.items() if row["complete"])
        if len(finished) > 1:
            row = compare(replace(scenario, methods=(settings,), seeds=finished), out)["methods"][0]
        else:
            row = rows[finished[0] if finished else min(rows)]
        row["unfinished"] = [
            {"seed": seed, "tasks": len(found["runs"][0]["tasks"])}
            for seed, found in rows.items()
            if seed not in row["seeds"]
        ]
        methods.append(row)
    return {**compare(replace(scenario, methods=()), out), "methods": methods}
