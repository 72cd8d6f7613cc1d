"""Tasks added at the same time see each other: a task registered by another runner while this one
trains gets an entry in this task's row of the accuracy matrix, by the check every earlier task
gets; a hole left anyway is found and filled by `cadapt audit`, which says so.

The concurrency is simulated deterministically: runner A begins its task (its row is pending), and
when A's training ends, runner B (another Registry object on the same SQLite file, as another
process would hold) adds its task from start to finish, before A confirms and registers.
"""

from __future__ import annotations

from continual_adapters.core.config import TrainConfig
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry import Registry
from continual_adapters.stream import runner as runner_module
from continual_adapters.stream.audit import audit
from continual_adapters.stream.concurrent import Hole, matrix_holes
from continual_adapters.stream.runner import Runner
from tests.support.cli import cli_ok

CONFIG = TrainConfig(epochs=1, batch_size=16, max_length=32)


def spec(data_dir, name):
    return DataSpec.from_folder(data_dir / name, max_train=32, max_eval=24)


def runner_on(path, encoder, method):
    return Runner(Registry(path), encoder=encoder, progress=False, method=method)


def add_concurrently(path, data_dir, encoder, method, monkeypatch):
    """sst2 first; then trec on runner A, with cr added by runner B while trec trains. Returns A's
    result for trec; the stream is sst2 (1), cr (2), trec (3)."""
    runner_on(path, encoder, method).add_task("sst2", spec(data_dir, "sst2"), train=CONFIG)
    slow, other = runner_on(path, encoder, method), runner_on(path, encoder, method)
    train = slow.train

    def train_while_cr_is_added(job, encoded, state=None):
        trained = train(job, encoded, state)
        assert [t.status for t in other.registry.tasks(include_pending=True)] == ["ready", "pending"]
        other.add_task("cr", spec(data_dir, "cr"), train=CONFIG)
        return trained

    monkeypatch.setattr(slow, "train", train_while_cr_is_added)
    result = slow.add_task("trec", spec(data_dir, "trec"), train=CONFIG)
    assert result is not None and result.task.position == 3
    return result


def test_a_task_registered_while_another_trains_is_in_its_row(tmp_path, data_dir, tiny_encoder_dir, monkeypatch):
    path = tmp_path / "registry.db"
    result = add_concurrently(path, data_dir, tiny_encoder_dir, "adapters", monkeypatch)
    assert result.proof["confirmed_late"] == ["cr"]
    assert set(result.proof["probes"]) == {"sst2", "cr"}, "cr is confirmed as sst2 is: its probe replayed"
    registry = Registry(path)
    names, kinds = registry.confirmations()
    assert names == ["sst2", "cr", "trec"]
    assert kinds == [["registration", None, None], ["probe", "registration", None], ["probe", "probe", "registration"]]
    _, matrix = registry.accuracy_matrix()
    assert matrix[2][1] == matrix[1][1], "cr's entry after trec carries its registration score"
    assert matrix_holes(registry) == []
    report = audit(runner_on(path, tiny_encoder_dir, "adapters"))
    assert report.ok and report.holes == []


def test_the_audit_fills_a_hole_and_says_so(tmp_path, data_dir, tiny_encoder_dir, monkeypatch):
    """An addition that did not look for late tasks (an older cadapt, or a registration that raced its
    last look) leaves a hole; `cadapt audit` writes the entry and reports it, and a second audit
    finds none."""
    monkeypatch.setattr(runner_module, "confirm_late", lambda runner, job, earlier, confirmation: confirmation)
    path = tmp_path / "registry.db"
    add_concurrently(path, data_dir, tiny_encoder_dir, "adapters", monkeypatch)
    registry = Registry(path)
    assert matrix_holes(registry) == [Hole("cr", "trec", 3)]
    first = cli_ok("--registry", path, "audit")
    assert "FILLED  accuracy-matrix entry of cr after trec (row 3), confirmed by probe" in first.output
    assert "audit passed" in first.output
    assert registry.confirmations()[1][2] == ["probe", "probe", "registration"]
    assert matrix_holes(registry) == []
    second = cli_ok("--registry", path, "audit", "--probe")
    assert "FILLED" not in second.output and "HOLE" not in second.output


def test_a_shared_encoder_rescores_the_late_task_with_its_own(tmp_path, data_dir, tiny_encoder_dir, monkeypatch):
    """Under naive fine-tuning the late task is re-scored in full on the new task's encoder, the one
    serving the stream uses (every bundle loaded in stream order leaves the last task's encoder)."""
    path = tmp_path / "registry.db"
    result = add_concurrently(path, data_dir, tiny_encoder_dir, "naive", monkeypatch)
    assert result.proof["confirmed_late"] == ["cr"] and set(result.reevaluated) == {"sst2", "cr"}
    registry = Registry(path)
    assert registry.confirmations()[1][2] == ["full", "full", "registration"]
    served = runner_on(path, tiny_encoder_dir, "naive")
    assert served.evaluate_task("cr").scores["accuracy"] == result.reevaluated["cr"]
    _, matrix = registry.accuracy_matrix()
    assert matrix[2][1] == result.reevaluated["cr"]


def test_the_audit_fills_a_shared_encoder_hole_on_that_rows_encoder(tmp_path, data_dir, tiny_encoder_dir, monkeypatch):
    """The hole is in trec's row, and a later task (mr) has since changed the shared encoder: the entry is
    measured on the encoder trec left, not on the latest one."""
    monkeypatch.setattr(runner_module, "confirm_late", lambda runner, job, earlier, confirmation: confirmation)
    path = tmp_path / "registry.db"
    add_concurrently(path, data_dir, tiny_encoder_dir, "naive", monkeypatch)
    at_trec = runner_on(path, tiny_encoder_dir, "naive").evaluate_task("cr")
    runner_on(path, tiny_encoder_dir, "naive").add_task("mr", spec(data_dir, "mr"), train=CONFIG)
    at_mr = runner_on(path, tiny_encoder_dir, "naive").evaluate_task("cr")
    assert at_mr.predictions_sha256 != at_trec.predictions_sha256, "mr's encoder must score cr differently"
    registry = Registry(path)
    assert matrix_holes(registry) == [Hole("cr", "trec", 3)]
    report = audit(runner_on(path, tiny_encoder_dir, "naive"))
    assert not report.ok, "a method that shares the encoder fails the 'unchanged' check by nature"
    assert [(h.task, h.after, h.filled, h.confirmed_by) for h in report.holes] == [("cr", "trec", True, "full")]
    filled = [e for e in registry.evaluations("cr", kind="reeval") if e.after_tasks == 3]
    assert {e.metric: e.value for e in filled} == at_trec.scores
    assert {e.predictions_sha256 for e in filled} == {at_trec.predictions_sha256}
    assert matrix_holes(registry) == []
