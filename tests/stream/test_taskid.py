"""Task identification: centroid arithmetic, storage beside the registry, accuracy on a real stream."""

import json

import torch

from continual_adapters.core.config import TrainConfig
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.taskid import TaskIdentifier, centroid_path, centroids, identifier
from tests.support.cli import cli_ok


def test_centroids_are_unit_means_per_label_in_sorted_order():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 2.0]])
    got = centroids(features, ["b", "a", "b", "a"])
    assert torch.allclose(got[0], torch.tensor([0.0, 1.0]))  # label a: mean (0, 1.5)
    assert torch.allclose(got[1], torch.tensor([4.0, 4.0]) / 32**0.5)  # label b: mean (2, 2)


def test_nearest_centroid_of_any_label_names_the_task():
    ident = TaskIdentifier({"one": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "two": torch.tensor([[-1.0, 0.0]])})
    assert ident.predict(torch.tensor([[0.1, 0.9], [-0.8, 0.1], [0.9, -0.1]])) == ["one", "two", "one"]


def test_adding_a_task_leaves_earlier_centroids_alone_and_stale_files_are_rebuilt(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    config = TrainConfig(epochs=1, batch_size=16)
    runner.add_task("sst2", DataSpec.from_folder(data_dir / "sst2", max_train=48, max_eval=32), train=config)
    first = centroid_path(registry, "sst2").read_bytes()
    trec = DataSpec.from_folder(data_dir / "trec", max_train=48, max_eval=32)
    runner.add_task("trec", trec, train=config)
    assert centroid_path(registry, "sst2").read_bytes() == first
    from continual_adapters.data.taskdata import load_task_data

    assert identifier(registry, runner.model).tasks["trec"].shape == (len(set(load_task_data(trec).train.labels)), 32)
    centroid_path(registry, "sst2").write_bytes(b"garbage")
    rebuilt = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    assert torch.equal(
        identifier(registry, rebuilt.model).tasks["sst2"], identifier(registry, runner.model).tasks["sst2"]
    )
    assert centroid_path(registry, "sst2").read_bytes() == first


def test_task_identification_on_the_real_stream_is_well_above_chance(stream):
    data = json.loads(cli_ok("--registry", stream["url"], "report", "--task-id", "--json").output)
    ident = data["task_identification"]
    assert ident["chance"] == 1 / 3
    assert ident["task_id_accuracy"] > 0.8
    for row in ident["tasks"]:
        assert row["accuracy_predicted_task"] <= row["accuracy_given_task"]
    markdown = cli_ok("--registry", stream["url"], "report", "--task-id").output
    assert "## Task-agnostic inference" in markdown


def test_predict_auto_routes_each_input_to_a_task(stream):
    out = cli_ok(
        "--registry",
        stream["url"],
        "predict",
        "--task",
        "auto",
        "--json",
        "What is the capital of Peru ?",
        "a dull , lifeless movie",
    ).output
    tasks = [json.loads(line)["task"] for line in out.splitlines()]
    assert tasks == ["trec", "sst2"]
