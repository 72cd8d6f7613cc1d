"""The multitask upper bound (`mtl`) in a scenario: run beside adapters, compared without BWT, resumed
by skipping, and the method settings (`MethodOptions`) a scenario may give each method."""

from __future__ import annotations

import json

import pytest
import yaml

from continual_adapters.core.config import MethodOptions
from continual_adapters.core.errors import ConfigError
from continual_adapters.report.comparison import compare
from continual_adapters.report.comparison_doc import findings, format_comparison, write_comparison_plots
from continual_adapters.stream.multitask import RESULT
from continual_adapters.stream.scenario import FINAL_CORRECT, MethodSettings, load_scenario, run_scenario

TASKS = ["sst2", "trec"]


@pytest.fixture(scope="module")
def mtl_run(tmp_path_factory, tiny_encoder_dir):
    from tests.support.paths import DATA_DIR

    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    root = tmp_path_factory.mktemp("mtl")
    path = root / "mtl.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "mtl-tiny",
                "encoder": tiny_encoder_dir,
                "seeds": [0],
                "train": {"epochs": 2, "batch_size": 8, "max_length": 32},
                "data": {"max_train": 24, "max_eval": 16},
                "methods": {"adapters": {"adapter_size": 8}, "mtl": {"lr": 1.0e-3}},
                "tasks": [{"name": name, "data": name} for name in TASKS],
            }
        )
    )
    scenario = load_scenario(path, DATA_DIR)
    out = root / "out"
    lines: list[str] = []
    audits = run_scenario(scenario, out, progress=False, log=lines.append)
    return {"scenario": scenario, "out": out, "log": lines, "audits": audits}


def test_mtl_writes_its_result_and_per_example_correctness(mtl_run):
    folder = mtl_run["out"] / "mtl" / "seed0"
    assert not (folder / "registry.db").exists()  # not a continual method: no registry, no audit
    assert set(mtl_run["audits"]) == {("adapters", 0)}
    result = json.loads((folder / RESULT).read_text())
    assert result["method"] == "mtl" and result["continual"] is False and result["tasks"] == TASKS
    assert set(result["scores"]) == set(TASKS) and result["primary_metrics"] == dict.fromkeys(TASKS, "accuracy")
    assert result["final"] == {name: result["scores"][name]["accuracy"] for name in TASKS}
    assert result["acc"] == pytest.approx(sum(result["final"].values()) / 2)
    assert result["eval_splits"] == dict.fromkeys(TASKS, "test") and result["eval_sizes"] == dict.fromkeys(TASKS, 16)
    assert result["train_seconds"] > 0 and result["eval_seconds"] > 0
    params = result["parameters"]
    assert params["stored"] == params["trained"] == params["encoder"] + sum(params["heads"].values())
    assert params["encoder"] == params["base"] and params["stored_bytes"] == 4 * params["stored"]
    assert params["heads"]["sst2"] == 32 * 2 + 2  # tiny encoder: hidden size 32
    correct = json.loads((folder / FINAL_CORRECT).read_text())["tasks"]
    assert set(correct) == set(TASKS) and all(len(v) == 16 and set(v) <= {"0", "1"} for v in correct.values())
    assert correct["sst2"].count("1") / 16 == pytest.approx(result["final"]["sst2"])
    assert "[mtl seed 0] training 2 tasks jointly (" in "\n".join(mtl_run["log"])


def test_comparison_gives_mtl_a_row_with_acc_and_no_bwt(mtl_run, tmp_path):
    data = compare(mtl_run["scenario"], mtl_run["out"], mtl_run["audits"])
    rows = {m["label"]: m for m in data["methods"]}
    mtl, adapters = rows["mtl"], rows["adapters"]
    assert mtl["continual"] is False and adapters["continual"] is True
    assert mtl["metrics"]["acc"] is not None and 0 <= mtl["metrics"]["acc"] <= 1
    assert mtl["metrics"]["bwt"] is None and mtl["metrics"]["forgetting"] is None
    low, high = mtl["acc_ci95"]
    assert low <= mtl["metrics"]["acc"] <= high
    assert mtl["trained_percent"] > 100 and mtl["total_multiple"] > 1 and mtl["train_seconds"] > 0
    assert mtl["complete"] and mtl["seeds"] == [0] and mtl["audit_ok"] == [None]
    assert adapters["metrics"]["bwt"] == 0.0 and adapters["audit_ok"] == [True]
    assert all(d["first"] != "mtl" and d["second"] != "mtl" for d in data["differences"])

    text = format_comparison(data)
    metrics_row = next(line for line in text.splitlines() if line.startswith("| mtl (upper bound") and "n/a" in line)
    assert "| n/a | n/a | n/a |" in metrics_row
    assert "| adapters | 1 |" in text and "| adapters (upper bound" not in text
    mtl_findings = [line for line in findings(data) if "`mtl`" in line]
    assert len(mtl_findings) == 1 and "not a continual method" in mtl_findings[0]
    assert all("`mtl`" not in line for line in findings(data) if "adapters" in line)
    plots = write_comparison_plots(data, tmp_path / "figures")
    assert any(p.endswith("scores_by_method.png") for p in plots)
    assert not any(p.endswith("R_mtl.png") for p in plots) and any(p.endswith("R_adapters.png") for p in plots)


def test_a_finished_mtl_run_is_skipped(mtl_run):
    result = mtl_run["out"] / "mtl" / "seed0" / RESULT
    before = (result.stat().st_mtime_ns, result.read_bytes())
    lines: list[str] = []
    run_scenario(mtl_run["scenario"], mtl_run["out"], methods=["mtl"], progress=False, log=lines.append)
    assert any("[mtl seed 0] skip" in line for line in lines)
    assert not any("training" in line for line in lines)
    assert (result.stat().st_mtime_ns, result.read_bytes()) == before


def test_mtl_keeps_no_registry(mtl_run, tmp_path):
    with pytest.raises(ConfigError, match="keeps no registry"):
        run_scenario(mtl_run["scenario"], tmp_path, methods=["mtl"], registry=str(tmp_path / "registry.db"))


@pytest.mark.parametrize(
    "label,values,message",
    [
        ("adapters", {"replay_size": 10}, "belong to another method than"),
        ("replay", {"replay_size": -5}, "replay size"),
        ("replay", {"replay_size": 0}, "replay size"),
        ("replay", {"replay_size": 2.5}, "replay size"),
        ("ewc", {"lwf_weight": 1.0}, "belong to another method than"),
        ("mtl", {"ewc_lambda": 10.0}, "belong to another method than"),
        ("mtl", {"adapter_size": 8}, "adapter_size"),
        ("ewc", {"ewc_lambda": "1e4"}, "must be a number"),
        ("ewc", {"ewc_decay": 0.0}, "decay"),
        ("lwf", {"lwf_temperature": 0}, "temperature"),
        ("lora", {"lora_rank": 0}, "rank"),
        ("adapters", {"bogus": 1}, "unknown settings"),
        ("nonsense", {}, "unknown method"),
    ],
)
def test_method_settings_refuse_what_does_not_belong_or_is_invalid(label, values, message):
    with pytest.raises(ConfigError, match=message):
        MethodSettings.parse(label, values)


def test_method_settings_carry_each_methods_own_options():
    assert MethodSettings.parse("mtl", {"lr": 1e-4}).method == "mtl"
    replay = MethodSettings.parse("replay-500", {"method": "replay", "replay_size": 500})
    assert replay.options() == MethodOptions(replay_size=500)
    ewc = MethodSettings.parse("ewc", {"ewc_lambda": 100, "ewc_decay": 0.9})
    assert ewc.options().ewc_lambda == 100.0 and isinstance(ewc.options().ewc_lambda, float)
    assert ewc.options().for_method("ewc") == {"ewc_lambda": 100.0, "ewc_decay": 0.9}
    lwf = MethodSettings.parse("lwf", {"lwf_temperature": 1.5, "lwf_weight": 0.5})
    assert (lwf.options().lwf_temperature, lwf.options().lwf_weight) == (1.5, 0.5)
    assert MethodSettings.parse("lora", {"lora_rank": 8}).options().lora().rank == 8
    assert MethodSettings.parse("adapters", {}).options() == MethodOptions()
