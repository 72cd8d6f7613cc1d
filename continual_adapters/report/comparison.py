"""Comparing methods over one scenario: the table of Houlsby et al. 2019, from our own registries.

Everything here is read back from the registries a scenario run wrote (one per method and
seed), so the document it renders can always be regenerated from the run folder, and every
number in it traces back to evaluation rows.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from continual_adapters.core.config import MULTITASK
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


def _mean(values: list) -> float | None:
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
        "trained_percent": _mean(trained),
        "total_multiple": report["ledger_totals"].get("total_multiple"),
        "one_model_per_task_multiple": report["ledger_totals"].get("full_finetune_multiple"),
        "bytes": sum(r["added_bytes"] or 0 for r in report["ledger"]),
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
        "metrics": {"acc": _mean(final), "bwt": None, "forgetting": None, "learning_accuracy": None},
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
            key: [_mean([r[key][j] for r in runs]) for j in range(len(task_names))]
            for key in ("final", "learned", "validation")
        },
        "metrics": {
            "acc": _mean([r["metrics"]["acc"] for r in runs]),
            "bwt": None,
            "forgetting": None,
            "learning_accuracy": None,
        },
        "acc_std": _std([r["metrics"]["acc"] for r in runs]),
        "acc_ci95": average_accuracy_interval(pooled) if pooled else None,
        "trained_percent": _mean([r["trained_percent"] for r in runs]),
        "total_multiple": _mean([r["total_multiple"] for r in runs]),
        "trained_parameters": _mean([r["trained_parameters"] for r in runs]),
        "stored_parameters": _mean([r["stored_parameters"] for r in runs]),
        "bytes": _mean([r["bytes"] for r in runs]),
        "train_seconds": _mean([r["train_seconds"] for r in runs]),
        "eval_seconds": _mean([r["eval_seconds"] for r in runs]),
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
                summary["audit_ok"] = (audits or {}).get((settings.label, seed))
                vectors = final_correct(db.parent, task_names, summary["primary_metrics"])
                vectors = vectors if summary["complete"] else None
                summary["acc_ci95"] = average_accuracy_interval(vectors) if vectors else None
                per_seed.append(vectors)
                runs.append(summary)
        if not runs:
            continue
        per_task = {
            key: [_mean([r[key][j] for r in runs]) for j in range(len(task_names))]
            for key in ("final", "learned", "validation")
        }
        metrics = {
            key: _mean([r["metrics"].get(key) for r in runs])
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
                "trained_percent": _mean([r["trained_percent"] for r in runs]),
                "total_multiple": _mean([r["total_multiple"] for r in runs]),
                "bytes": _mean([r["bytes"] for r in runs]),
                "train_seconds": _mean([r["train_seconds"] for r in runs]),
                "audit_ok": [r["audit_ok"] for r in runs],
                "runs": runs,
            }
        )
    differences = []
    accs = {m["label"]: m["metrics"]["acc"] for m in methods if m["continual"]}
    for first, second in (("adapters", "full"), ("adapters", "naive")):
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


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.4f}"


def is_continual(method: dict) -> bool:
    """Whether a comparison row is a continual method (every row but the multitask upper bound)."""
    return bool(method.get("continual", method.get("method") != MULTITASK))


def _label(method: dict) -> str:
    return method["label"] if is_continual(method) else f"{method['label']} ({UPPER_BOUND})"


def findings(data: dict) -> list[str]:
    """The checks the paper's claim rests on, stated from the numbers rather than by hand. The
    multitask upper bound is stated as the reference it is, never as one side of a comparison."""
    by_label = {m["label"]: m for m in data["methods"] if is_continual(m)}
    lines = []
    for m in data["methods"]:
        if not is_continual(m):
            ci = m.get("acc_ci95")
            lines.append(
                f"`{m['label']}`: the multitask upper bound, every task trained jointly on one model "
                f"({UPPER_BOUND}: no order, so no BWT or forgetting): ACC {_pct(m['metrics']['acc'])}"
                + (f", 95% interval [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")
                + "."
            )
            continue
        bwt = m["metrics"]["bwt"]
        if m["method"] in ("adapters", "ln-only", "full", "top-k") and bwt is not None:
            lines.append(
                f"`{m['label']}`: BWT {bwt:+.4f} — "
                + ("exactly zero, as isolation guarantees." if bwt == 0 else "NOT zero: investigate.")
            )
        if m["method"] == "naive" and bwt is not None:
            lines.append(
                f"`{m['label']}`: BWT {bwt:+.4f}, forgetting {m['metrics']['forgetting']:.4f} — "
                "sequential fine-tuning of the shared encoder overwrites earlier tasks."
            )
        if m.get("adapter_size") == "auto" and m.get("runs"):
            picked = m["runs"][0]["adapter_sizes"]
            lines.append(
                f"`{m['label']}` picked, on each task's validation split: "
                + ", ".join(f"{task} {size}" for task, size in picked.items())
                + "."
            )
    adapters, full = by_label.get("adapters"), by_label.get("full")
    if adapters and full and adapters["metrics"]["acc"] is not None and full["metrics"]["acc"] is not None:
        lines.append(
            f"`adapters` average {_pct(adapters['metrics']['acc'])} vs `full` {_pct(full['metrics']['acc'])}, "
            f"with {adapters['trained_percent']:.2f}% vs {full['trained_percent']:.1f}% of the parameters "
            f"trained per task: {difference_verdict(data, 'adapters', 'full')}"
        )
    return lines


def difference_verdict(data: dict, first: str, second: str) -> str:
    """What may be said of first - second: a lead or a gap only when the paired bootstrap interval
    over test examples excludes zero; never a difference the interval does not show."""
    found = [d for d in data.get("differences", []) if (d["first"], d["second"]) == (first, second)]
    if not found:
        return "no interval over test examples for this run (no per-example record), so no difference is claimed."
    gap, (low, high) = 100 * found[0]["acc_difference"], (100 * v for v in found[0]["ci95"])
    span = f"{gap:+.1f} points, {100 * data.get('ci_level', LEVEL):.0f}% interval [{low:+.1f}, {high:+.1f}]"
    if low > 0:
        return f"`{first}` lead by {span}."
    if high < 0:
        return f"`{first}` trail by {span}."
    return f"difference {span}: the interval includes zero, so these runs show no difference."


def format_comparison(data: dict, command: str | None = None) -> str:
    names = data["tasks"]
    out = [f"# Results: scenario `{data['scenario']}`", ""]
    if data["description"]:
        out += [data["description"], ""]
    if command:
        out += ["Generated, not written by hand; reproduce with:", "", "```bash", command, "```", ""]
    caps = {(c["max_train"], c["max_eval"]) for c in data["caps"].values()}
    # Where a task caps validation on its own, the eval cap above is its test split's alone.
    validation = sorted({c.get("max_validation") for c in data["caps"].values()} - {None})
    out += [
        f"Encoder: `{data['encoder'] or 'sentence-transformers/all-MiniLM-L6-v2'}`; training: "
        f"{data['train']['epochs']} epoch(s), batch {data['train']['batch_size']}, max length "
        f"{data['train']['max_length']}; caps (train, eval) per task: "
        + ", ".join(f"{a if a else 'all'}/{b if b else 'all'}" for a, b in sorted(caps, key=str))
        + (f"; validation capped on its own at {', '.join(map(str, validation))}" if validation else "")
        + ".",
        "",
    ]
    header = "| method | " + " | ".join(names) + " | average | trained params / task | total params (× base) |"
    rule = "|---" * (len(names) + 4) + "|"
    for key, title, note in (
        (
            "final",
            "Score per task at the end of the stream (×100)",
            "Each task's primary metric (accuracy; Matthews correlation for CoLA) on its evaluation split "
            "after the whole stream was learned: the last row of R. The average is ACC.",
        ),
        (
            "learned",
            "Score per task right after it was learned (×100)",
            "The diagonal of R: what each method reaches on a task before any later task can interfere.",
        ),
        (
            "validation",
            "Validation score per task, where model selection looks (×100)",
            "The best epoch's score on each task's validation split, the only score settings may be chosen "
            "by; the tables above are the test scores, read once.",
        ),
    ):
        shown = [m for m in data["methods"] if key != "learned" or is_continual(m)]
        if key == "learned" and len(shown) < len(data["methods"]):
            note += " The multitask upper bound learns every task at once, so it has no such score."
        out += [f"## {title}", "", note, "", header, rule]
        for m in shown:
            average = {"final": m["metrics"]["acc"], "learned": m["metrics"]["learning_accuracy"]}.get(
                key, _mean(m.get(key, []))
            )
            out.append(
                f"| {_label(m)}{'' if m['complete'] else ' (incomplete)'} | "
                + " | ".join(_pct(v) for v in m.get(key, [None] * len(names)))
                + f" | **{_pct(average)}** | "
                f"{m['trained_percent']:.2f}% | {m['total_multiple']:.2f}× |"
            )
        out.append("")
    out += [
        "## Continual-learning metrics",
        "",
        "ACC is the mean over seeds; ± its standard deviation where more than one seed ran; the interval "
        "is a 95% bootstrap over test examples (each task's examples resampled, tasks averaged), shown "
        "where every task's final predictions were recorded and every metric is accuracy.",
        "",
        "| method | seeds | ACC | 95% interval | BWT | forgetting | audit | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in data["methods"]:
        audit = ", ".join("–" if a is None else ("pass" if a else "FAIL") for a in m["audit_ok"])
        spread = f" ± {100 * m['acc_std']:.1f}" if m.get("acc_std") is not None else ""
        ci = m.get("acc_ci95")
        interval = f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "–"
        bwt, forgetting = _signed(m["metrics"]["bwt"]), _signed(m["metrics"]["forgetting"])
        if not is_continual(m):
            bwt = forgetting = audit = "n/a"
        out.append(
            f"| {_label(m)} | {len(m.get('seeds', []))} | {_pct(m['metrics']['acc'])}{spread} | {interval} | "
            f"{bwt} | {forgetting} | {audit} | {m['train_seconds']:.0f} |"
        )
    if not all(is_continual(m) for m in data["methods"]):
        out += [
            "",
            "The multitask upper bound trains one model (the encoder and every head) on all the tasks at "
            f"once, seeing the whole stream together: it is an {UPPER_BOUND}. BWT and forgetting do not "
            "apply (n/a) and it has no registry to audit; its trained parameters are the whole joint "
            "model's, its total what serving it stores (the fine-tuned encoder and the heads).",
        ]
    paper = data["paper"]
    out += [
        "",
        f"## Beside the paper ({paper['source']})",
        "",
        "| method | GLUE average | trained params / task | total params (× base, 9 tasks) |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {r['method']} | {r['average']:.1f} | {r['trained_percent']:.1f}% | {r['total_multiple']:.1f}× |"
        for r in paper["rows"]
    ]
    out += [
        "",
        "Different encoder (MiniLM-L6, 22.7M, vs BERT-large, 340M), different tasks and capped "
        "training sets: compare the gaps and the parameter ratios, not the absolute scores.",
    ]
    lines = findings(data)
    if lines:
        out += ["", "## Findings", ""] + [f"- {line}" for line in lines]
    if data["notes"]:
        out += ["", "## Notes", "", data["notes"]]
    if data.get("plots"):
        out += ["", "## Figures", ""] + [f"![{Path(p).stem}]({p})" for p in data["plots"]]
    return "\n".join(out) + "\n"


def write_comparison_plots(data: dict, folder: str | Path, link_from: str | Path | None = None) -> list[str]:
    """Final scores per task and method, and stored parameters as tasks are added."""
    from continual_adapters.metrics.ledger import LedgerRow
    from continual_adapters.report.plots import plot_accuracy_matrix, plot_method_comparison, plot_parameter_growth

    folder = Path(folder)
    methods = data["methods"]
    if not methods:
        return []
    paths = [
        plot_method_comparison(
            {m["label"]: m["final"] for m in methods},
            data["tasks"],
            folder / "scores_by_method.png",
            title="Score at the end of the stream",
            metric_label="primary score",
        )
    ]
    # The multitask upper bound has no stream: no ledger to grow, no accuracy matrix.
    methods = [m for m in methods if is_continual(m)]
    if methods:
        paths.append(
            plot_parameter_growth(
                {m["label"]: [LedgerRow(**row) for row in m["runs"][0]["ledger"]] for m in methods},
                folder / "parameter_growth.png",
            )
        )
    for m in methods:
        run = m["runs"][0]
        paths.append(
            plot_accuracy_matrix(
                run["tasks"],
                run["R"],
                folder / f"R_{m['label']}.png",
                title=f"R[i][j] — {m['label']}",
                metric_label="primary score",
            )
        )
    base = Path(link_from).parent if link_from else None
    return [str(_relative(p, base)) for p in paths]


def _relative(path: Path, base: Path | None) -> Path:
    if base is None:
        return path
    import os

    return Path(os.path.relpath(path.resolve(), base.resolve()))
