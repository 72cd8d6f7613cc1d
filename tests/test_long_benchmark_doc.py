"""bench/long_benchmark.py renders docs/long_benchmark.md from compare() outputs: checked on
hand-made outputs whose rows are known (the real runs take hours)."""

from __future__ import annotations

import importlib.util
import json

from tests.support.paths import ROOT


def module():
    spec = importlib.util.spec_from_file_location("long_benchmark", ROOT / "bench" / "long_benchmark.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def method(
    label, final, acc_std=None, seeds=(0,), ci=None, bwt=0.0, tasks=None, spread=0.0, unfinished=(), audit_ok=None
):
    """A compare_finished() method entry; `tasks` < len(final) makes it an unfinished prefix run.
    Seed k's run learned each task `k * spread` higher than seed 0's; every run's audit verdict as
    its folder recorded it is `audit_ok`."""
    done = len(final) if tasks is None else tasks
    learned = final[:done] + [None] * (len(final) - done)
    return {
        "label": label,
        "method": label,
        "lr": 3e-3 if label == "adapters" else 1e-4,
        "complete": done == len(final),
        "final": final,
        "learned": learned,
        "seeds": list(seeds),
        "runs": [
            {
                "seed": s,
                "tasks": ["t"] * done,
                "learned": [None if v is None else v + s * spread for v in learned],
                "audit_ok": audit_ok,
            }
            for s in seeds
        ],
        "unfinished": [{"seed": s, "tasks": n} for s, n in unfinished],
        "acc_std": acc_std,
        "acc_ci95": ci,
        "metrics": {"acc": sum(final) / len(final), "bwt": bwt, "forgetting": None if bwt is None else -bwt},
        "trained_percent": 2.7 if label == "adapters" else 100.0,
        "total_multiple": 1.2 if label == "adapters" else 1.0,
        "bytes": 12.5e6,
        "train_seconds": 7200.0,
        "eval_seconds": 1800.0,
    }


def test_rows_published_table_order_check_and_per_task():
    bench = module()
    order4 = {
        "tasks": ["mnli", "cb", "wic"],
        "methods": [
            method(
                "adapters", [0.7, 0.8, 0.6], acc_std=0.01, seeds=(0, 1, 2), ci=(0.68, 0.72), spread=0.05, audit_ok=True
            ),
            method("naive", [0.1, 0.2, 0.6], bwt=-0.4, unfinished=[(1, 2)], audit_ok=False),
            method("mtl", [0.8, 0.9, 0.7], bwt=None),
            method("lora", [0.5, 0.0, 0.0], tasks=1),
        ],
    }
    order5 = {
        "tasks": ["wic", "mnli", "cb"],
        "methods": [method("adapters", [0.6, 0.7, 0.8]), method("naive", [0.5, 0.3, 0.4], bwt=-0.2)],
    }
    order6 = {
        "tasks": ["cb", "wic", "mnli"],
        "methods": [method("adapters", [0.75, 0.6, 0.0], tasks=2), method("lora", [0.5, 0.0, 0.0], tasks=1)],
    }
    order4["majority"] = {"mnli": 0.8, "cb": 0.5}  # wic's unknown: no test set could be read
    text = bench.render({4: order4, 5: order5, 6: order6}, "python bench/long_benchmark.py", notes="Resumed once.")
    adapters = next(line for line in text.splitlines() if line.startswith("| adapters |"))
    assert adapters.startswith(
        "| adapters | 70.0 (3 seeds ± 1.0) | 70.0 | 2 of 3 tasks (a prefix or a run not finished) | **70.0** ± 0.0 |"
    )
    assert "| [68.0, 72.0] | +0.0000 | 0.0000 | 2.70% | 1.20× | 12.5 | 2.00 | 0.50 |" in adapters
    naive = next(line for line in text.splitlines() if line.startswith("| naive |"))
    assert "| 30.0 | 40.0 | not run | **35.0** ± 7.1 |" in naive and "-0.4000" in naive
    mtl = next(line for line in text.splitlines() if line.startswith("| mtl |"))
    assert "| 80.0 | not run | not run | **80.0** |" in mtl and "n/a (upper bound, not continual)" in mtl
    assert "| O-LoRA | 69.6 |" in text and "| sequential fine-tuning | 7.4 |" in text
    # The order check reads the prefix of order 6 too: cb learned at 0.75 there, 0.8 in orders 4/5;
    # seed 2 of order 4 learned cb at 0.9, which is no order effect: seeds are compared with their own.
    checks = text.split("## Order independence")[1].split("##")[0]
    assert "`adapters`: 3 tasks ran in more than one order with the same seed" in checks
    assert "is 5.00 points" in checks
    assert "`naive`" not in checks
    assert "| cb | 50.0 | 80.0 | 20.0 | 90.0 |" in text, "per-task table of the first order"
    assert "| wic | – | 60.0 | 60.0 | 70.0 |" in text
    assert "No method scored above the majority label's share on: mnli.\n" in text, "mtl's 80.0 only equals it"
    assert "| task | majority label | adapters | naive | mtl |" in text, (
        "a run still going has no score after the last task"
    )
    assert "- order 6, `adapters` (lr 0.003): seed 0: 2/3 tasks" in text
    assert (
        "- order 4, `naive` (lr 0.0001): seed 0: 3/3 tasks, audit failed (expected: one shared encoder), "
        "seed 1: 2/3 tasks so far (not in the table)"
    ) in text
    passed = ", ".join(f"seed {s}: 3/3 tasks, audit passed" for s in (0, 1, 2))
    assert f"- order 4, `adapters` (lr 0.003): {passed}" in text, "each run's recorded verdict"
    assert "- order 5, `adapters` (lr 0.003): seed 0: 3/3 tasks\n" in text, "no verdict recorded: none claimed"
    assert "- order 4, `mtl` (lr 0.0001): seed 0: 3/3 tasks, trained jointly (no stream, nothing to audit)\n" in text
    assert "## How the runs were made (hand-written)\n\nResumed once." in text
    assert "14 tasks, not 15" in text and "all-mpnet-base-v2" in text.split("## Not measured")[1]
    table = [line for line in text.split("## cadapt's rows")[1].split("##")[0].splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1, "every row of the main table has the header's cells"
    partial = "1 of 3 tasks (a prefix or a run not finished)"
    assert f"| lora | {partial} | not run | {partial} | **–** |" in text
    assert "naive,ewc,replay,lwf --out runs/long_order6" in text.split("```")[1], "the run commands head the document"


def test_protocol_reads_the_learning_rate_grid(tmp_path):
    bench = module()
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps(
            {
                "mean_validation_accuracy": {"adapters": {"0.0003": 0.5, "0.003": 0.55}, "lora": {"0.001": 0.6}},
                "chosen_lr": {"adapters": 0.003},
            }
        )
    )
    lines = bench.protocol(grid)
    assert "| adapters | 0.0003: 50.0, 0.003: 55.0 | 0.003 |" in lines
    assert "| lora | 0.001: 60.0 | – |" in lines, "a grid not finished chooses nothing"
    assert any("never test" in line for line in lines)


def test_orders_not_yet_run_render_as_not_run():
    """Only order 4 has run folders: the other orders' cells say so instead of failing."""
    order4 = {
        "tasks": ["mnli", "cb"],
        "methods": [method("adapters", [0.7, 0.8]), method("naive", [0.1, 0.0], tasks=1)],
    }
    text = module().render({4: order4}, "python bench/long_benchmark.py")
    assert "| adapters | 75.0 | not run | not run | **75.0** |" in text
    assert "| naive | 1 of 2 tasks (a prefix or a run not finished) | not run | not run | **–** |" in text
