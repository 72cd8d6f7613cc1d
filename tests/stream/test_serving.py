"""Serving: inputs from anywhere, the same labels as the evaluation path, mixed-task files."""

import io
import json

import pytest

from continual_adapters.core.errors import DataError
from continual_adapters.data.taskdata import load_eval_split
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.serving import Inputs, predict_inputs, read_inputs
from tests.support.cli import cli_ok


def _eval_rows(url, name):
    task = Registry(url).task(name)
    split, _ = load_eval_split(task.data, task.labels)
    return task, split


def test_predict_matches_the_evaluation_path(stream, tmp_path):
    task, split = _eval_rows(stream["url"], "trec")
    path = tmp_path / "inputs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in split.texts))
    out = cli_ok("--registry", stream["url"], "predict", "--task", "trec", "--file", path, "--json").output
    labels = [json.loads(line)["label"] for line in out.splitlines()]
    evaluation = Runner(Registry(stream["url"]), progress=False).evaluate_task("trec")
    assert labels == [task.labels[i] for i in evaluation.predictions]


def test_mixed_task_file_equals_per_task_predictions_in_order(stream, tmp_path):
    rows = []
    for name in ("sst2", "trec", "tweeteval_emotion"):
        _, split = _eval_rows(stream["url"], name)
        rows += [{"text": t, "task": name} for t in split.texts[:6]]
    rows = rows[::2] + rows[1::2]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = cli_ok(
        "--registry", stream["url"], "predict", "--file", path, "--task-column", "task", "--json", "--top-k", "2"
    ).output
    mixed = [json.loads(line) for line in out.splitlines()]
    assert [(m["text"], m["task"]) for m in mixed] == [(r["text"], r["task"]) for r in rows]
    for name in ("sst2", "trec", "tweeteval_emotion"):
        texts = [r["text"] for r in rows if r["task"] == name]
        alone = json.loads(
            "["
            + ",".join(
                cli_ok(
                    "--registry", stream["url"], "predict", "--task", name, *texts, "--json", "--top-k", "2"
                ).output.splitlines()
            )
            + "]"
        )
        got = [m for m in mixed if m["task"] == name]
        assert [m["label"] for m in got] == [a["label"] for a in alone]
        assert all(abs(m["score"] - a["score"]) < 1e-5 for m, a in zip(got, alone, strict=True))
        assert all(len(m["top"]) == 2 for m in got)


def test_a_file_spanning_many_tasks_attaches_them_a_round_at_a_time(stream):
    """Memory stays bounded: never more than `tasks_per_round` adapters resident while predicting,
    none left behind, and the answers those of one call with every task attached."""
    rows = []
    for name in ("sst2", "trec", "tweeteval_emotion"):
        _, split = _eval_rows(stream["url"], name)
        rows += [(t, name) for t in split.texts[:4]]
    rows = rows[::3] + rows[1::3] + rows[2::3]
    inputs = Inputs([t for t, _ in rows], tasks=[n for _, n in rows])
    runner = Runner(Registry(stream["url"]), progress=False)
    resident = []
    real = runner.model.predict

    def spy(*args, **kwargs):
        resident.append(sorted(runner.model.tasks))
        return real(*args, **kwargs)

    runner.model.predict = spy
    bounded = predict_inputs(runner, inputs, None, tasks_per_round=1)
    assert [len(r) for r in resident] == [1, 1, 1] and len(runner.model.tasks) == 0
    together = predict_inputs(runner, inputs, None, tasks_per_round=16)
    assert len(resident[-1]) == 3
    assert [p.label for p in bounded] == [p.label for p in together]
    assert [p.task for p in bounded] == [n for _, n in rows]


def test_plain_output_and_errors(stream):
    out = cli_ok("--registry", stream["url"], "predict", "--task", "sst2", "a wonderful, moving film").output
    assert out.startswith("sst2\t") and "a wonderful, moving film" in out
    from click.testing import CliRunner

    from continual_adapters.cli import cli

    result = CliRunner().invoke(cli, ["--registry", stream["url"], "predict", "--task", "nope", "text"])
    assert result.exit_code == 1 and "unknown task 'nope'" in result.output


def test_read_inputs_from_every_source(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "a.csv").write_text("text,task\nhello,sst2\n")
    (tmp_path / "a.tsv").write_text("text\tother\nhi\tx\n")
    assert read_inputs(file=str(tmp_path / "a.txt")).texts == ["one", "two"]
    got = read_inputs(file=str(tmp_path / "a.csv"), task_column="task")
    assert got.texts == ["hello"] and got.tasks == ["sst2"]
    assert read_inputs(file=str(tmp_path / "a.tsv")).texts == ["hi"]
    assert read_inputs(stdin=io.StringIO("x\ny\n")).texts == ["x", "y"]
    assert read_inputs(("given",)).texts == ["given"]
    with pytest.raises(DataError, match="row 1 has no text in column 'task'"):
        read_inputs(file=str(tmp_path / "a.tsv"), task_column="task")
    with pytest.raises(DataError, match="no inputs"):
        read_inputs(stdin=io.StringIO(""))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="row 1 is not JSON"):
        read_inputs(file=str(tmp_path / "bad.jsonl"))


def test_mixed_batch_benchmark_quick_mode_runs(tmp_path):
    import subprocess
    import sys

    from tests.support.paths import ROOT

    out = tmp_path / "mixed.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mixed_batch.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["tasks"] for r in data["rows"]] == [1, 3]
    assert all(r["loop_ms"] > 0 and r["mixed_ms"] > 0 for r in data["rows"])
    assert "speed-up" in result.stdout
