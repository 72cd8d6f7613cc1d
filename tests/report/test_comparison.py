"""The method comparison read back from the smoke scenario's registries, checked against R itself."""

import json
import shutil
import statistics

from continual_adapters.registry.registry import Registry
from continual_adapters.report.comparison import PAPER, compare, compare_finished, seeds_on_disk
from continual_adapters.report.comparison_doc import findings, format_comparison
from continual_adapters.stream.scenario import FINAL_CORRECT, load_scenario
from tests.support.cli import cli_ok
from tests.support.paths import DATA_DIR, ROOT


def test_figures_come_from_the_registries(smoke_run):
    out = smoke_run["out"]
    data = compare(load_scenario(ROOT / "scenarios" / "smoke.yaml"), out)
    for method in data["methods"]:
        registry = Registry(out / method["label"] / "seed0" / "registry.db")
        _, R = registry.accuracy_matrix()
        assert method["final"] == R[-1]
        assert method["learned"] == [R[i][i] for i in range(len(R))]
        assert method["metrics"]["acc"] == statistics.fmean(R[-1])
        base = registry.base_model().num_parameters
        added = sum(registry.bundle(t.name).param_counts["total"] for t in registry.tasks())
        assert method["total_multiple"] == (base + added) / base
    by_label = {m["label"]: m for m in data["methods"]}
    assert by_label["adapters"]["metrics"]["bwt"] == 0.0
    assert by_label["naive"]["trained_percent"] > 99 and by_label["adapters"]["trained_percent"] < 3
    assert by_label["adapters"]["runs"][0]["adapter_sizes"] == {"sst2": 64, "trec": 64, "emotion": 64}
    assert by_label["ln-only"]["runs"][0]["adapter_sizes"] == {"sst2": 0, "trec": 0, "emotion": 0}
    assert all(v is not None and 0 <= v <= 1 for m in data["methods"] for v in m["validation"])
    for method in data["methods"]:  # every smoke task is scored by accuracy, so each ACC has its interval
        low, high = method["acc_ci95"]
        assert low <= method["metrics"]["acc"] <= high and high - low > 0
    # No verdicts handed in: each finished run's own, as its folder recorded it after its audit.
    verdicts = {m["label"]: [r["audit_ok"] for r in m["runs"]] for m in data["methods"]}
    assert verdicts["adapters"] == [True] and verdicts["naive"] == [False]
    assert [(d["first"], d["second"]) for d in data["differences"]] == [("adapters", "naive")]
    gap = data["differences"][0]
    assert gap["ci95"][0] <= gap["acc_difference"] <= gap["ci95"][1]


def test_document_has_both_tables_the_paper_and_findings(smoke_run):
    text = (smoke_run["out"] / "results.md").read_text()
    assert "cadapt run-scenario" in text and "## Findings" in text
    assert all(f"| {row['method']} | {row['average']:.1f} |" in text for row in PAPER["rows"])
    assert "exactly zero" in text and "## Validation score per task, where model selection looks" in text
    for line in text.splitlines():
        if line.startswith("![") and "](" in line:
            assert (smoke_run["out"] / line.split("](")[1].rstrip(")")).is_file()


def test_findings_flag_nonzero_bwt_for_isolating_methods():
    data = {
        "methods": [
            {"label": "adapters", "method": "adapters", "metrics": {"bwt": -0.01, "acc": 0.8}, "trained_percent": 2.6},
            {"label": "full", "method": "full", "metrics": {"bwt": 0.0, "acc": 0.83}, "trained_percent": 100.0},
            {"label": "lora", "method": "lora", "metrics": {"bwt": 0.0, "acc": 0.8}, "trained_percent": 2.6},
        ]
    }
    lines = findings(data)
    assert "NOT zero" in lines[0] and "exactly zero" in lines[1]
    assert lines[2].startswith("`lora`: BWT +0.0000") and "exactly zero" in lines[2], "LoRA isolates too"
    assert "no difference is claimed" in lines[3] and "trail" not in lines[3]


def test_findings_claim_a_difference_only_outside_its_interval():
    """The generated line may say lead or trail only when the paired interval excludes zero."""
    methods = [
        {"label": "adapters", "method": "adapters", "metrics": {"bwt": 0.0, "acc": 0.8}, "trained_percent": 2.6},
        {"label": "full", "method": "full", "metrics": {"bwt": 0.0, "acc": 0.83}, "trained_percent": 100.0},
    ]
    inside = {"first": "adapters", "second": "full", "acc_difference": -0.03, "ci95": [-0.07, 0.01]}
    line = findings({"methods": methods, "differences": [inside]})[-1]
    assert "includes zero" in line and "show no difference" in line and "-3.0 points" in line
    assert "trail" not in line and "lead" not in line
    outside = dict(inside, ci95=[-0.05, -0.01])
    assert (
        "`adapters` trail by -3.0 points, 95% interval [-5.0, -1.0]"
        in findings({"methods": methods, "differences": [outside]})[-1]
    )


def test_findings_name_the_sizes_auto_picked():
    data = {
        "methods": [
            {
                "label": "adapters-auto",
                "method": "adapters",
                "adapter_size": "auto",
                "metrics": {"bwt": 0.0, "acc": 0.8},
                "trained_percent": 5.0,
                "runs": [{"adapter_sizes": {"sst2": 64, "trec": 256}}],
            }
        ]
    }
    assert findings(data)[1] == "`adapters-auto` picked, on each task's validation split: sst2 64, trec 256."


def test_format_marks_incomplete_runs():
    data = {
        "scenario": "s",
        "description": "",
        "notes": "",
        "tasks": ["a", "b"],
        "caps": {"a": {"max_train": 1, "max_eval": 2}},
        "train": {"epochs": 1, "batch_size": 32, "max_length": 64},
        "encoder": None,
        "paper": PAPER,
        "methods": [
            {
                "label": "adapters",
                "method": "adapters",
                "complete": False,
                "final": [0.5, None],
                "learned": [0.5, None],
                "metrics": {"acc": 0.5, "bwt": None, "forgetting": None, "learning_accuracy": 0.5},
                "trained_percent": 2.0,
                "total_multiple": 1.02,
                "audit_ok": [None],
                "train_seconds": 3.0,
            }
        ],
    }
    text = format_comparison(data)
    assert "| adapters (incomplete) | 50.0 | – |" in text
    assert "## Findings" not in text  # nothing to state from an unfinished one-method run


def test_compare_finished_averages_finished_seeds_and_lists_the_rest(smoke_run, tmp_path):
    """Runs made a seed at a time: the row averages the finished seeds only, whatever seeds the
    scenario file names; a run cut off after its first task is listed, not averaged in; a method
    with no finished seed shows its run so far."""
    smoke = ROOT / "scenarios" / "smoke.yaml"
    for seed in (0, 4):
        shutil.copytree(smoke_run["out"] / "adapters" / "seed0", tmp_path / "adapters" / f"seed{seed}")
    cli_ok(
        "run-scenario", smoke, "--methods", "adapters,naive", "--seeds", "7", "--first", "1",
        "--out", tmp_path, "--data-dir", DATA_DIR, "--quiet",
    )  # fmt: skip
    (tmp_path / "adapters" / "notes").mkdir()  # not a seed folder
    recorded = tmp_path / "adapters" / "seed4" / FINAL_CORRECT  # its audit covered a prefix only
    stored = json.loads(recorded.read_text())
    assert stored["audit"] == {"ok": True, "tasks": ["sst2", "trec", "emotion"]}
    recorded.write_text(json.dumps({**stored, "audit": {"ok": True, "tasks": ["sst2"]}}))
    assert seeds_on_disk(tmp_path, "adapters") == (0, 4, 7) and seeds_on_disk(tmp_path, "ln-only") == ()
    data = compare_finished(load_scenario(smoke), tmp_path)
    rows = {m["label"]: m for m in data["methods"]}
    assert set(rows) == {"adapters", "naive"} and data["differences"] == []
    full = next(m for m in compare(load_scenario(smoke), smoke_run["out"])["methods"] if m["label"] == "adapters")
    adapters = rows["adapters"]
    assert adapters["seeds"] == [0, 4] and adapters["complete"] and adapters["acc_std"] == 0.0
    assert adapters["final"] == full["final"] and adapters["metrics"]["acc"] == full["metrics"]["acc"]
    assert adapters["unfinished"] == [{"seed": 7, "tasks": 1}]
    assert [r["audit_ok"] for r in adapters["runs"]] == [True, None], "a stale verdict is not this run's"
    naive = rows["naive"]
    assert naive["seeds"] == [7] and not naive["complete"] and naive["unfinished"] == []
    assert naive["runs"][0]["tasks"] == ["sst2"] and naive["runs"][0]["audit_ok"] is None, "its audit was of 1 task"
