"""Running `cadapt` in-process, as the CLI tests and the session fixtures do."""

from __future__ import annotations

from pathlib import Path


def cli_ok(*args, env=None):
    """Runs `cadapt ARGS` in-process and fails the test with its output if it did not exit 0."""
    from click.testing import CliRunner

    from continual_adapters.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def real_task_args(data_dir: Path, name: str, max_train: int, max_eval: int = 200, epochs: int = 2):
    folder = data_dir / name
    args = [
        "add-task",
        name,
        "--train",
        folder / "train.jsonl",
        "--validation",
        folder / "validation.jsonl",
        "--test",
        folder / "test.jsonl",
        "--max-train",
        max_train,
        "--max-eval",
        max_eval,
        "--epochs",
        epochs,
        "--lr",
        "3e-3",
        "--quiet",
    ]
    if (folder / "dataset.json").read_text().count('"pair": true'):
        args += ["--text-pair-column", "text_pair"]
    return args
