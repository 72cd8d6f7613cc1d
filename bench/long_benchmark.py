"""docs/long_benchmark.md, generated from the Long Sequence Benchmark's run records.

The runs (RUNS below; up to hours each on 2 CPU cores; resumable: rerun the same command after an
interruption), then their records (bench/long_records.py: a few kilobytes per run, committed,
since the run folders are not), then the document, from whatever records exist (a method whose
runs have not finished is left out of the tables, and said so):

    python bench/long_benchmark.py --runs runs --out docs/long_benchmark.md --plots docs/figures/long

`--runs` refreshes the records from the run folders present first; without it the document is
rendered from the committed records alone. Every number is rebuilt from the records by
`finished_row()` (report/comparison.py), as `cadapt compare` builds it from run folders; the
published rows are Wang et al. 2023 (O-LoRA), Table 1, quoted with their source.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from continual_adapters.report.comparison import finished_row
from continual_adapters.report.comparison_doc import pct, write_comparison_plots
from continual_adapters.report.run_record import read_run_record
from continual_adapters.stream.scenario import Scenario

# long_tables.py (the document's tables) and long_records.py lie beside this file, however it is loaded.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_records import IDENTIFIABLE, RECORDS, ROOT, long_scenario, record_runs  # noqa: E402
from long_tables import (  # noqa: E402
    ORDERS,
    finished,
    method_rows,
    order_check,
    per_task_rows,
    unlearned,
    what_ran,
)

#: Wang et al. 2023 (O-LoRA), Table 1: T5-large, 15 tasks, average accuracy after the last task,
#: averaged over orders 4-6.
PUBLISHED = {
    "source": "Wang et al. 2023 (O-LoRA), Table 1: T5-large (770M), 15 tasks, mean over orders 4-6",
    "rows": [
        ("per-task fine-tuning", 78.1),
        ("ProgPrompt", 77.9),
        ("multitask (upper bound)", 76.5),
        ("O-LoRA", 69.6),
        ("LFPT5", 69.2),
        ("L2P", 56.1),
        ("replay", 54.2),
        ("LwF", 46.9),
        ("EWC", 45.1),
        ("sequential fine-tuning", 7.4),
        ("sequential LoRA", 1.6),
    ],
}
LR_GRID = ROOT / "bench" / "results" / "lr_grid_long.json"
#: The grid the 2-core budget allows (issue 17): the order-free methods on one order with three
#: seeds plus a prefix of a second order; the order-dependent ones on every order.
RUNS = (
    "cadapt run-scenario scenarios/long_order4.yaml --methods adapters,full --seeds 0,1,2 --out runs/long_order4",
    "cadapt run-scenario scenarios/long_order4.yaml --methods lora,mtl --out runs/long_order4",
    "cadapt run-scenario scenarios/long_order5.yaml --methods adapters --first 4 --out runs/long_order5",
    *(
        f"cadapt run-scenario scenarios/long_order{o}.yaml --methods naive,ewc,replay,lwf --out runs/long_order{o}"
        for o in ORDERS
    ),
)


def identification_rows(per_order: dict[int, dict]) -> list[str]:
    """ACC with the task given and unknown, and task-id accuracy, per identifiable run (gather()'s
    `identified`)."""
    rows = []
    for order, data in sorted(per_order.items()):
        for m in data["methods"]:
            if m["method"] not in IDENTIFIABLE or not m["complete"]:
                continue
            for seed in m["seeds"]:
                found = m.get("identified", {}).get(seed)
                if found:
                    rows.append(
                        f"| {m['label']} | {order} | {seed} | {pct(found['acc_task_given'])} | "
                        f"{pct(found['acc_task_unknown'])} | {pct(found['task_id_accuracy'])} |"
                    )
    if not rows:
        return []
    return [
        "## With the task unknown",
        "",
        "O-LoRA and L2P see no task id at test time. Here each test example's task is identified from the",
        "frozen base encoder's features (the Mahalanobis router of `--task auto`, from each task's training",
        "statistics) and a wrongly identified example counts as wrong.",
        "",
        "| method | order | seed | ACC, task given | ACC, task unknown | task-id accuracy |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def gather(records: Path = RECORDS, scenario_of: Callable[[int], Scenario] = long_scenario) -> dict[int, dict]:
    """Per order with records: its tasks, the majority label's share of each test set, and one row
    per method (`finished_row()` of its seeds' records, as compare_finished() makes it from run
    folders). A continual row also gets `eval_seconds` (its additions' wall time less training)
    and `identified` (seed -> the record's task-unknown scores, where a run has them)."""
    out = {}
    for order in ORDERS:
        loaded = [read_run_record(path) for path in sorted((records / f"long_order{order}").glob("*.json"))]
        if not loaded:
            continue
        scenario = scenario_of(order)
        methods = []
        for settings in scenario.methods:
            mine = {r["seed"]: r for r in loaded if r["label"] == settings.label}
            row = finished_row(settings, settings.lr or scenario.train.lr, {s: r["summary"] for s, r in mine.items()})
            if row is None:
                continue
            walls = [mine[seed]["wall_seconds"] for seed in row["seeds"]]
            if row.get("eval_seconds") is None and all(w is not None for w in walls):
                row["eval_seconds"] = statistics.fmean(walls) - row["train_seconds"]
            row["identified"] = {
                seed: mine[seed]["identification"] for seed in row["seeds"] if mine[seed].get("identification")
            }
            methods.append(row)
        data: dict = {"tasks": [t.name for t in scenario.tasks], "methods": methods}
        majority = next((r["majority"] for r in loaded if r.get("majority")), None)
        if majority:
            data["majority"] = majority
        out[order] = data
    return out


def protocol(grid_file: Path = LR_GRID) -> list[str]:
    """How the learning rates were chosen (bench/lr_grid.py's record), and the budget."""
    out = [
        "## Protocol",
        "",
        "Each method's learning rate was chosen on validation data only, never test: `bench/lr_grid.py` trains",
        "each (method, learning rate) of a small grid on each of the first four tasks of order 4 (mnli, cb,",
        "wic, copa) for one epoch and keeps the rate with the best mean validation accuracy; the whole stream",
        "of every order then runs at that rate. Naive sequential fine-tuning, EWC, replay, LwF and the",
        "multitask upper bound update the whole encoder as per-task full fine-tuning does and take its rate.",
        "",
    ]
    if grid_file.exists():
        grid = json.loads(grid_file.read_text())
        out += ["| method | mean validation accuracy per learning rate | chosen |", "|---|---|---|"]
        for method, row in grid["mean_validation_accuracy"].items():
            cells = ", ".join(f"{float(lr):g}: {pct(v)}" for lr, v in row.items())
            chosen = grid["chosen_lr"].get(method)
            out.append(f"| {method} | {cells} | {'–' if chosen is None else f'{chosen:g}'} |")
        out.append("")
    out += [
        "Budget: one epoch per task, batch 32, inputs cut at 256 tokens, AdamW with 10% linear warm-up then",
        "linear decay, on a 2-core CPU. The published runs also train one epoch per task, on T5-large at a",
        "constant learning rate (O-LoRA: LoRA rank 8, lr 1e-3). Test sets are full and scored once, after",
        "training; validation sets are only used to choose the learning rates above.",
        "",
    ]
    return out


MISSING = [
    "## Not measured",
    "",
    "- all-mpnet-base-v2 (110M): no GPU machine was available to these runs, and a 14-task stream per",
    "  method on a 2-core CPU is several times MiniLM's; its rows are missing.",
    "- Yahoo Answers, the benchmark's 15th task, could not be had offline.",
    "",
]


def render(
    per_order: dict[int, dict],
    command: str,
    figures: list[str] | None = None,
    identified: list[str] | None = None,
    notes: str | None = None,
) -> str:
    out = [
        "# The Long Sequence Benchmark with cadapt",
        "",
        "Generated, not written by hand. The runs (each resumes where it stopped when rerun), then this",
        "document, from the runs' records (`bench/results/long/`, a few kilobytes per run, committed as each",
        "run finishes; `--runs` refreshes them from the run folders first):",
        "",
        "```bash",
        *RUNS,
        command,
        "```",
        "",
        "## cadapt's rows (MiniLM-L6, 22.7M parameters, task id given)",
        "",
        "Average accuracy over the 14 tasks after the last task (×100), full test sets. The interval is a",
        "95% bootstrap over test examples for the first order that ran. Storage is what a run keeps on disk:",
        "every task's bundle, the frozen base excluded; naive, EWC, replay and LwF write the shared encoder",
        "into each task's bundle as it stood after that task, though serving needs only the last one.",
        "",
        *method_rows(per_order),
        "",
        f"## Published rows ({PUBLISHED['source']})",
        "",
        "| method | average accuracy |",
        "|---|---|",
        *[f"| {name} | {value:.1f} |" for name, value in PUBLISHED["rows"]],
        "",
        "What differs, plainly: 14 tasks, not 15 (Yahoo Answers could not be had offline); a 22.7M-parameter",
        "encoder with a classification head per task against a 770M-parameter generative model that writes",
        "label words; and cadapt's rows are given the task id, as the published per-task fine-tuning and",
        "ProgPrompt rows are, while O-LoRA and L2P are not. Compare the gaps between rows, not the absolute",
        "numbers across the two tables. The sequential rows differ most in kind: cadapt's naive, EWC, replay",
        "and LwF keep each earlier task's own head and are told which to use, while the published ones must",
        "still write the earlier tasks' label words from one generative model.",
        "",
        *protocol(),
        *what_ran(per_order),
    ]
    if notes:
        out += ["## How the runs were made (hand-written)", "", notes.strip(), ""]
    out += identified or []
    checks = order_check(per_order)
    if checks:
        out += ["## Order independence", "", *checks, ""]
    if per_order:
        first = min(per_order)
        table = per_task_rows(finished(per_order[first]))
        out += [f"## Per task after the last task (order {first}, ×100)", "", *table, ""]
        out += ["The majority label's share is what answering that one label for every test example scores.", ""]
        out += unlearned(finished(per_order[first]))
    if figures:
        out += ["## Figures", "", *[f"![{Path(p).stem}]({p})" for p in figures], ""]
    out += MISSING
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=None, help="Refresh the records from this folder's runs first.")
    parser.add_argument("--records", default=str(RECORDS.relative_to(ROOT)))
    parser.add_argument("--out", default="docs/long_benchmark.md")
    parser.add_argument("--plots", default=None, help="Folder for the R heatmaps and growth plot of the first order.")
    parser.add_argument("--notes", default=None, help="A hand-written Markdown file on how the runs were made.")
    args = parser.parse_args()
    if args.runs:
        for path in record_runs(Path(args.runs), Path(args.records)):
            print(f"recorded {path}")
    per_order = gather(Path(args.records))
    if not per_order:
        raise SystemExit(f"no run record under {args.records}")
    first = finished(per_order[min(per_order)])
    figures = write_comparison_plots(first, args.plots, link_from=args.out) if args.plots else None
    command = (
        "python bench/long_benchmark.py"
        + (f" --runs {args.runs}" if args.runs else "")
        + (f" --records {args.records}" if Path(args.records).resolve() != RECORDS else "")
        + f" --out {args.out}"
        + (f" --plots {args.plots}" if args.plots else "")
        + (f" --notes {args.notes}" if args.notes else "")
    )
    notes = Path(args.notes).read_text() if args.notes else None
    Path(args.out).write_text(render(per_order, command, figures, identification_rows(per_order), notes))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
