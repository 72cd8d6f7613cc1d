"""Executors: the same scenario grid run unit by unit here and as Ray tasks gives the same comparison.

One private local Ray (two CPUs) serves the module. The Ray run starts with one unit made to fail
(a file stands where its run folder must go): that unit is reported with its error while the other
finishes and is gathered; the rerun resumes (the finished unit trains nothing) and the final
comparison is the local executor's, number for number.
"""

from __future__ import annotations

import sys

import pytest

from continual_adapters.core.errors import ConfigError, MissingExtraError, UnitsFailedError
from continual_adapters.registry.registry import Registry
from continual_adapters.report.comparison import compare
from continual_adapters.report.comparison_doc import format_comparison
from continual_adapters.stream.executors import LocalExecutor, RayExecutor, make_executor
from continual_adapters.stream.scenario import load_scenario, run_scenario
from continual_adapters.stream.units import plan_units
from tests.support.grid import TASKS, local_ray, timeless, write_grid


@pytest.fixture(scope="module")
def ray_local():
    yield from local_ray()


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_encoder_dir):
    root = tmp_path_factory.mktemp("grid")
    scenario = load_scenario(write_grid(root, tiny_encoder_dir))
    lines: list[str] = []
    audits = run_scenario(scenario, root / "local", progress=False, log=lines.append)
    return {"root": root, "scenario": scenario, "audits": audits, "local": compare(scenario, root / "local", audits)}


@pytest.fixture(scope="module")
def ray_run(grid, ray_local):
    """The grid on Ray twice: first with the naive unit's folder blocked, then resumed."""
    scenario, out = grid["scenario"], grid["root"] / "ray"
    out.mkdir()
    (out / "naive").write_text("in the way")
    first_log: list[str] = []
    with pytest.raises(UnitsFailedError) as failed:
        run_scenario(scenario, out, progress=False, log=first_log.append, executor=RayExecutor(cpus_per_run=1))
    adapters_db = out / "adapters" / "seed0" / "registry.db"
    after_first = Registry(adapters_db).dump()
    (out / "naive").unlink()
    second_log: list[str] = []
    audits = run_scenario(scenario, out, progress=False, log=second_log.append, executor=RayExecutor(cpus_per_run=1))
    return {
        "failed": failed.value,
        "first_log": first_log,
        "second_log": second_log,
        "after_first": after_first,
        "adapters_db": adapters_db,
        "audits": audits,
        "compared": compare(scenario, out, audits),
    }


def test_a_failing_unit_is_reported_and_the_others_are_gathered(ray_run):
    failed = ray_run["failed"]
    assert list(failed.failures) == ["naive seed 0"]
    assert failed.failures["naive seed 0"].startswith("NotADirectoryError: ")
    assert failed.total == 2 and failed.audits == {("adapters", 0): True}
    assert str(failed).startswith("1 of 2 scenario run(s) failed: [naive seed 0] NotADirectoryError")
    log = "\n".join(ray_run["first_log"])
    assert "submitted 2 run(s) to Ray (1 CPU, 0 GPU each" in log
    assert "[adapters seed 0] finished on Ray" in log and "added 2, skipped 0 task(s), audit passed" in log
    assert "[naive seed 0] finished on Ray" in log and "FAILED: NotADirectoryError" in log
    registry = Registry(ray_run["adapters_db"])
    assert [(t.name, t.status) for t in registry.tasks()] == [(name, "ready") for name in TASKS]


def without_audit_rows(dump: dict) -> dict:
    return {**dump, "evaluations": [e for e in dump["evaluations"] if e["kind"] != "audit"]}


def test_a_rerun_on_ray_resumes_without_retraining(ray_run):
    log = "\n".join(ray_run["second_log"])
    assert "[adapters seed 0] finished on Ray" in log and "added 0, skipped 2 task(s), audit passed" in log
    assert "[naive seed 0] finished on Ray" in log and "added 2, skipped 0 task(s), audit FAILED" in log
    # Nothing retrained or rewritten; the rerun's audit adds only its own record (kind "audit").
    assert without_audit_rows(Registry(ray_run["adapters_db"]).dump()) == without_audit_rows(ray_run["after_first"])
    assert [e for e in Registry(ray_run["adapters_db"]).evaluations(kind="audit") if e.metric == "audit_problems"]


def test_ray_gives_the_local_comparison_number_for_number(grid, ray_run):
    assert ray_run["audits"] == grid["audits"] == {("adapters", 0): True, ("naive", 0): False}
    local, remote = timeless(grid["local"]), timeless(ray_run["compared"])
    assert remote == local
    assert format_comparison(remote) == format_comparison(local)
    for method in remote["methods"]:
        assert method["complete"] and method["runs"][0]["R"] == next(
            m["runs"][0]["R"] for m in local["methods"] if m["label"] == method["label"]
        )


def test_units_carry_absolute_paths(grid, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    units = plan_units(grid["scenario"], "runs", registry=None)
    assert [u.name for u in units] == ["adapters seed 0", "naive seed 0"]
    assert all(u.out == str(tmp_path / "runs") for u in units)
    (single,) = plan_units(grid["scenario"], "runs", ["adapters"], registry="team.db", artifacts="bundles")
    assert (single.registry, single.artifacts) == (str(tmp_path / "team.db"), str(tmp_path / "bundles"))
    url = "postgresql+psycopg://u@h/db"
    assert plan_units(grid["scenario"], "runs", ["adapters"], registry=url)[0].registry == url
    assert all(t.data.train.startswith("/") for u in units for t in u.scenario.tasks)


def test_executor_choice_and_its_settings_are_checked():
    assert isinstance(make_executor("local"), LocalExecutor)
    assert make_executor("ray", "auto", 2, 0.5) == RayExecutor("auto", 2.0, 0.5)
    with pytest.raises(ConfigError, match="--address, --gpus-per-run: Ray settings, for --executor ray only"):
        make_executor("local", address="auto", gpus_per_run=1)
    with pytest.raises(ConfigError, match="--cpus-per-run must be > 0"):
        RayExecutor(cpus_per_run=0)
    with pytest.raises(ConfigError, match="--gpus-per-run must be >= 0"):
        RayExecutor(gpus_per_run=-1)


def test_without_ray_the_error_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'continual_adapters\[ray\]'"):
        make_executor("ray")
