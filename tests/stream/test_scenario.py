"""Scenario files: parsing every shipped scenario, refusing bad ones, and the smoke stream end to end."""

import pytest

from continual_adapters.core.errors import ConfigError
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.scenario import load_scenario
from tests.support.cli import cli_ok
from tests.support.paths import ROOT

SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def test_text_stream_is_the_eight_real_tasks_in_order(data_dir):
    scenario = load_scenario(ROOT / "scenarios" / "text_stream.yaml", data_dir)
    assert [t.dataset_name for t in scenario.tasks] == [
        "sst2",
        "olora_agnews",
        "trec",
        "clinc150",
        "cola",
        "tweeteval_emotion",
        "mrpc",
        "rte",
    ]
    assert {m.method for m in scenario.methods} == {
        "adapters",
        "ln-only",
        "top-k",
        "full",
        "naive",
        "lora",
        "ewc",
        "replay",
        "lwf",
        "mtl",
    }
    assert any(m.adapter_size == "auto" for m in scenario.methods)
    by_name = {t.name: t.data for t in scenario.tasks}
    assert by_name["mrpc"].pair_column == "text_pair" and by_name["sst2"].pair_column is None
    assert by_name["cola"].primary_metric == "mcc"


def test_clinc_domains_become_ten_tasks_of_fifteen_intents(data_dir):
    scenario = load_scenario(ROOT / "scenarios" / "clinc_domains.yaml", data_dir)
    assert len(scenario.tasks) == 10
    assert all(len(t.data.labels) == 15 and t.data.keep_labels == t.data.labels for t in scenario.tasks)
    assert len({label for t in scenario.tasks for label in t.data.labels}) == 150
    from continual_adapters.data.taskdata import load_task_data

    loaded = load_task_data(scenario.tasks[0].data)
    assert set(loaded.train.labels) <= set(scenario.tasks[0].data.labels)
    assert loaded.train.source["dropped_rows"] > 0


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_parses(path, data_dir):
    scenario = load_scenario(path, data_dir)
    assert scenario.tasks and scenario.methods


def test_max_validation_is_a_data_key_for_every_task_and_per_task(tmp_path, data_dir):
    path = tmp_path / "caps.yaml"
    path.write_text(
        "name: caps\n"
        "data: {max_train: 40, max_eval: 50, max_validation: 20}\n"
        "methods: {adapters: {}}\n"
        "tasks:\n"
        "  - {name: a, data: sst2}\n"
        "  - {name: b, data: trec, max_validation: 10}\n"
        "  - {name: c, data: cr, max_eval: 30, max_validation: null}\n"
    )
    specs = {t.name: t.data for t in load_scenario(path, data_dir).tasks}
    caps = {name: (s.max_train, s.max_eval, s.max_validation) for name, s in specs.items()}
    assert caps == {"a": (40, 50, 20), "b": (40, 50, 10), "c": (40, 30, None)}
    assert (specs["a"].validation_cap, specs["c"].validation_cap) == (20, 30)  # c: max_eval caps both, as before


@pytest.mark.parametrize(
    "text,message",
    [
        ("name: x\nmethods: {adapters: {}}\n", "no tasks"),
        ("name: x\ntasks: [{name: a, data: sst2}]\n", "no methods"),
        ("name: x\ntasks: [{name: a, data: sst2}]\nmethods: {bogus: {}}\n", "unknown method"),
        ("name: x\ntasks: [{name: a, data: sst2}]\nmethods: {adapters: {adapter_size: big}}\n", "adapter_size"),
        ("name: x\ntasks: [{name: a, data: sst2}, {name: a, data: trec}]\nmethods: {adapters: {}}\n", "repeat"),
        ("name: x\ntasks: [{name: a, data: sst2}]\nmethods: {adapters: {}}\ntrain: {epoch: 2}\n", "unknown train"),
        ("name: x\ntasks: [{name: a}]\nmethods: {adapters: {}}\n", "needs 'data'"),
        ("[unclosed\n", "cannot read"),
    ],
)
def test_bad_scenarios_are_refused_with_the_reason(tmp_path, data_dir, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_scenario(path, data_dir)


def test_smoke_stream_every_task_ready_and_audited(smoke_run):
    out, data = smoke_run["out"], smoke_run["data"]
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    for settings in scenario.methods:
        registry = Registry(out / settings.label / "seed0" / "registry.db")
        assert [(t.name, t.status, t.method) for t in registry.tasks()] == [
            (t.name, "ready", settings.method) for t in scenario.tasks
        ]
    audits = {m["label"]: m["audit_ok"] for m in data["methods"]}
    assert audits["adapters"] == [True] and audits["ln-only"] == [True]
    assert (out / "results.md").read_text().count("| adapters |") == 4  # final, learned, validation, metrics


def test_smoke_naive_forgets_where_adapters_do_not(smoke_run):
    out = smoke_run["out"]
    _, adapters_R = Registry(out / "adapters" / "seed0" / "registry.db").accuracy_matrix()
    assert adapters_R[-1][0] == adapters_R[0][0]
    naive = Registry(out / "naive" / "seed0" / "registry.db")
    _, R = naive.accuracy_matrix()
    if R[-1][0] == R[0][0]:
        proof = naive.task(naive.tasks()[-1].name).proof
        first = naive.tasks()[0].name
        assert proof["before"]["task_tensors"][first] != proof["after"]["task_tensors"][first]
    first_bundle = Runner(naive, progress=False)
    first_bundle.attach(naive.tasks()[0].name)
    assert first_bundle.model.isolates_tasks is False


def test_rerun_resumes_without_retraining(smoke_run, data_dir):
    from tests.support.cli import cli_ok

    out = smoke_run["out"]
    before = Registry(out / "adapters" / "seed0" / "registry.db").dump()
    result = cli_ok(
        "run-scenario",
        ROOT / "scenarios" / "smoke.yaml",
        "--out",
        out,
        "--methods",
        "adapters",
        "--data-dir",
        data_dir,
        "--no-audit",
        "--quiet",
    )
    assert "task 1/3" not in result.output
    assert Registry(out / "adapters" / "seed0" / "registry.db").dump() == before


def test_report_only_trains_nothing_and_still_compares(smoke_run, data_dir):
    from tests.support.cli import cli_ok

    out = smoke_run["out"]
    before = Registry(out / "naive" / "seed0" / "registry.db").dump()
    result = cli_ok(
        "run-scenario",
        ROOT / "scenarios" / "smoke.yaml",
        "--out",
        out,
        "--data-dir",
        data_dir,
        "--report-only",
        "--no-audit",
        "--results",
        out / "again.md",
    )
    assert "task 1/3" not in result.output
    assert Registry(out / "naive" / "seed0" / "registry.db").dump() == before
    text = (out / "again.md").read_text()
    assert "--no-audit" in text and "--report-only" not in text  # the command reproduces from nothing
    # --results puts figures in a folder named after the scenario, so two documents side by side
    # (docs/results.md, docs/clinc_lr.md) do not overwrite each other's plots.
    assert "](figures/smoke/scores_by_method.png)" in text
    assert (out / "figures" / "smoke" / "scores_by_method.png").is_file()


def test_single_registry_mode_is_the_readme_demo_path(smoke_run, data_dir):
    """`make demo` runs a one-method scenario into ./registry.db; here on the smoke registry, resumed."""
    from tests.support.cli import cli_ok

    db = smoke_run["out"] / "adapters" / "seed0" / "registry.db"
    result = cli_ok(
        "run-scenario",
        ROOT / "scenarios" / "smoke.yaml",
        "--methods",
        "adapters",
        "--registry",
        db,
        "--data-dir",
        data_dir,
        "--quiet",
    )
    assert "audit passed" in result.output and "# cadapt stream report" in result.output
    assert "| BWT | 0.0000 |" in result.output
    from click.testing import CliRunner

    from continual_adapters.cli import cli

    refused = CliRunner().invoke(
        cli,
        ["run-scenario", str(ROOT / "scenarios" / "smoke.yaml"), "--registry", str(db), "--data-dir", str(data_dir)],
    )
    assert refused.exit_code == 1 and "pick one with --methods" in refused.output


def test_a_methods_subset_compares_only_those_methods(smoke_run, tmp_path, data_dir):
    """--report-only --methods over a run folder holding three methods: the document has the two chosen."""
    out = smoke_run["out"]
    target = tmp_path / "subset.md"
    cli_ok(
        "run-scenario",
        ROOT / "scenarios" / "smoke.yaml",
        "--out",
        out,
        "--data-dir",
        data_dir,
        "--methods",
        "adapters,naive",
        "--report-only",
        "--no-audit",
        "--results",
        target,
        "--quiet",
    )
    rows = [line.split("|")[1].strip() for line in target.read_text().splitlines() if line.startswith("| ")]
    assert "adapters" in rows and "naive" in rows and "ln-only" not in rows
