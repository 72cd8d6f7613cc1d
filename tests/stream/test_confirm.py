"""Adding a task confirms every earlier one by its probe: no earlier dataset is read, the matrix has
an entry for every earlier task at every step, and a change no file hash can see is still caught."""

import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from continual_adapters.cli import cli
from continual_adapters.core.config import TrainConfig
from continual_adapters.core.errors import IntegrityError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.files import bundle as bundle_module
from continual_adapters.registry import Registry
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from tests.support.cli import cli_ok

CONFIG = TrainConfig(epochs=1, batch_size=16, max_length=32)
NAMES = ("sst2", "trec", "cr")


def copy_data(data_dir, tmp_path, name):
    """The task's files in a folder of its own, so the test can take them away afterwards."""
    folder = tmp_path / "data" / name
    shutil.copytree(data_dir / name, folder)
    return DataSpec.from_folder(folder, max_train=32, max_eval=24)


def build(tmp_path, data_dir, tiny_encoder_dir, names=NAMES, reeval="probe"):
    registry = Registry(tmp_path / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    for name in names:
        runner.add_task(name, copy_data(data_dir, tmp_path, name), train=CONFIG, reeval=reeval)
    return registry, runner


def test_probes_confirm_earlier_tasks_without_their_data(tmp_path, data_dir, tiny_encoder_dir):
    registry, runner = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:2])
    shutil.rmtree(tmp_path / "data")  # every earlier task's data is gone
    third = Runner(registry, encoder=tiny_encoder_dir, progress=False).add_task(
        "mr", DataSpec.from_folder(data_dir / "mr", max_train=32, max_eval=24), train=CONFIG
    )
    assert third is not None and third.proof["unchanged"] and third.proof["confirmation"] == "probe"
    assert set(third.proof["probes"]) == {"sst2", "trec"} and set(third.proof["probes"].values()) == {0.0}
    names, matrix = registry.accuracy_matrix()
    _, how = registry.confirmations()
    assert names == ["sst2", "trec", "mr"] and all(v is not None for i, row in enumerate(matrix) for v in row[: i + 1])
    assert how[2] == ["probe", "probe", "registration"] and how[1] == ["probe", "registration", None]
    assert matrix[2][0] == matrix[1][0] == matrix[0][0]  # carried forward: the last full score
    assert [a.kind for a in registry.artifacts("mr")] == ["centroids", "probe"]
    report = audit(Runner(registry, encoder=tiny_encoder_dir, progress=False))
    assert report.ok  # no data to re-score sst2 and trec: their probes confirm them, and it is said
    by_task = {t.task: t for t in report.tasks}
    assert [by_task[n].confirmed_by for n in names] == ["probe", "probe", "full"]
    assert "data unavailable" in by_task["sst2"].notes[0] and not by_task["mr"].notes
    report_json = json.loads(cli_ok("--registry", registry.url, "report", "--json").output)
    assert report_json["matrix"]["confirmed_by"] == how
    markdown = cli_ok("--registry", registry.url, "report").output
    assert len(re.findall(r"\d\.\d{4}ᵖ", markdown)) == 3 and "replaying its probe" in markdown
    fast = cli_ok("--registry", registry.url, "audit", "--probe", "--json").output
    assert json.loads(fast)["ok"] and json.loads(fast)["mode"] == "probe"


def test_probe_audit_catches_a_changed_bundle_even_with_its_row_rewritten(tmp_path, data_dir, tiny_encoder_dir):
    """An adapter file replaced by another valid one, its row's sha256 and size rewritten to match (as
    someone with database access could): the hashes agree, the probe does not."""
    registry, _ = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:1])
    other = Registry(tmp_path / "other.db")
    Runner(other, encoder=tiny_encoder_dir, progress=False).add_task(
        "sst2", copy_data(data_dir, tmp_path / "other", "sst2"), train=TrainConfig(epochs=1, max_length=32, seed=1)
    )
    registry.bundle_path("sst2").write_bytes(other.bundle_path("sst2").read_bytes())
    forged = other.bundle("sst2")
    engine = create_engine(registry.url)  # a raw edit, as someone with database access could make
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE bundles SET sha256 = :sha, size_bytes = :size"),
            dict(sha=forged.sha256, size=forged.size_bytes),
        )
    engine.dispose()
    result = CliRunner().invoke(cli, ["--registry", registry.url, "audit", "--probe"])
    assert result.exit_code == 1 and "probe outputs differ" in result.output


def test_full_policy_rescores_and_marks_it(tmp_path, data_dir, tiny_encoder_dir):
    registry, _ = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:2], reeval="full")
    _, how = registry.confirmations()
    assert how[1] == ["full", "registration"]
    assert audit(Runner(registry, encoder=tiny_encoder_dir, progress=False)).ok


def test_full_policy_without_data_falls_back_to_the_probe(tmp_path, data_dir, tiny_encoder_dir):
    registry, runner = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:1])
    shutil.rmtree(tmp_path / "data" / "sst2")
    result = runner.add_task("trec", copy_data(data_dir, tmp_path, "trec"), train=CONFIG, reeval="full")
    assert result is not None and "data unavailable" in result.proof["unavailable"]["sst2"]
    assert result.proof["probes"] == {"sst2": 0.0} and registry.confirmations()[1][1][0] == "probe"


def test_naive_without_earlier_data_says_so_instead_of_failing(tmp_path, data_dir, tiny_encoder_dir):
    """Shared weights change earlier outputs on purpose, so a missing dataset cannot be stood in for by
    the probe: the entry is recorded as not scored and the proof names the task."""
    registry = Registry(tmp_path / "registry.db")
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False, method="naive")
    runner.add_task("sst2", copy_data(data_dir, tmp_path, "sst2"), train=CONFIG)
    shutil.rmtree(tmp_path / "data" / "sst2")
    result = runner.add_task("trec", copy_data(data_dir, tmp_path, "trec"), train=CONFIG)
    assert result is not None and "data unavailable" in result.proof["unavailable"]["sst2"]
    assert result.proof["probes"] == {} and result.reevaluated == {}
    names, matrix = registry.accuracy_matrix()
    assert names == ["sst2", "trec"] and matrix[1][0] is None and matrix[1][1] is not None


def test_tensor_changed_in_memory_is_caught_although_the_file_hash_matches(
    tmp_path, data_dir, tiny_encoder_dir, monkeypatch
):
    """The bundle on disk is intact (its sha256 matches), but the weights loaded from it are not: only
    replaying the probe can see that. The addition is refused and the registry left as it was."""
    registry, runner = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:2])
    before = registry.dump()
    real = bundle_module.load_stored_task

    def tampered(model, store, rel, *args, **kwargs):
        spec = real(model, store, rel, *args, **kwargs)
        if spec.name == "sst2":
            with torch.no_grad():
                model.task_modules("sst2").head.out.bias.add_(1e-3)
        return spec

    monkeypatch.setattr("continual_adapters.stream.runner.load_stored_task", tampered)
    fresh = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    with pytest.raises(IntegrityError, match="'sst2' no longer gives its recorded outputs"):
        fresh.add_task("cr", copy_data(data_dir, tmp_path, "cr"), train=CONFIG)
    assert registry.dump() == before


def test_changed_base_weights_are_caught_by_the_probes_even_with_a_forged_hash(
    tmp_path, data_dir, tiny_encoder_dir, monkeypatch
):
    """Base weights changed in memory, and their digest forged to the recorded one so that every hash
    check passes: the earlier task's probe still sees it."""
    registry, _ = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:1])
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    recorded = runner.model.base_sha256()
    with torch.no_grad():
        next(runner.model.encoder.parameters()).mul_(1.001)
    monkeypatch.setattr(runner.model, "base_sha256", lambda refresh=False: recorded)
    with pytest.raises(IntegrityError, match="'sst2' no longer gives its recorded outputs"):
        runner.add_task("trec", copy_data(data_dir, tmp_path, "trec"), train=CONFIG)
    assert [t.name for t in registry.tasks()] == ["sst2"]


def test_earlier_tasks_are_released_after_confirming(tmp_path, data_dir, tiny_encoder_dir):
    """Memory does not grow with the stream: only the task being added stays attached."""
    _, runner = build(tmp_path, data_dir, tiny_encoder_dir)
    assert list(runner.model.tasks) == ["cr"]


def test_bundles_read_while_confirming_are_not_hashed_again_afterwards(
    tmp_path, data_dir, tiny_encoder_dir, monkeypatch
):
    """Confirming attaches every earlier bundle, checked against its recorded sha256; the hashes taken
    after the addition reuse those checks instead of reading each file a third time, and still name
    the bytes that were read."""
    registry, runner = build(tmp_path, data_dir, tiny_encoder_dir, NAMES[:2])
    store_type = type(registry.store)
    hashed = []
    real_sha256 = store_type.sha256

    def spy(self, path):
        hashed.append(path)
        return real_sha256(self, path)

    monkeypatch.setattr(store_type, "sha256", spy)
    result = runner.add_task("cr", copy_data(data_dir, tmp_path, "cr"), train=CONFIG)
    assert result is not None and result.proof["unchanged"]
    assert set(runner.read_since_start) == {"sst2", "trec"}
    recorded = {name: registry.bundle(name).sha256 for name in ("sst2", "trec")}
    assert result.proof["after"]["bundle_files"] == recorded == runner.read_since_start
    assert not {registry.bundle(name).path for name in recorded} & set(hashed)
