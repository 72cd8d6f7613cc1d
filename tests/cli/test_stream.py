"""Options of the stream commands (cli/stream.py, cli/scenario.py): add-task's split caps,
run-scenario's --seeds and --first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry.registry import Registry
from tests.support.cli import cli_ok

SIZES = {"train": 12, "validation": 10, "test": 8}


def _tiny_folder(root: Path) -> Path:
    """A dataset folder in the shared layout, two labels, rows numbered so every text differs."""
    folder = root / "tinydata"
    folder.mkdir()
    for split, count in SIZES.items():
        rows = [
            {"text": f"{'good' if i % 2 else 'bad'} film {split} {i}", "label": "pos" if i % 2 else "neg"}
            for i in range(count)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "dataset.json").write_text(json.dumps({"labels": ["neg", "pos"], "pair": False}))
    return folder


def test_add_task_max_validation_caps_validation_alone_and_is_recorded(tmp_path, tiny_encoder_dir):
    folder, url = _tiny_folder(tmp_path), tmp_path / "registry.db"
    common = ["--encoder", tiny_encoder_dir, "--epochs", "1", "--adapter-size", "8", "--max-length", "16", "--quiet"]
    cli_ok(
        "--registry", url, "add-task", "capped", "--data", folder, "--max-validation", "4", "--max-eval", "6", *common
    )
    data = Registry(url).task("capped").data
    assert (data["spec"]["max_validation"], data["spec"]["max_eval"]) == (4, 6)
    assert data["sizes"] == {"train": 12, "validation": 4, "test": 6}
    assert len(Registry(url).bundle("capped").hyperparameters["history"]) == 1  # trained, one epoch
    # A re-score re-creates the split from the recorded caps: the audit measures the registered score.
    assert "PASS  capped" in cli_ok("--registry", url, "audit").output

    help_text = " ".join(cli_ok("add-task", "--help").output.split())  # unwrapped
    assert "--max-validation" in help_text and "validation split only" in help_text


def _scenario(root: Path, encoder: str, seeds: list[int], tasks: tuple[str, ...] = ("one",)) -> Path:
    folder = _tiny_folder(root)
    path = root / "tiny.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "tiny",
                "encoder": encoder,
                "seeds": seeds,
                "train": {"epochs": 1, "batch_size": 8, "max_length": 16},
                "data": {"max_train": 10, "max_eval": 6, "max_validation": 4},
                "methods": {"adapters": {"adapter_size": 8}},
                "tasks": [{"name": name, "data": str(folder)} for name in tasks],
            }
        )
    )
    return path


def test_run_scenario_seeds_replace_the_scenario_seeds(tmp_path, tiny_encoder_dir):
    scenario, out = _scenario(tmp_path, tiny_encoder_dir, [0]), tmp_path / "runs"
    result = cli_ok("run-scenario", scenario, "--out", out, "--seeds", "1", "--no-audit", "--quiet")
    assert "[adapters seed 1] task 1/1: one" in result.output and "[adapters seed 0]" not in result.output
    assert not (out / "adapters" / "seed0").exists()
    registry = Registry(out / "adapters" / "seed1" / "registry.db")
    assert [(t.name, t.status) for t in registry.tasks()] == [("one", "ready")]
    assert registry.bundle("one").seed == 1 and registry.bundle("one").hyperparameters["seed"] == 1
    assert registry.task("one").data["sizes"] == {"train": 10, "validation": 4, "test": 6}
    document = (out / "results.md").read_text()
    assert (
        " --seeds 1 " in document
        and "caps (train, eval) per task: 10/6; validation capped on its own at 4." in document
    )

    # --report-only takes --seeds too: it reports seed 1's run, and never creates seed 0's.
    report = cli_ok("run-scenario", scenario, "--out", out, "--seeds", "1", "--report-only", "--quiet", "--json")
    data = json.loads(report.stdout)
    (method,) = data["methods"]
    assert method["seeds"] == [1] and method["complete"] and method["audit_ok"] == [True]
    assert data["caps"] == {"one": {"max_train": 10, "max_eval": 6, "max_validation": 4}}
    assert "task 1/1" not in report.output and not (out / "adapters" / "seed0").exists()


@pytest.mark.parametrize(
    "value,message",
    [
        ("1,x", "--seeds: '1,x' is not a comma-separated list of integers"),
        ("", "--seeds: '' is not a comma-separated list of integers"),
        ("0,,2", "--seeds: '0,,2' is not a comma-separated list of integers"),
        ("1.5", "--seeds: '1.5' is not a comma-separated list of integers"),
        ("2,2", "--seeds: '2,2' names a seed twice"),
    ],
)
def test_run_scenario_refuses_bad_seeds_before_running(tmp_path, value, message):
    scenario = tmp_path / "any.yaml"
    scenario.write_text("name: any\n")  # never read: the option is refused first
    result = CliRunner().invoke(cli, ["run-scenario", str(scenario), "--out", str(tmp_path / "runs"), "--seeds", value])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_run_scenario_first_runs_a_prefix_that_a_later_run_continues(tmp_path, tiny_encoder_dir):
    scenario, out = _scenario(tmp_path, tiny_encoder_dir, [0], tasks=("one", "two", "three")), tmp_path / "runs"
    registry_path = out / "adapters" / "seed0" / "registry.db"
    result = cli_ok("run-scenario", scenario, "--out", out, "--first", "2", "--quiet")
    assert "task 2/2: two" in result.output and "three" not in result.output
    assert [t.name for t in Registry(registry_path).tasks()] == ["one", "two"]
    assert " --first 2 " in (out / "results.md").read_text()
    before = {name: Registry(registry_path).bundle(name).sha256 for name in ("one", "two")}

    rest = cli_ok("run-scenario", scenario, "--out", out, "--quiet")
    assert "skip 1/3: one (already ready)" in rest.output and "skip 2/3: two (already ready)" in rest.output
    assert "task 3/3: three" in rest.output
    registry = Registry(registry_path)
    assert [t.name for t in registry.tasks()] == ["one", "two", "three"]
    assert {name: registry.bundle(name).sha256 for name in ("one", "two")} == before


def test_run_scenario_refuses_a_prefix_longer_than_the_stream(tmp_path, tiny_encoder_dir):
    scenario, out = _scenario(tmp_path, tiny_encoder_dir, [0]), tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run-scenario", str(scenario), "--out", str(out), "--first", "2"])
    assert result.exit_code == 2 and "--first" in result.output and "the stream has only 1 task(s)" in result.output
    zero = CliRunner().invoke(cli, ["run-scenario", str(scenario), "--out", str(out), "--first", "0"])
    assert zero.exit_code == 2 and "--first" in zero.output
    assert not out.exists()
