"""The lifecycle commands (cli/versions.py, and remove in cli/tasks.py): their text and `--json`, the
confirmation a terminal gets before anything is removed, and every refusal as one `Error: …` line."""

from __future__ import annotations

import importlib
import json

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry import Registry
from tests.support.cli import cli_ok
from tests.support.serving import copy_registry
from tests.support.versions import COMMON, build_versioned, data_args


@pytest.fixture(scope="module")
def versioned(tmp_path_factory, tiny_encoder_dir):
    return build_versioned(tmp_path_factory.mktemp("versions-cli"), tiny_encoder_dir)


@pytest.fixture
def url(versioned, tmp_path):
    return copy_registry(versioned, tmp_path / "copy")


def fails(url, *args, input=None) -> str:
    result = CliRunner().invoke(cli, ["--registry", str(url), *args], input=input)
    assert result.exit_code == 1, result.output
    return result.stderr


def test_versions_and_tasks_show_which_version_is_current(url):
    listed = json.loads(cli_ok("--registry", url, "versions", "--json").output)
    assert [(v["key"], v["version"], v["status"], v["current"]) for v in listed] == [
        ("alpha", 1, "ready", True),
        ("alpha@2", 2, "ready", False),
        ("beta", 1, "ready", True),
    ]
    listed = cli_ok("--registry", url, "tasks").output.splitlines()
    assert [line.split()[1:3] for line in listed[1:4]] == [["alpha", "*"], ["beta", "ready"], ["alpha@2", "ready"]]
    cli_ok("--registry", url, "promote", "alpha@2")
    text = cli_ok("--registry", url, "versions", "alpha").output.splitlines()
    assert text[1].split()[:4] == ["alpha", "1", "ready", "1"] and text[2].split()[:4] == ["alpha", "2", "ready", "*"]
    rows = json.loads(cli_ok("--registry", url, "tasks", "--json").output)
    assert [(r["name"], r["version"], r["current"]) for r in rows] == [
        ("alpha", 1, False),
        ("beta", 1, True),
        ("alpha@2", 2, True),
    ]
    assert "alpha@2 *" in cli_ok("--registry", url, "tasks").output


def test_alias_promote_show_and_report_speak_of_versions(url):
    alias = json.loads(
        cli_ok("--registry", url, "alias", "alpha", "production", "2", "--by", "release", "--json").output
    )
    assert (alias["alias"], alias["key"], alias["version"], alias["set_by"]) == ("production", "alpha@2", 2, "release")
    assert (
        "alpha@production -> version 1 (alpha)" in cli_ok("--registry", url, "alias", "alpha", "production", "1").output
    )
    shown = json.loads(cli_ok("--registry", url, "show", "alpha@production", "--json").output)
    assert (shown["name"], shown["version"], shown["current"], shown["aliases"]) == ("alpha", 1, True, ["production"])
    cli_ok("--registry", url, "promote", "alpha@2", "--by", "ci")
    shown = json.loads(cli_ok("--registry", url, "show", "alpha", "--json").output)
    assert (shown["name"], shown["task"], shown["current"]) == ("alpha@2", "alpha", True)
    assert [(p["version"], p["by"]) for p in shown["promotions"]] == [(2, "ci")]
    assert "version 2 of alpha: current" in cli_ok("--registry", url, "show", "alpha").output
    removed = json.loads(cli_ok("--registry", url, "alias", "alpha", "production", "--remove", "--json").output)
    assert removed["version"] == 1 and Registry(url).aliases("alpha") == []
    report = json.loads(cli_ok("--registry", url, "report", "--json").output)
    assert report["matrix"]["tasks"] == ["alpha", "beta", "alpha@2"]
    assert report["matrix"]["current"] == [False, True, True]
    assert [row["task"] for row in report["ledger"]] == ["alpha", "beta", "alpha@2"], "every stored version counts"
    assert "| alpha@2ᶜ |" in cli_ok("--registry", url, "report").output


def test_the_ledger_counts_a_retired_version_until_it_is_collected(url):
    cli_ok("--registry", url, "remove", "alpha@2", "--yes")
    report = json.loads(cli_ok("--registry", url, "report", "--json").output)
    assert [row["task"] for row in report["ledger"]] == ["alpha", "beta", "alpha@2"], "its bundle is still on disk"
    assert ("alpha@2", "retired", True) in [(v["key"], v["status"], v["stored"]) for v in report["versions"]]
    assert "| alpha@2 (retired) |" in cli_ok("--registry", url, "report").output
    cli_ok("--registry", url, "gc", "--older-than", "0s", "--yes")
    report = json.loads(cli_ok("--registry", url, "report", "--json").output)
    assert [row["task"] for row in report["ledger"]] == ["alpha", "beta"], "collected: nothing stored any more"
    assert ("alpha@2", "retired", False) in [(v["key"], v["status"], v["stored"]) for v in report["versions"]]


def test_remove_asks_on_a_terminal_and_says_how_to_restore(url, monkeypatch):
    # The module, not the `main` function that continual_adapters.cli exports under the same name.
    monkeypatch.setattr(importlib.import_module("continual_adapters.cli.main"), "interactive", lambda: True)
    declined = CliRunner().invoke(cli, ["--registry", str(url), "remove", "alpha@2"], input="n\n")
    assert declined.exit_code == 1 and "Retire alpha@2 (restorable until gc)?" in declined.output
    assert Registry(url).task("alpha@2").status == "ready", "a no changes nothing"
    agreed = CliRunner().invoke(cli, ["--registry", str(url), "remove", "alpha@2"], input="y\n")
    assert agreed.exit_code == 0 and "retired alpha@2; `cadapt restore alpha@2` brings it back" in agreed.output
    purged = json.loads(cli_ok("--registry", url, "remove", "alpha@2", "--purge", "--yes", "--json").output)
    assert purged == {"task": "alpha", "key": "alpha@2", "version": 2, "status": "retired", "purged": True}
    assert "was purged" in fails(url, "restore", "alpha@2")
    gc = CliRunner().invoke(cli, ["--registry", str(url), "gc", "--older-than", "0d"], input="n\n")
    assert gc.exit_code == 1 and "Delete for good" in gc.output


def test_refusals_are_one_error_line(url, tmp_path):
    cli_ok("--registry", url, "remove", "alpha@2", "--yes")
    assert fails(url, "promote", "alpha@2").startswith("Error: cannot promote alpha@2: it is retired")
    assert fails(url, "alias", "alpha", "prod", "2").startswith("Error: cannot point alias 'prod' at alpha@2")
    assert fails(url, "promote", "alpha@9").startswith("Error: task 'alpha' has no version 9 (versions: 1, 2)")
    assert fails(url, "predict", "--task", "alpha@2", "x").startswith("Error: cannot serve alpha@2: it is retired")
    assert fails(url, "remove", "alpha@2", "--yes").startswith("Error: task alpha@2 is retired already")
    assert fails(url, "restore", "beta").startswith("Error: task beta@1 is ready, not retired")
    assert "no task" not in fails(url, "alias", "alpha", "current", "1") and "Error:" in fails(url, "promote", "zzz")
    assert "a duration" in CliRunner().invoke(cli, ["--registry", str(url), "gc", "--older-than", "soon"]).output
    assert "--new-version" in fails(url, "add-task", "alpha", *data_args(tmp_path / "d", 5), *COMMON)
    assert "without --new-version" in fails(url, "add-task", "delta", "--new-version", *data_args(tmp_path / "e", 5))


def test_audit_takes_task_references_and_audits_only_those_versions(url):
    cli_ok("--registry", url, "promote", "alpha@2")
    cli_ok("--registry", url, "alias", "alpha", "production", "1")
    for refs, audited in ((["alpha"], ["alpha@2"]), (["alpha@production", "beta"], ["alpha", "beta"])):
        report = json.loads(cli_ok("--registry", url, "audit", *refs, "--probe", "--json").output)
        assert report["ok"] and [t["task"] for t in report["tasks"]] == audited
        assert report["record"]["recorded"] is False, "an audit of some versions is not the registry's audit"
    text = cli_ok("--registry", url, "audit", "alpha@1").output
    assert "PASS  alpha " in text and "beta" not in text and "audit passed (1 tasks, exact)" in text
    assert json.loads(cli_ok("--registry", url, "audit", "--json").output)["record"]["recorded"] is True
    cli_ok("--registry", url, "remove", "alpha@2", "--yes")
    assert fails(url, "audit", "alpha").startswith("Error: cannot audit alpha@2: it is retired")
    assert fails(url, "audit", "alpha@7").startswith("Error: task 'alpha' has no version 7")


def test_export_takes_a_version_and_import_registers_it_under_its_task_name(url, tmp_path):
    archive = tmp_path / "alpha2.cadapt.tar"
    exported = json.loads(cli_ok("--registry", url, "export", "alpha@2", "-o", archive, "--json").output)
    assert exported["task"] == "alpha@2"
    other = tmp_path / "other.db"
    imported = json.loads(cli_ok("--registry", other, "import", archive, "--json").output)
    assert imported["task"] == "alpha" and Registry(other).task("alpha").version == 1
    assert Registry(other).bundle("alpha").sha256 != Registry(url).bundle("alpha@2").sha256, "restamped name"
    assert json.loads(cli_ok("--registry", other, "audit", "--json").output)["ok"]


def test_upgrade_says_when_there_is_nothing_to_do(url):
    report = json.loads(cli_ok("--registry", url, "upgrade", "--json").output)
    assert report == {"from_version": 5, "to_version": 5, "upgraded": False, "backup": None}
