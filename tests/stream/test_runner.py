"""The sequential runner on real data and the real default encoder (see the `stream` fixture)."""

import json

import pytest
import torch

from continual_adapters.core.errors import DataError, TaskExistsError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from tests.support.cli import cli_ok
from tests.support.paths import DATA_DIR


def test_both_tasks_ready_and_accurate(stream):
    registry = Registry(stream["url"])
    tasks = registry.tasks()
    assert [(t.name, t.status, t.position) for t in tasks] == [
        ("sst2", "ready", 1),
        ("trec", "ready", 2),
        ("tweeteval_emotion", "ready", 3),
    ]
    sst2, trec, _ = stream["outputs"]
    assert sst2["scores"]["accuracy"] > 0.65  # chance is 0.5
    assert trec["scores"]["accuracy"] > 0.40  # six classes, majority class 0.23 on the test set


def test_accuracy_matrix_rows_and_exact_reevaluation(stream):
    names, R = Registry(stream["url"]).accuracy_matrix()
    assert names == ["sst2", "trec", "tweeteval_emotion"]
    assert R[0][1] is None and R[1][1] is not None
    assert R[2][0] == R[1][0] == R[0][0] and R[2][1] == R[1][1]
    evals = {(e.after_tasks, e.metric): e for e in Registry(stream["url"]).evaluations("sst2")}
    assert evals[(1, "accuracy")].predictions_sha256 == evals[(2, "accuracy")].predictions_sha256


def test_hash_proof_recorded(stream):
    registry = Registry(stream["url"])
    proof = registry.task("trec").proof
    assert proof["unchanged"] is True
    assert proof["before"] == proof["after"]
    assert proof["before"]["bundle_files"]["sst2"] == registry.bundle("sst2").sha256
    assert proof["before"]["base_sha256"] == registry.base_model().sha256


def test_earlier_task_logits_unchanged_by_training_a_second(stream):
    """Load the stream's model and compare sst2's golden logits, stored at registration, bit for bit."""
    registry = Registry(stream["url"])
    runner = Runner(registry, progress=False)
    evaluation = runner.evaluate_task("sst2")
    golden = torch.tensor(registry.task("sst2").proof["golden"]["logits"])
    assert torch.equal(evaluation.logits[: len(golden)], golden)


def test_show_prints_metrics_and_proof(stream):
    out = cli_ok("--registry", stream["url"], "show", "trec").output
    assert "after 2:" in out and "sst2 bundle" in out and "before == after: True" in out
    data = json.loads(cli_ok("--registry", stream["url"], "show", "sst2", "--json").output)
    assert [e["after_tasks"] for e in data["evaluations"] if e["metric"] == "accuracy"] == [1, 2, 3]


def test_json_output_has_metrics_and_parameter_counts(stream):
    out = stream["outputs"][2]
    assert set(out["scores"]) == {"accuracy", "macro_f1", "mcc"}
    counts = out["param_counts"]
    assert counts["adapter"] == 2 * 6 * (2 * 64 * 384 + 384 + 64)
    assert counts["total"] == counts["adapter"] + counts["layer_norm"] + counts["head"]
    assert out["confirmation"] == "probe" and out["reevaluated"] == {}
    assert out["probes"] == {"sst2": 0.0, "trec": 0.0}  # earlier outputs replayed bit for bit


def test_duplicate_name_via_api_is_rejected_before_any_work(stream):
    registry = Registry(stream["url"])
    before = registry.dump()
    spec = DataSpec.from_folder(DATA_DIR / "sst2", max_train=10)
    with pytest.raises(TaskExistsError):
        Runner(registry, progress=False).add_task("sst2", spec)
    assert registry.dump() == before


def test_carved_validation_is_recorded(tmp_path, data_dir):
    spec = DataSpec(train=str(data_dir / "trec" / "train.jsonl"), max_train=120)
    from continual_adapters.data.taskdata import load_task_data

    loaded = load_task_data(spec)
    assert loaded.validation.source["carved_from"] == "train"
    assert len(loaded.train) + len(loaded.validation) == 120
    assert loaded.eval_split == "validation"
    with pytest.raises(DataError):
        load_task_data(DataSpec(train=str(tmp_path / "missing.jsonl")))


def test_adapter_size_auto_tries_three_sizes_and_keeps_the_best(tmp_path, data_dir, tiny_encoder_dir):
    from continual_adapters.core.config import TrainConfig

    registry = Registry(tmp_path / "registry.db")
    spec = DataSpec.from_folder(data_dir / "sst2", max_train=64, max_eval=32)
    result = Runner(registry, encoder=tiny_encoder_dir, progress=False).add_task(
        "sst2", spec, train=TrainConfig(epochs=1, batch_size=16), auto_size=True
    )
    sizes = [row["bottleneck"] for row in result.size_search]
    assert sizes == [8, 64, 256]
    best = max(result.size_search, key=lambda row: row["validation_accuracy"])
    bundle = registry.bundle("sst2")
    assert bundle.config["task"]["adapter"]["bottleneck"] == best["bottleneck"]
    assert bundle.hyperparameters["size_search"] == result.size_search
    assert bundle.param_counts["adapter"] == 2 * 2 * (2 * best["bottleneck"] * 32 + 32 + best["bottleneck"])
    # the ledger charges the task for every size it tried, not only the one it kept
    assert all(row["wall_time_s"] > 0 for row in result.size_search)
    assert bundle.wall_time_s == pytest.approx(sum(row["wall_time_s"] for row in result.size_search))
