"""evaluate_identification: task-id accuracy and the score with the task unknown, on a tiny
registry; scores already known (a finished stream's audit) are used as given, not measured again."""

import numpy as np
import pytest

from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import DataError
from continual_adapters.data.taskdata import DataSpec, load_eval_split
from continual_adapters.registry import Registry
from continual_adapters.report.identification import evaluate_identification
from continual_adapters.stream.runner import Runner
from tests.support.paths import DATA_DIR


@pytest.fixture(scope="module")
def runner(tmp_path_factory, tiny_encoder_dir):
    registry = Registry(tmp_path_factory.mktemp("ident") / "registry.db")
    made = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    for name in ("sst2", "trec"):
        spec = DataSpec.from_folder(DATA_DIR / name, max_train=32, max_eval=20)
        made.add_task(name, spec, train=TrainConfig(epochs=1, batch_size=16, max_length=32))
    yield made
    registry.close()


def test_measured_scores_match_the_tasks_own_evaluation(runner):
    found = evaluate_identification(runner)
    assert found["router"] == "mahalanobis" and found["chance"] == 0.5
    for row in found["tasks"]:
        task = runner.registry.task(row["task"])
        _, targets = load_eval_split(task.data, task.labels)
        given = runner.evaluate_task(task.name).predictions == np.asarray(targets)
        assert row["examples"] == 20 and row["accuracy_given_task"] == pytest.approx(given.mean())
        assert row["accuracy_predicted_task"] <= row["accuracy_given_task"]


def test_known_scores_are_used_instead_of_a_second_evaluation(runner, monkeypatch):
    measured = {row["task"]: row for row in evaluate_identification(runner)["tasks"]}
    known = {"sst2": [True] * 20}  # deliberately not the model's: proves the given scores are read

    def no_second_pass(name):
        assert name != "sst2", "sst2's scores were given"
        return Runner.evaluate_task(runner, name)

    monkeypatch.setattr(runner, "evaluate_task", no_second_pass)
    rows = {row["task"]: row for row in evaluate_identification(runner, known)["tasks"]}
    assert rows["sst2"]["accuracy_given_task"] == 1.0
    assert rows["sst2"]["accuracy_predicted_task"] == measured["sst2"]["task_id_accuracy"]
    assert rows["trec"] == measured["trec"]


def test_known_scores_of_the_wrong_length_are_refused(runner):
    with pytest.raises(DataError, match="19 known scores for 20 evaluation examples"):
        evaluate_identification(runner, {"trec": [True] * 19})
