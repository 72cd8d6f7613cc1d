"""Task versions end to end on the tiny encoder: a task retrained as version 2 beside version 1
(runner.py `new_version`), promoted, rolled back and promoted again, each time serving exactly the
version that is current (its recorded golden logits through `cadapt predict`, its probe's logits bit
for bit through the serving API), the audit passing throughout; and a version
retired, restored byte for byte, and collected."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from continual_adapters.core.errors import TaskExistsError, TaskNotFoundError, VersionRetiredError
from continual_adapters.data.taskdata import DataSpec, load_eval_split
from continual_adapters.registry import Registry
from continual_adapters.serve.inference import Row, run_rows
from continual_adapters.serve.state import TaskLoader
from continual_adapters.stream.confirm import load_probe
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.serving import Inputs, predict_inputs
from tests.support.cli import cli_ok
from tests.support.reliability import write_tiny_data
from tests.support.serving import copy_registry
from tests.support.versions import COMMON, build_versioned, data_args, golden_probabilities, predicted_probabilities


@pytest.fixture(scope="module")
def versioned(tmp_path_factory, tiny_encoder_dir):
    return build_versioned(tmp_path_factory.mktemp("versions"), tiny_encoder_dir)


@pytest.fixture
def url(versioned, tmp_path):
    """A copy of the versioned registry for a test that changes it."""
    return copy_registry(versioned, tmp_path / "copy")


def audit_ok(url) -> dict:
    report = json.loads(cli_ok("--registry", url, "audit", "--json").output)
    assert report["ok"], report
    return report


def serves(url, ref: str, key: str) -> None:
    """`predict --task REF` is answered by version `key`, with that version's golden outputs."""
    registry = Registry(url)
    texts, golden = golden_probabilities(registry, key)
    answered, got = predicted_probabilities(url, ref, texts, registry.task(key).labels)
    assert answered == key
    assert torch.allclose(got, golden, atol=1e-6, rtol=0), (got - golden).abs().max()


def serves_probe(loader: TaskLoader, ref: str, key: str) -> None:
    """The serving API (serve/, what `cadapt serve` runs) answers `ref`'s rows with version `key`,
    giving its probe's recorded logits bit for bit."""
    registry = loader.registry
    probe = load_probe(registry, key)
    assert probe is not None
    task = registry.task(key)
    texts = load_eval_split(task.data, task.labels)[0].texts[: probe.rows]
    assert loader.model is not None and loader.model.tokenizer is not None
    padded = loader.model.tokenizer(texts, padding="longest", pad_to_multiple_of=8, return_tensors="pt")
    assert torch.equal(padded["input_ids"], probe.input_ids), "the probe holds these rows, uncut"
    answers = run_rows(loader.model, loader.state, [Row(text, None, ref) for text in texts], max_batch=32)
    assert {a.task for a in answers} == {key}
    assert torch.equal(torch.tensor([a.logits for a in answers], dtype=torch.float32), probe.logits)


def test_version_2_is_trained_and_proved_beside_version_1(versioned):
    registry = Registry(versioned)
    first, second = registry.task("alpha"), registry.task("alpha@2")
    assert (second.family, second.version, second.position) == ("alpha", 2, 3)
    assert first.data != second.data and "data-alpha2" in json.dumps(second.data), "its own data and provenance"
    proof = second.proof
    assert proof["unchanged"] and set(proof["before"]["bundle_files"]) == {"alpha", "beta"}
    assert proof["before"]["bundle_files"]["alpha"] == registry.bundle("alpha").sha256
    assert proof["probes"] == {"alpha": 0.0, "beta": 0.0}, "version 1 confirmed like any earlier task"
    assert registry.bundle("alpha").path != registry.bundle("alpha@2").path
    assert registry.bundle("alpha@2").seed == 3 and registry.artifact("alpha@2", "probe") is not None
    assert [e.after_tasks for e in registry.evaluations("alpha", kind="reeval") if e.metric == "accuracy"] == [2, 3]
    golden = [torch.tensor(registry.task(k).proof["golden"]["logits"]) for k in ("alpha", "alpha@2")]
    assert not torch.equal(*golden), "two different adapters, or the serving checks below prove nothing"
    assert registry.resolve("alpha").name == "alpha", "a new version is not current until promoted"


def test_promote_roll_back_and_promote_again_serve_the_right_adapter(url):
    loader = TaskLoader(Registry(url))  # one server's loader, running through every step
    loader.reload()
    serves(url, "alpha", "alpha")
    serves_probe(loader, "alpha", "alpha")
    audit_ok(url)
    for ref, current in (("alpha@2", "alpha@2"), ("alpha@1", "alpha"), ("alpha@2", "alpha@2")):
        promoted = json.loads(cli_ok("--registry", url, "promote", ref, "--by", "test", "--json").output)
        assert (promoted["key"], promoted["promoted_by"]) == (current, "test")
        serves(url, "alpha", current)
        serves(url, "alpha@1", "alpha")
        serves(url, "alpha@2", "alpha@2")
        served_before = loader.state.version
        assert loader.reload().served == 3 and loader.state.version > served_before, "a promotion is a change"
        for name, key in (("alpha", current), ("alpha@current", current), ("alpha@1", "alpha"), ("beta", "beta")):
            serves_probe(loader, name, key)
        serves_probe(loader, "alpha@2", "alpha@2")
        assert loader.state.identifier is not None and set(loader.state.identifier.tasks) <= {current, "beta"}
        report = audit_ok(url)
        assert [t["task"] for t in report["tasks"]] == ["alpha", "beta", "alpha@2"]
    assert [p.version for p in Registry(url).promotions("alpha")] == [2, 1, 2]


def test_the_server_refuses_a_reference_to_a_version_it_does_not_serve(url):
    cli_ok("--registry", url, "alias", "alpha", "production", "2")
    cli_ok("--registry", url, "promote", "alpha@2")
    loader = TaskLoader(Registry(url))
    loader.reload()
    assert loader.state.require("alpha@production").name == "alpha@2"
    cli_ok("--registry", url, "remove", "alpha@2", "--yes")
    loader.reload()
    for ref in ("alpha", "alpha@2", "alpha@production", "alpha@9", "zzz"):
        with pytest.raises(TaskNotFoundError, match="no served task"):
            loader.state.require(ref)
    assert loader.state.require("alpha@1").name == "alpha" and set(loader.state.tasks) == {"alpha", "beta"}


def test_predict_routes_each_row_to_the_version_it_names(url):
    cli_ok("--registry", url, "alias", "alpha", "production", "1")
    cli_ok("--registry", url, "promote", "alpha@2")
    runner = Runner(Registry(url), progress=False)
    refs = ["alpha", "alpha@1", "alpha@production", "beta", "alpha@2"]
    predicted = predict_inputs(runner, Inputs(["good film 1"] * len(refs), tasks=refs), None)
    assert [p.task for p in predicted] == ["alpha@2", "alpha", "alpha", "beta", "alpha@2"]
    routed = predict_inputs(runner, Inputs(["good film 3", "bad film 4", "nice film 5"]), "auto")
    assert {p.task for p in routed} <= {"alpha@2", "beta"}, "--task auto chooses among current versions only"
    cli_ok("--registry", url, "remove", "alpha@1", "--yes")
    with pytest.raises(VersionRetiredError, match="alpha@1: it is retired"):
        predict_inputs(runner, Inputs(["x"]), "alpha@production")


def test_serving_a_selection_of_tasks_takes_references_too(url):
    loader = TaskLoader(Registry(url), selection=("alpha", "beta@1"))
    loader.reload()
    assert set(loader.state.tasks) == {"alpha", "beta"}
    cli_ok("--registry", url, "promote", "alpha@2")
    loader.reload()
    assert set(loader.state.tasks) == {"alpha@2", "beta"}, "a selected bare name follows promotion"
    assert loader.state.require("alpha").name == "alpha@2"
    with pytest.raises(TaskNotFoundError):
        loader.state.require("alpha@1")


def test_a_new_version_through_the_python_api(url, tmp_path):
    registry = Registry(url)
    (tmp_path / "v3").mkdir()
    files = write_tiny_data(tmp_path / "v3", seed=7)
    spec = DataSpec(train=str(files["train"]), validation=str(files["validation"]), test=str(files["test"]))
    before = registry.dump()
    with pytest.raises(TaskExistsError, match="--new-version"):
        Runner(registry, progress=False).add_task("alpha", spec)
    assert registry.dump() == before, "refused before any work"
    result = Runner(registry, progress=False).add_task("alpha", spec, new_version=True)
    assert (result.task.name, result.task.version, result.task.position) == ("alpha@3", 3, 4)
    assert result.proof["probes"] == {"alpha": 0.0, "beta": 0.0, "alpha@2": 0.0}
    assert [v.key for v in registry.versions("alpha")] == ["alpha", "alpha@2", "alpha@3"]


def test_remove_then_restore_gives_back_the_same_bundle_and_the_audit_fills_the_gap(url, tmp_path):
    registry = Registry(url)
    bundle = registry.root / registry.bundle("alpha@2").path
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    cli_ok("--registry", url, "remove", "alpha@2", "--yes")
    assert bundle.exists() and [t.name for t in registry.tasks()] == ["alpha", "beta"]
    fsck = json.loads(cli_ok("--registry", url, "fsck", "--json").output)
    assert fsck["ok"] and fsck["orphan_files"] == [] and registry.bundle("alpha@2").path in fsck["retired_files"]
    audit_ok(url)
    # A task added while alpha@2 is retired does not confirm it: the matrix has a hole there.
    cli_ok("--registry", url, "add-task", "gamma", *data_args(tmp_path / "gamma", 4), *COMMON)
    restored = json.loads(cli_ok("--registry", url, "restore", "alpha@2", "--json").output)
    assert restored == {"task": "alpha", "key": "alpha@2", "version": 2, "status": "ready"}
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == digest == registry.bundle("alpha@2").sha256
    report = audit_ok(url)
    assert [(h["task"], h["after"], h["filled"]) for h in report["holes"]] == [("alpha@2", "gamma", True)]
    serves(url, "alpha@2", "alpha@2")


def test_gc_deletes_only_retired_bundles_past_the_retention_time(url):
    registry = Registry(url)
    kept = {k: registry.root / registry.bundle(k).path for k in ("alpha", "alpha@2", "beta")}
    cli_ok("--registry", url, "remove", "alpha@2", "--yes")
    recent = json.loads(cli_ok("--registry", url, "gc", "--older-than", "30d", "--json").output)
    assert (recent["deleted"], recent["kept"]) == ([], ["alpha@2"]) and all(p.exists() for p in kept.values())
    done = json.loads(cli_ok("--registry", url, "gc", "--older-than", "0s", "--yes", "--json").output)
    assert done["deleted"] == ["alpha@2"] and not kept["alpha@2"].exists()
    assert kept["alpha"].exists() and kept["beta"].exists(), "ready versions are never collected"
    assert json.loads(cli_ok("--registry", url, "fsck", "--json").output)["ok"]
    audit_ok(url)
