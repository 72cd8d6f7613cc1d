"""`cadapt rebase`: the comparison as Markdown and JSON, skipped tasks on stderr, refusals as `Error: …`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry import Registry
from tests.support.cli import cli_ok
from tests.support.rebase import TASKS, build_method_source, build_source, save_second_encoder


@pytest.fixture(scope="module")
def second_encoder(tmp_path_factory) -> str:
    return save_second_encoder(tmp_path_factory.mktemp("second-encoder"))


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_rebase_prints_and_writes_the_comparison_then_resumes(tiny_encoder_dir, second_encoder, tmp_path):
    source = build_source(tmp_path / "source", tiny_encoder_dir)
    target, doc = tmp_path / "target.db", tmp_path / "rebase.md"
    (tmp_path / "source" / "data-gamma" / "train.jsonl").unlink()
    result = invoke(
        "--registry",
        source,
        "rebase",
        "--encoder",
        second_encoder,
        "--to",
        target,
        "--tasks",
        "alpha,gamma",
        "-o",
        doc,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "Warning: gamma skipped: data unavailable: " in result.stderr
    table = result.stdout
    assert table == doc.read_text().rstrip("\n") + "\n"
    old, new = Registry(source).task_table()[0], Registry(target).task_table()[0]
    alpha = next(line for line in table.splitlines() if line.startswith("| 1 | alpha |"))
    assert (
        f"| {old.score:.4f} | {new.score:.4f} |" in alpha
        and f"| {old.total_params:,} | {new.total_params:,} |" in alpha
    )
    assert "| 3 | gamma |" in table and "skipped: data unavailable" in table
    assert "Not selected (--tasks): beta." in table and second_encoder in table
    assert [t.name for t in Registry(target).tasks()] == ["alpha"]
    assert "audit passed" in cli_ok("--registry", target, "audit").output

    again = json.loads(
        cli_ok("--registry", source, "rebase", "--encoder", second_encoder, "--to", target, "--json").stdout
    )
    assert again["ready"] == ["alpha"] and again["rebased"] == ["beta"] and list(again["skipped"]) == ["gamma"]
    assert [row["task"] for row in again["tasks"]] == list(TASKS) and again["excluded"] == []
    assert [t.name for t in Registry(target).tasks()] == ["alpha", "beta"]
    assert again["new_base"]["layers"] == 3 and again["old_base"]["layers"] == 2

    unknown = invoke("--registry", source, "rebase", "--encoder", second_encoder, "--to", target, "--tasks", "delta")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("Error: not a ready task of the source: delta")


def test_rebase_refusals_are_one_error_line(tiny_encoder_dir, second_encoder, tmp_path):
    naive = build_method_source(tmp_path / "naive.db", tmp_path, tiny_encoder_dir, "naive", ("only",))
    refused = invoke("--registry", naive, "rebase", "--encoder", second_encoder, "--to", tmp_path / "target.db")
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: ") and "shared-encoder method" in refused.stderr
    assert "Traceback" not in refused.output
    missing = invoke("--registry", naive, "rebase", "--to", tmp_path / "t.db")
    assert missing.exit_code == 2 and "--encoder" in missing.stderr


def test_rebase_help_names_every_option():
    text = " ".join(cli_ok("rebase", "--help").output.split())
    for option in ("--encoder", "--to", "--to-artifacts", "--tasks", "--reeval", "--output", "--json"):
        assert option in text
