"""Task identification: centroid arithmetic, storage beside the registry, accuracy on a real stream."""

import json
import sqlite3

import pytest
import torch

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import IntegrityError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.taskid import (
    CENTROIDS_KIND,
    TaskIdentifier,
    centroid_bytes,
    centroids,
    identifier,
    parse_centroids,
)
from tests.support.cli import cli_ok


def test_centroids_are_unit_means_per_label_in_sorted_order():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 2.0]])
    got = centroids(features, ["b", "a", "b", "a"])
    assert torch.allclose(got[0], torch.tensor([0.0, 1.0]))  # label a: mean (0, 1.5)
    assert torch.allclose(got[1], torch.tensor([4.0, 4.0]) / 32**0.5)  # label b: mean (2, 2)


def test_nearest_centroid_of_any_label_names_the_task():
    ident = TaskIdentifier({"one": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "two": torch.tensor([[-1.0, 0.0]])})
    assert ident.predict(torch.tensor([[0.1, 0.9], [-0.8, 0.1], [0.9, -0.1]])) == ["one", "two", "one"]


def test_centroids_are_a_registered_artifact_checked_on_read_and_backfilled_once(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    config = TrainConfig(epochs=1, batch_size=16)
    runner.add_task("sst2", DataSpec.from_folder(data_dir / "sst2", max_train=48, max_eval=32), train=config)
    first = registry.artifact("sst2", CENTROIDS_KIND)
    assert first is not None and first.path.startswith("centroids/sst2-")
    trec = DataSpec.from_folder(data_dir / "trec", max_train=48, max_eval=32)
    runner.add_task("trec", trec, train=config)
    assert registry.artifact("sst2", CENTROIDS_KIND) == first, "adding a task leaves earlier centroids alone"
    from continual_adapters.data.taskdata import load_task_data

    ident = identifier(registry, runner.model)
    assert ident.tasks["trec"].shape == (len(set(load_task_data(trec).train.labels)), 32)

    path = registry.artifact_path("sst2", CENTROIDS_KIND)
    original = path.read_bytes()
    path.write_bytes(original[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(IntegrityError, match="sha256"):
        identifier(registry, runner.model)
    path.write_bytes(original)

    with sqlite3.connect(tmp_path / "registry.db") as db:  # a registry from before centroids were an artifact
        db.execute("DELETE FROM task_artifacts WHERE kind = 'centroids'")
    rebuilt = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    assert torch.equal(identifier(registry, rebuilt.model).tasks["sst2"], ident.tasks["sst2"])
    assert registry.artifact("sst2", CENTROIDS_KIND).sha256 == first.sha256, "recomputed once, same bytes"


def test_centroids_of_another_task_or_base_are_refused():
    value = torch.nn.functional.normalize(torch.ones(2, 4), dim=-1)
    data = centroid_bytes("a", value, "0" * 64)
    assert torch.equal(parse_centroids(data, "a", "0" * 64, 4), value)
    with pytest.raises(IntegrityError, match="computed for"):
        parse_centroids(data, "b", "0" * 64, 4)
    with pytest.raises(IntegrityError, match="computed for"):
        parse_centroids(data, "a", "1" * 64, 4)
    with pytest.raises(IntegrityError, match="shape"):
        parse_centroids(data, "a", "0" * 64, 8)
    with pytest.raises(IntegrityError, match="not a centroid file"):
        parse_centroids(b"garbage!" * 4, "a", "0" * 64, 4)


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
