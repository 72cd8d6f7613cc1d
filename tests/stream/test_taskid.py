"""Task identification: centroid arithmetic, storage beside the registry, accuracy on a real stream."""

import json
import sqlite3

import pytest
import torch

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import ConfigError, IntegrityError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.taskid import (
    CENTROIDS_KIND,
    ROUTERS,
    TaskIdentifier,
    TaskStatistics,
    centroids,
    identifier,
    label_statistics,
    parse_statistics,
    statistics_bytes,
)
from tests.support.cli import cli_ok


def test_centroids_are_unit_means_per_label_in_sorted_order():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 2.0]])
    got = centroids(features, ["b", "a", "b", "a"])
    assert torch.allclose(got[0], torch.tensor([0.0, 1.0]))  # label a: mean (0, 1.5)
    assert torch.allclose(got[1], torch.tensor([4.0, 4.0]) / 32**0.5)  # label b: mean (2, 2)


def stats(means, counts=None, scatter=None):
    means = torch.tensor(means)
    counts = torch.ones(len(means)) if counts is None else torch.tensor(counts)
    return TaskStatistics(means, counts, torch.eye(means.shape[1]) if scatter is None else torch.tensor(scatter))


def test_nearest_label_mean_of_any_label_names_the_task_under_both_routers():
    tasks = {"one": stats([[1.0, 0.0], [0.0, 1.0]]), "two": stats([[-1.0, 0.0]])}
    for router in ROUTERS:
        ident = TaskIdentifier(tasks, router)
        assert ident.predict(torch.tensor([[0.1, 0.9], [-0.8, 0.1], [0.9, -0.1]])) == ["one", "two", "one"]


def test_statistics_are_per_label_means_counts_and_the_within_label_scatter():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 2.0]])
    got = label_statistics(features, ["b", "a", "b", "a"])
    assert torch.allclose(got.means, torch.tensor([[0.0, 1.5], [2.0, 2.0]])) and got.counts.tolist() == [2, 2]
    # a: rows (0,1), (0,2) around (0,1.5); b: rows (1,0), (3,4) around (2,2)
    want = torch.tensor([[0.0, 0.0], [0.0, 0.5]]) + torch.tensor([[2.0, 4.0], [4.0, 8.0]])
    assert torch.allclose(got.scatter, want)


def test_mahalanobis_uses_the_pooled_covariance_where_cosine_cannot():
    """Two tasks whose means differ only along a direction of low within-label variance, while the
    high-variance direction separates nothing: the pooled covariance routes right, cosine does not."""
    noisy = [[100.0, 0.0], [0.0, 0.01]]
    tasks = {"a": stats([[0.0, 0.1]], [10.0], noisy), "b": stats([[0.3, 0.0]], [10.0], noisy)}
    x = torch.tensor([[0.6, 0.12]])  # far along the noisy axis, on a's side of the quiet one
    assert TaskIdentifier(tasks, "mahalanobis", shrinkage=0.01).predict(x) == ["a"]
    assert TaskIdentifier(tasks, "centroid").predict(x) == ["b"]
    with pytest.raises(ConfigError):
        TaskIdentifier(tasks, "nearest")


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
    assert ident.tasks["trec"].means.shape == (len(set(load_task_data(trec).train.labels)), 32)

    path = registry.artifact_path("sst2", CENTROIDS_KIND)
    original = path.read_bytes()
    path.write_bytes(original[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(IntegrityError, match="sha256"):
        identifier(registry, runner.model)
    path.write_bytes(original)

    with sqlite3.connect(tmp_path / "registry.db") as db:  # a registry from before centroids were an artifact
        db.execute("DELETE FROM task_artifacts WHERE kind = 'centroids'")
    rebuilt = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    assert torch.equal(identifier(registry, rebuilt.model).tasks["sst2"].scatter, ident.tasks["sst2"].scatter)
    assert registry.artifact("sst2", CENTROIDS_KIND).sha256 == first.sha256, "recomputed once, same bytes"


def test_centroids_of_another_task_or_base_are_refused():
    value = label_statistics(torch.randn(6, 4), [0, 1, 0, 1, 1, 0])
    data = statistics_bytes("a", value, "0" * 64)
    assert torch.equal(parse_statistics(data, "a", "0" * 64, 4).scatter, value.scatter)
    with pytest.raises(IntegrityError, match="computed for"):
        parse_statistics(data, "b", "0" * 64, 4)
    with pytest.raises(IntegrityError, match="computed for"):
        parse_statistics(data, "a", "1" * 64, 4)
    with pytest.raises(IntegrityError, match="shape"):
        parse_statistics(data, "a", "0" * 64, 8)
    with pytest.raises(IntegrityError, match="not a centroid file"):
        parse_statistics(b"garbage!" * 4, "a", "0" * 64, 4)


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
