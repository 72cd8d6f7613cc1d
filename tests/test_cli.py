"""CLI behaviour: typed errors become one-line `Error:` messages and leave the registry unchanged."""
import json

import pytest
from click.testing import CliRunner

from conftest import cli_ok
from continual_adapters.cli import cli
from continual_adapters.registry import Registry


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_init_and_tasks_json_on_fresh_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CADAPT_REGISTRY", raising=False)
    cli_ok("init")
    assert (tmp_path / "registry.db").is_file() and (tmp_path / "registry").is_dir()
    assert json.loads(cli_ok("tasks", "--json").output) == []


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def small_files(tmp_path):
    rows = [{"text": f"good movie {i}", "label": "pos"} for i in range(6)] + \
           [{"text": f"bad movie {i}", "label": "neg"} for i in range(6)]
    return {
        "train": _write(tmp_path / "train.jsonl", rows),
        "unknown": _write(tmp_path / "test.jsonl", rows[:3] + [{"text": "meh", "label": "neutral"}]),
        "empty": _write(tmp_path / "empty.jsonl", []),
        "csv": tmp_path / "train.csv",
    }


@pytest.mark.parametrize("case,args,message", [
    ("column", ["--text-column", "sentence"], "no column 'sentence'"),
    ("unknown", ["--test", "{unknown}"], "row 4: unknown label 'neutral'"),
    ("empty", ["--validation", "{empty}"], "empty.jsonl: file is empty"),
    ("missing", ["--validation", "{train}.nope"], "no such file"),
    ("badsize", ["--adapter-size", "big"], "--adapter-size"),
])
def test_bad_inputs_exit_nonzero_and_leave_registry_unchanged(stream, small_files, case, args, message):
    registry = Registry(stream["url"])
    before = registry.dump()
    args = [a.format(**small_files) for a in args]
    result = run("--registry", stream["url"], "add-task", "newtask", "--train", small_files["train"], *args, "--quiet")
    assert result.exit_code != 0
    assert message in result.output
    assert registry.dump() == before


def test_duplicate_name_exits_nonzero(stream, small_files):
    before = Registry(stream["url"]).dump()
    result = run("--registry", stream["url"], "add-task", "sst2", "--train", small_files["train"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: task 'sst2' already exists")
    assert Registry(stream["url"]).dump() == before


def test_unknown_task_and_bad_name():
    result = run("--registry", "/nonexistent/dir/x.db", "show", "nothing")
    assert result.exit_code != 0 and "Error:" in result.output
    result = run("add-task", "Bad Name", "--train", "x.jsonl")
    assert result.exit_code == 1 and "invalid task name" in result.output


def test_tasks_table_lists_stream(stream):
    out = cli_ok("--registry", stream["url"], "tasks").output
    assert "sst2" in out and "trec" in out
    rows = json.loads(cli_ok("--registry", stream["url"], "tasks", "--json").output)
    assert [r["position"] for r in rows] == [1, 2, 3]
    assert all(r["params"] > 0 for r in rows)
