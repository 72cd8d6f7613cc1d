"""bench/long_benchmark.py renders docs/long_benchmark.md from compare() outputs: checked on
hand-made outputs whose rows are known (the real runs take hours)."""

from __future__ import annotations

import importlib.util
import json

from continual_adapters.core.config import TrainConfig
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry import Registry
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.scenario import write_final_correct
from tests.support.paths import ROOT


def module():
    spec = importlib.util.spec_from_file_location("long_benchmark", ROOT / "bench" / "long_benchmark.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def method(label, final, acc_std=None, seeds=(0,), ci=None, bwt=0.0):
    return {
        "label": label,
        "complete": True,
        "final": final,
        "seeds": list(seeds),
        "acc_std": acc_std,
        "acc_ci95": ci,
        "metrics": {"acc": sum(final) / len(final), "bwt": bwt, "forgetting": -bwt},
        "trained_percent": 2.7 if label == "adapters" else 100.0,
        "train_seconds": 7200.0,
    }


def test_rows_published_table_order_check_and_per_task():
    bench = module()
    order4 = {
        "tasks": ["mnli", "cb", "wic"],
        "methods": [
            method("adapters", [0.7, 0.8, 0.6], acc_std=0.01, seeds=(0, 1, 2), ci=(0.68, 0.72)),
            method("naive", [0.1, 0.2, 0.6], bwt=-0.4),
        ],
    }
    order5 = {
        "tasks": ["wic", "mnli", "cb"],
        "methods": [method("adapters", [0.6, 0.7, 0.8]), method("naive", [0.5, 0.3, 0.4], bwt=-0.2)],
    }
    text = bench.render({4: order4, 5: order5}, "python bench/long_benchmark.py")
    assert "| adapters | 70.0 (3 seeds ± 1.0) | 70.0 | not run | **70.0** ± 0.0 | [68.0, 72.0] |" in text
    naive = next(line for line in text.splitlines() if line.startswith("| naive |"))
    assert "| 30.0 | 40.0 | not run | **35.0** ± 7.1 |" in naive and "-0.4000" in naive
    assert "| O-LoRA | 69.6 |" in text and "| sequential fine-tuning | 7.4 |" in text
    assert "`adapters`: 3 tasks ran in more than one order; the largest difference" in text
    assert "is 0.00 points" in text and "`naive`" not in text.split("## Order independence")[1].split("##")[0]
    assert "| cb | 80.0 | 20.0 |" in text, "per-task table of the first order"
    assert "14 tasks, not 15" in text


def test_task_unknown_scores_are_measured_once_and_cached(tmp_path, data_dir, tiny_encoder_dir):
    """On a tiny finished adapters run: task-id accuracy over every test example, ACC with the task
    unknown never above ACC with the task given, and a second call reads the cache."""
    bench = module()
    run = tmp_path / "long_order4" / "adapters" / "seed0"
    run.mkdir(parents=True)
    registry = Registry(run / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    for name in ("sst2", "trec"):
        spec = DataSpec.from_folder(data_dir / name, max_train=32, max_eval=20)
        runner.add_task(name, spec, train=TrainConfig(epochs=1, batch_size=16, max_length=32))
    write_final_correct(run, audit(runner))
    registry.close()
    found = bench.identify(run)
    assert found is not None and set(found["tasks"]) == {"sst2", "trec"}
    assert all(t["examples"] == 20 for t in found["tasks"].values())
    assert 0 <= found["acc_task_unknown"] <= found["acc_task_given"] <= 1 and 0 <= found["task_id_accuracy"] <= 1
    assert json.loads((run / bench.IDENTIFICATION).read_text()) == found
    (run / "registry.db").unlink()  # the cache answers: nothing is recomputed
    assert bench.identify(run) == found
    data = {"tasks": ["sst2", "trec"], "methods": [{**method("adapters", [0.5, 0.5]), "method": "adapters"}]}
    rows = bench.identification_rows(tmp_path, {4: data})
    assert rows[0] == "## With the task unknown" and rows[-2].startswith("| adapters | 4 | 0 |")
