"""`cadapt audit` records its outcome as the registry's latest audit (evaluation rows of kind "audit"),
and `latest_audit` reads back exactly what it found: passed or failed, when, which stream state,
each task's verdict and score; a task added since is not covered; a task whose signature does not
verify is left unrecorded rather than re-signed."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry import Registry
from continual_adapters.registry.signing import KEY_ENV
from continual_adapters.stream.audit_record import KIND, VERDICT_METRIC, latest_audit
from tests.support.cli import cli_ok
from tests.support.serving import add_tiny_task, build_registry, copy_registry

KEY = "test-key-kept-outside-the-registry"


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory, tiny_encoder_dir):
    """alpha and beta on the tiny encoder; never modified (tests work on copies)."""
    return build_registry(tmp_path_factory.mktemp("audited"), tiny_encoder_dir, {"alpha": 32, "beta": 16})


@pytest.fixture
def copy(two_tasks, tmp_path):
    return copy_registry(two_tasks, tmp_path / "copy")


def run_audit(url, *extra, env=None):
    return CliRunner().invoke(cli, ["--registry", str(url), "audit", *extra], env=env, catch_exceptions=False)


def test_a_passing_audit_is_read_back_as_it_was_found_and_the_next_one_replaces_it(copy):
    registry = Registry(copy)
    assert latest_audit(registry) is None
    assert run_audit(copy).exit_code == 0
    first = latest_audit(registry)
    assert first is not None and first.ok and first.after_tasks == 2 and first.not_covered == []
    assert [t.task for t in first.tasks] == ["alpha", "beta"]
    for t in first.tasks:
        assert (t.problems, t.confirmed_by, t.predictions_equal) == (0, "full", True)
        assert t.audited == t.recorded is not None
    assert run_audit(copy, "--probe").exit_code == 0
    second = latest_audit(registry)
    assert second is not None and second.ok and second.at > first.at
    assert {t.confirmed_by for t in second.tasks} == {"probe"}
    # The same stream state audited again: its rows are replaced, not added to.
    rows = registry.evaluations(task="alpha", kind=KIND)
    assert sorted(e.metric for e in rows) == ["accuracy", VERDICT_METRIC]


def test_a_failed_audit_names_its_task_and_a_task_added_since_is_not_covered(copy, tiny_encoder_dir, tmp_path):
    path = Registry(copy).bundle_path("beta")
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert run_audit(copy).exit_code == 1
    latest = latest_audit(Registry(copy))
    assert latest is not None and not latest.ok
    verdicts = {t.task: t for t in latest.tasks}
    assert verdicts["alpha"].ok and verdicts["alpha"].audited is not None
    assert verdicts["beta"].problems == 1 and verdicts["beta"].audited is None and not verdicts["beta"].ok
    path.write_bytes(original)
    add_tiny_task(copy, "gamma", tiny_encoder_dir, tmp_path / "gamma", seed=5)
    again = latest_audit(Registry(copy))
    assert again is not None and again.at == latest.at and again.not_covered == ["gamma"]


def test_a_task_whose_signature_fails_is_not_re_signed_by_the_record(copy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    Registry(copy).sign_tasks()
    with sqlite3.connect(copy) as db:
        db.execute(
            "UPDATE evaluations SET value = value + 0.01 WHERE kind = 'registration' "
            "AND task_id = (SELECT id FROM tasks WHERE name = 'beta')"
        )
    result = run_audit(copy)
    assert result.exit_code == 1 and "beta: not recorded in the registry" in result.output
    latest = latest_audit(Registry(copy))
    assert latest is not None and not latest.ok
    verdicts = {t.task: t for t in latest.tasks}
    assert verdicts["alpha"].ok and verdicts["beta"].problems is None
    assert Registry(copy).fsck().signature_mismatches == ["beta"], "recording must not vouch for the edit"


def test_a_signed_registry_audited_without_its_key_says_the_outcome_was_not_recorded(copy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    Registry(copy).sign_tasks()
    monkeypatch.delenv(KEY_ENV)
    result = run_audit(copy)
    assert result.exit_code == 0 and "not recorded in the registry as its latest audit" in result.output
    assert latest_audit(Registry(copy)) is None
    cli_ok("--registry", copy, "tasks")  # the registry is as it was
