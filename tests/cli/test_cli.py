"""CLI behaviour: typed errors become one-line `Error:` messages and leave the registry unchanged."""

import json

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry.registry import Registry
from tests.support.cli import cli_ok


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
    rows = [{"text": f"good movie {i}", "label": "pos"} for i in range(6)] + [
        {"text": f"bad movie {i}", "label": "neg"} for i in range(6)
    ]
    return {
        "train": _write(tmp_path / "train.jsonl", rows),
        "unknown": _write(tmp_path / "test.jsonl", rows[:3] + [{"text": "meh", "label": "neutral"}]),
        "empty": _write(tmp_path / "empty.jsonl", []),
        "csv": tmp_path / "train.csv",
    }


@pytest.mark.parametrize(
    "case,args,message",
    [
        ("column", ["--text-column", "sentence"], "no column 'sentence'"),
        ("unknown", ["--test", "{unknown}"], "row 4: unknown label 'neutral'"),
        ("empty", ["--validation", "{empty}"], "empty.jsonl: file is empty"),
        ("missing", ["--validation", "{train}.nope"], "no such file"),
        ("badsize", ["--adapter-size", "big"], "--adapter-size"),
    ],
)
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


def test_auto_is_a_reserved_task_name(tmp_path, small_files):
    """`--task auto` means "identify the task" in predict, so no task may be called auto."""
    url = tmp_path / "registry.db"
    result = run("--registry", url, "add-task", "auto", "--train", small_files["train"], "--quiet")
    assert result.exit_code == 1 and "reserved" in result.output
    assert not url.exists()


def test_add_task_defaults_follow_the_method_and_top_layers_names_the_layers(tmp_path, small_files, tiny_encoder_dir):
    """Without --lr a task trains at its method's recorded default; --top-layers (not predict's --top-k)
    sets how many layers top-k fine-tunes, and the old spelling still works with a warning."""
    from continual_adapters.core.config import DEFAULT_EPOCHS, DEFAULT_LR

    common = ["--train", small_files["train"], "--encoder", tiny_encoder_dir, "--quiet", "--json"]
    adapters = tmp_path / "adapters.db"
    cli_ok("--registry", adapters, "add-task", "a", *common)
    hyper = Registry(adapters).bundle("a").hyperparameters
    assert (hyper["lr"], hyper["epochs"]) == (DEFAULT_LR["adapters"], DEFAULT_EPOCHS)

    top = tmp_path / "top.db"
    cli_ok("--registry", top, "add-task", "t", *common, "--method", "top-k", "--top-layers", "1", "--epochs", "1")
    bundle = Registry(top).bundle("t")
    assert bundle.hyperparameters["lr"] == DEFAULT_LR["top-k"] and bundle.config["task"]["top_k"] == 1

    old = tmp_path / "old.db"
    result = CliRunner().invoke(
        cli,
        [
            str(a)
            for a in ("--registry", old, "add-task", "t", *common, "--method", "top-k", "--top-k", "1", "--epochs", "1")
        ],
    )
    assert result.exit_code == 0 and "--top-k is now --top-layers" in result.stderr
    assert Registry(old).bundle("t").config["task"]["top_k"] == 1


def _tiny_scenario(tmp_path, train_file, encoder, methods):
    """A one-task scenario on a tiny encoder, its data a folder in the shared layout."""
    folder = tmp_path / "tinydata"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(train_file.read_bytes())
    (folder / "dataset.json").write_text(json.dumps({"labels": ["neg", "pos"], "pair": False}))
    path = tmp_path / "tiny.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "tiny",
                "encoder": encoder,
                "train": {"epochs": 1, "max_length": 16},
                "methods": methods,
                "tasks": [{"name": "one", "data": str(folder)}],
            }
        )
    )
    return path


def test_run_scenario_honours_or_refuses_the_global_registry(tmp_path, small_files, tiny_encoder_dir, monkeypatch):
    """A registry named globally is one registry: used for a single run, refused (with the way out
    named) for a comparison; a global --artifacts alone is refused too, never silently dropped."""
    monkeypatch.chdir(tmp_path)
    two = _tiny_scenario(tmp_path, small_files["train"], tiny_encoder_dir, {"adapters": {}, "ln-only": {}})
    target = tmp_path / "team.db"
    result = run("--registry", target, "run-scenario", two, "--quiet", "--no-audit")
    assert result.exit_code == 1 and "pick one with --methods" in result.output and not target.exists()
    env_result = CliRunner().invoke(cli, ["run-scenario", str(two), "--quiet"], env={"CADAPT_REGISTRY": str(target)})
    assert env_result.exit_code == 1 and "CADAPT_REGISTRY" in env_result.output
    result = run("--artifacts", tmp_path / "bucket", "run-scenario", two, "--quiet")
    assert result.exit_code == 1 and "--artifacts" in result.output and not (tmp_path / "runs").exists()

    cli_ok("--registry", target, "run-scenario", two, "--methods", "ln-only", "--quiet", "--no-audit")
    assert [t.name for t in Registry(target).tasks()] == ["one"] and not (tmp_path / "runs").exists()
