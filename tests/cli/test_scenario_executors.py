"""`cadapt run-scenario --executor ray`: the same document as the local executor, and its errors.

The Ray run uses a private local Ray (two CPUs) started once for the module; the command finds it
initialised and uses it as it is.
"""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from tests.support.cli import cli_ok
from tests.support.grid import local_ray, timeless, write_grid


@pytest.fixture(scope="module")
def ray_local():
    yield from local_ray()


def _document(text: str) -> list[str]:
    """results.md without the lines that must differ: the command (its --out) and the times."""
    kept = []
    for line in text.splitlines():
        if line.startswith("cadapt run-scenario"):
            continue
        if line.startswith("| ") and line.count("|") == 10:  # the metrics table: drop train time
            cells = line.split("|")
            line = "|".join(cells[:8] + cells[9:])
        kept.append(line)
    return kept


def test_executor_ray_writes_the_local_comparison(tmp_path, tiny_encoder_dir, ray_local):
    scenario = write_grid(tmp_path, tiny_encoder_dir)
    local = cli_ok("run-scenario", scenario, "--out", tmp_path / "local", "--quiet", "--json")
    remote = cli_ok(
        "run-scenario",
        scenario,
        "--out",
        tmp_path / "ray",
        "--executor",
        "ray",
        "--cpus-per-run",
        "1",
        "--quiet",
        "--json",
    )
    assert timeless(json.loads(remote.stdout)) == timeless(json.loads(local.stdout))
    assert "finished on Ray (2/2)" in remote.stderr
    local_doc = (tmp_path / "local" / "results.md").read_text()
    remote_doc = (tmp_path / "ray" / "results.md").read_text()
    assert _document(remote_doc) == _document(local_doc)
    assert "| adapters | 1 |" in remote_doc and "| naive | 1 |" in remote_doc


def test_executor_ray_reports_a_failing_run_after_the_document(tmp_path, tiny_encoder_dir, ray_local):
    scenario, out = write_grid(tmp_path, tiny_encoder_dir), tmp_path / "runs"
    out.mkdir()
    (out / "naive").write_text("in the way")
    result = CliRunner().invoke(
        cli, ["run-scenario", str(scenario), "--out", str(out), "--executor", "ray", "--methods", "naive", "--quiet"]
    )
    assert result.exit_code == 1, result.output
    assert "Error: 1 of 1 scenario run(s) failed: [naive seed 0] NotADirectoryError: " in result.output
    assert (out / "results.md").is_file()  # written from what finished (here: nothing), then the error


def test_ray_settings_and_a_missing_ray_are_refused_before_running(tmp_path, monkeypatch):
    scenario = tmp_path / "any.yaml"
    scenario.write_text("name: any\n")  # never read: the executor is refused first
    runs = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run-scenario", str(scenario), "--out", str(runs), "--cpus-per-run", "2"])
    assert result.exit_code == 1 and "Error: --cpus-per-run: Ray settings, for --executor ray only" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = CliRunner().invoke(cli, ["run-scenario", str(scenario), "--out", str(runs), "--executor", "ray"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: --executor ray needs Ray, an optional extra: pip install 'continual_adapters[ray]'"
    )
    assert not runs.exists()
