"""The tables and lists of docs/long_benchmark.md, as pure functions of what bench/long_benchmark.py
gathered from the run records (per order, one `finished_row()` per method, as compare_finished()
makes from run folders): kept apart from the gathering so that they can be checked on hand-made
outputs whose rows are known."""

from __future__ import annotations

import statistics

from continual_adapters.core.config import SHARED_METHODS
from continual_adapters.report.comparison_doc import ISOLATED, is_continual, pct

#: The benchmark's published orders this project runs (Yahoo Answers left out of each).
ORDERS = (4, 5, 6)
#: Methods whose per-task scores cannot depend on the order: those that isolate their tasks (each
#: task trains from the same base).
ORDER_FREE = ISOLATED


def hours(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 3600:.2f}"


def method_rows(per_order: dict[int, dict]) -> list[str]:
    """One row per method: its ACC per order, the mean and spread over orders, BWT, forgetting,
    parameters, storage and time (the first order that finished)."""
    labels = list(dict.fromkeys(m["label"] for data in per_order.values() for m in data["methods"]))
    rows = [
        "| method | " + " | ".join(f"order {o}" for o in ORDERS) + " | mean ± std (orders) | 95% interval "
        "(first order) | BWT | forgetting | trained params / task | total params (× base) | storage (MB) | "
        "train time (h) | eval + proofs (h) |",
        "|---" * (len(ORDERS) + 10) + "|",
    ]
    for label in labels:
        found = {o: next((m for m in d["methods"] if m["label"] == label), None) for o, d in per_order.items()}
        ran = {o: m for o, m in found.items() if m is not None and m["complete"]}
        accs = [m["metrics"]["acc"] for m in ran.values()]
        cells = []
        for order in ORDERS:
            m, partial = ran.get(order), found.get(order)
            seeds = f" ({len(m['seeds'])} seeds ± {100 * m['acc_std']:.1f})" if m and m.get("acc_std") else ""
            if m:
                cells.append(pct(m["metrics"]["acc"]) + seeds)
            elif partial:
                done, total = len(partial["runs"][0]["tasks"]), len(per_order[order]["tasks"])
                cells.append(f"{done} of {total} tasks (a prefix or a run not finished)")
            else:
                cells.append("not run")
        spread = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        first = next(iter(ran.values()), None)
        ci = first.get("acc_ci95") if first else None
        if first is None:
            tail = "– | " * 7
        else:
            bwt, forgetting = first["metrics"]["bwt"], first["metrics"]["forgetting"]
            continual = f"{bwt:+.4f} | {forgetting or 0:.4f} | " if bwt is not None else ""
            tail = (
                (continual or "n/a (upper bound, not continual) | n/a | ")
                + f"{first['trained_percent']:.2f}% | {first['total_multiple']:.2f}× | {first['bytes'] / 1e6:.1f} | "
                + f"{hours(first['train_seconds'])} | {hours(first.get('eval_seconds'))} | "
            )
        rows.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | **{pct(statistics.fmean(accs)) if accs else '–'}**{spread} | "
            + (f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else "–")
            + " | "
            + tail.rstrip()
        )
    return rows


def finished(data: dict) -> dict:
    """One order's data with only the methods that reached the last task (the others have no final row)."""
    return {**data, "methods": [m for m in data["methods"] if m["complete"]]}


def per_task_rows(data: dict) -> list[str]:
    """Each task's accuracy after the last task, per method (one order), beside its majority label's
    share of the test set: a score at that share is a task the method did not learn."""
    majority = data.get("majority", {})
    rows = ["| task | majority label | " + " | ".join(m["label"] for m in data["methods"]) + " |"]
    rows.append("|---" * (len(data["methods"]) + 2) + "|")
    for j, task in enumerate(data["tasks"]):
        scores = " | ".join(pct(m["final"][j]) for m in data["methods"])
        rows.append(f"| {task} | {pct(majority.get(task))} | {scores} |")
    return rows


def unlearned(data: dict) -> list[str]:
    """The tasks no method scored above their majority label's share (to the table's 0.1 point)."""
    majority = data.get("majority", {})
    names = [
        task
        for j, task in enumerate(data["tasks"])
        if task in majority
        and data["methods"]
        and all(round(m["final"][j] - majority[task], 3) <= 0 for m in data["methods"])
    ]
    return [f"No method scored above the majority label's share on: {', '.join(names)}.", ""] if names else []


def order_check(per_order: dict[int, dict]) -> list[str]:
    """For the order-free methods that ran on several orders (a prefix of one is enough): the
    largest difference of a task's score right after it was learned, same seed against same seed,
    which for these methods is its score after the last task too (BWT 0)."""
    lines = []
    for label in ORDER_FREE:
        by_task: dict[tuple[str, int], list[float]] = {}
        for data in per_order.values():
            m = next((m for m in data["methods"] if m["label"] == label), None)
            for run in m["runs"] if m else []:
                for task, value in zip(data["tasks"], run["learned"], strict=True):
                    if value is not None:
                        by_task.setdefault((task, run["seed"]), []).append(value)
        shared = {key: values for key, values in by_task.items() if len(values) > 1}
        if shared:
            gap = max(max(v) - min(v) for v in shared.values())
            tasks = len({task for task, _ in shared})
            lines.append(
                f"- `{label}`: {tasks} tasks ran in more than one order with the same seed; the largest "
                f"difference of a task's score between orders is {100 * gap:.2f} points."
            )
    return lines


def what_ran(per_order: dict[int, dict]) -> list[str]:
    """Per order and method: the seeds, how many tasks each run holds and the audit's verdict as the
    run folder recorded it (runs made before folders kept it: bench/results/long_runs.md)."""
    lines = []
    for order, data in sorted(per_order.items()):
        for m in data["methods"]:
            failed = " (expected: one shared encoder)" if m["method"] in SHARED_METHODS else ""
            unaudited = ", trained jointly (no stream, nothing to audit)" if not is_continual(m) else ""
            verdicts = {True: ", audit passed", False: f", audit failed{failed}", None: unaudited}
            runs = [(r["seed"], len(r["tasks"]), verdicts[r.get("audit_ok")]) for r in m["runs"]]
            runs += [(u["seed"], u["tasks"], " so far (not in the table)") for u in m.get("unfinished", [])]
            done = ", ".join(f"seed {seed}: {n}/{len(data['tasks'])} tasks{late}" for seed, n, late in runs)
            lines.append(f"- order {order}, `{m['label']}` (lr {m['lr']:g}): {done}")
    return ["## What ran", "", *lines, ""]
