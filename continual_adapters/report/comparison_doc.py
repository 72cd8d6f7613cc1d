"""The comparison document: findings stated from the numbers, the Markdown tables and the plots.

`comparison.py` gathers a scenario's rows from its registries; this module only renders them, so
the document can be regenerated from the run folder at any time.
"""

from __future__ import annotations

from pathlib import Path

from continual_adapters.core.config import METHODS, MULTITASK, SHARED_METHODS
from continual_adapters.metrics.bootstrap import LEVEL
from continual_adapters.report.comparison import UPPER_BOUND, mean_present

#: The methods that never touch an earlier task's weights (their own modules or copies on a frozen
#: base), so their BWT must be exactly zero.
ISOLATED = tuple(m for m in METHODS if m not in SHARED_METHODS)

#: What each shared-encoder method does about the drift its BWT measures (findings).
SHARED_NOTES = {
    "naive": "sequential fine-tuning of the shared encoder overwrites earlier tasks.",
    "ewc": "the Fisher-weighted penalty slows the shared encoder's drift; it does not stop it.",
    "replay": "rehearsing the stored examples slows the shared encoder's drift; it does not stop it.",
    "lwf": "distilling the earlier heads slows the shared encoder's drift; it does not stop it.",
}


def pct(value: float | None) -> str:
    """A fraction as the documents print it (×100, one decimal); a dash where there is none."""
    return "–" if value is None else f"{100 * value:.1f}"


def _megabytes(method: dict) -> str:
    if method.get("bytes") is None:
        return "–"
    return f"{(method['bytes'] + (method.get('state_bytes') or 0)) / 1e6:.1f}"


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
                f"({UPPER_BOUND}: no order, so no BWT or forgetting): ACC {pct(m['metrics']['acc'])}"
                + (f", 95% interval [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")
                + "."
            )
            continue
        bwt = m["metrics"]["bwt"]
        if m["method"] in ISOLATED and bwt is not None:
            lines.append(
                f"`{m['label']}`: BWT {bwt:+.4f} — "
                + ("exactly zero, as isolation guarantees." if bwt == 0 else "NOT zero: investigate.")
            )
        if m["method"] in SHARED_METHODS and bwt is not None:
            lines.append(
                f"`{m['label']}`: BWT {bwt:+.4f}, forgetting {m['metrics']['forgetting']:.4f} — "
                + SHARED_NOTES.get(m["method"], "")
                + " Its audit fails the 'unchanged' check by the method's nature (one shared encoder), not by a fault."
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
            f"`adapters` average {pct(adapters['metrics']['acc'])} vs `full` {pct(full['metrics']['acc'])}, "
            f"with {adapters['trained_percent']:.2f}% vs {full['trained_percent']:.1f}% of the parameters "
            f"trained per task: {difference_verdict(data, 'adapters', 'full')}"
        )
    return lines


def difference_verdict(data: dict, first: str, second: str) -> str:
    """What may be said of first - second: a lead or a gap only when the paired bootstrap interval
    over test examples excludes zero; never a difference the interval does not show."""
    found = [d for d in data.get("differences", []) if (d["first"], d["second"]) == (first, second)]
    if not found:
        return (
            "no interval over test examples for these runs (it needs every task's per-example record "
            "and accuracy as every task's metric), so no difference is claimed."
        )
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
                key, mean_present(m.get(key, []))
            )
            out.append(
                f"| {_label(m)}{'' if m['complete'] else ' (incomplete)'} | "
                + " | ".join(pct(v) for v in m.get(key, [None] * len(names)))
                + f" | **{pct(average)}** | "
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
        "| method | seeds | ACC | 95% interval | BWT | forgetting | audit | train time (s) | storage (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in data["methods"]:
        audit = ", ".join("–" if a is None else ("pass" if a else "FAIL") for a in m["audit_ok"])
        spread = f" ± {100 * m['acc_std']:.1f}" if m.get("acc_std") is not None else ""
        ci = m.get("acc_ci95")
        interval = f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else "–"
        bwt, forgetting = _signed(m["metrics"]["bwt"]), _signed(m["metrics"]["forgetting"])
        if not is_continual(m):
            bwt = forgetting = audit = "n/a"
        out.append(
            f"| {_label(m)} | {len(m.get('seeds', []))} | {pct(m['metrics']['acc'])}{spread} | {interval} | "
            f"{bwt} | {forgetting} | {audit} | {m['train_seconds']:.0f} | {_megabytes(m)} |"
        )
    out += [
        "",
        "Storage is what the method keeps for the stream: every task's bundle (the frozen base excluded), "
        "plus the state a method carries from task to task (EWC's Fisher per task, replay's memory).",
    ]
    kept = [m for m in data["methods"] if m.get("replay_examples")]
    out += [
        f"`{m['label']}` keeps {m['replay_examples']:.0f} training examples of earlier tasks as text with their "
        "labels: a storage and a privacy cost that the parameter counts do not show."
        for m in kept
    ]
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
