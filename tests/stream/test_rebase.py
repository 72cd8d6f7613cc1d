"""`rebase` (stream/rebase.py): a registry's tasks retrained on another encoder, into a new registry.

The source is three tiny tasks on conftest's tiny BERT; the new base is another tiny BERT of a
different shape (tests/support/rebase.py), so nothing of the source could be reused by mistake.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from continual_adapters.core.errors import IntegrityError, TaskNotFoundError
from continual_adapters.registry import Registry
from continual_adapters.report.rebase import rebase_markdown
from continual_adapters.stream.audit import audit
from continual_adapters.stream.rebase import RebaseError, rebase, recipe
from continual_adapters.stream.runner import Runner
from tests.support.rebase import TASKS, build_method_source, build_source, save_second_encoder
from tests.support.serving import copy_registry

NAMES = list(TASKS)


@pytest.fixture(scope="module")
def second_encoder(tmp_path_factory) -> str:
    return save_second_encoder(tmp_path_factory.mktemp("second-encoder"))


@pytest.fixture(scope="module")
def built_source(tmp_path_factory, tiny_encoder_dir) -> Path:
    return build_source(tmp_path_factory.mktemp("rebase-source"), tiny_encoder_dir)


@pytest.fixture
def source(built_source, tmp_path) -> Registry:
    """A private copy of the source registry (its data files are shared: tests that break one build their own)."""
    return Registry(copy_registry(built_source, tmp_path / "source"))


@pytest.fixture(scope="module")
def carried(built_source, second_encoder, tmp_path_factory):
    """The whole source rebased once: the result, and the target it wrote."""
    target = Registry(tmp_path_factory.mktemp("rebase-target") / "registry.db")
    return rebase(Registry(built_source), target, second_encoder, progress=False), target


def test_every_task_is_retrained_on_the_new_encoder_in_stream_order(carried, built_source, second_encoder):
    result, target = carried
    source = Registry(built_source)
    assert [t.name for t in target.tasks()] == NAMES
    assert [(row.task, row.status, row.reason) for row in result.rows] == [(n, "rebased", None) for n in NAMES]
    assert target.base_model().name == second_encoder != source.base_model().name
    assert (target.base_model().hidden_size, target.base_model().num_layers) == (48, 3)
    for name in NAMES:
        old, new = source.task(name), target.task(name)
        # Same data (files, sha256, caps, sizes), same labels, same settings: only the base differs.
        assert (new.data, new.labels, new.method, new.primary_metric) == (old.data, old.labels, old.method, "accuracy")
        assert recipe(new, target.bundle(name)) == recipe(old, source.bundle(name))
        assert target.bundle(name).hyperparameters["max_length"] == TASKS[name]
        assert target.bundle(name).config["task"] == source.bundle(name).config["task"]
        assert target.bundle(name).sha256 != source.bundle(name).sha256
    assert audit(Runner(target, progress=False)).ok
    assert target.fsck().ok


def test_the_comparison_gives_old_and_new_score_parameters_and_time(carried, built_source):
    result, target = carried
    source = Registry(built_source)
    old = {s.name: s for s in source.task_table()}
    new = {s.name: s for s in target.task_table()}
    for row in result.rows:
        assert (row.old_score, row.new_score) == (old[row.task].score, new[row.task].score)
        assert (row.old_params, row.new_params) == (old[row.task].total_params, new[row.task].total_params)
        assert row.new_params > row.old_params  # 48-wide, 3 layers against 32-wide, 2 layers
        assert row.new_train_s == target.bundle(row.task).wall_time_s > 0
        assert row.old_train_s == source.bundle(row.task).wall_time_s > 0
        assert row.same_data is True and row.delta == pytest.approx(row.new_score - row.old_score)
    assert result.old_base["parameters"] < result.new_base["parameters"]
    text = rebase_markdown(result)
    for row in result.rows:
        line = next(line for line in text.splitlines() if f"| {row.task} |" in line)
        assert f"{row.old_score:.4f}" in line and f"{row.new_score:.4f}" in line and f"{row.new_params:,}" in line
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rebased"] == NAMES and data["skipped"] == {} and len(data["tasks"]) == 3


def test_a_rerun_is_a_no_op(carried, built_source, second_encoder):
    _, target = carried
    before = target.dump()
    again = rebase(Registry(built_source), target, second_encoder, progress=False)
    assert [row.status for row in again.rows] == ["ready"] * 3
    assert target.dump() == before
    assert [asdict(r) | {"status": None} for r in again.rows] == [asdict(r) | {"status": None} for r in carried[0].rows]


def test_a_task_whose_data_is_gone_is_listed_as_skipped_and_the_others_proceed(
    tiny_encoder_dir, second_encoder, tmp_path
):
    url = build_source(tmp_path / "own", tiny_encoder_dir)
    (tmp_path / "own" / "data-beta" / "train.jsonl").unlink()
    with (tmp_path / "own" / "data-gamma" / "test.jsonl").open("a") as changed:
        changed.write(json.dumps({"text": "one more row", "label": "pos"}) + "\n")
    target = Registry(tmp_path / "target.db")
    result = rebase(Registry(url), target, second_encoder, progress=False)
    assert [(row.task, row.status) for row in result.rows] == [
        ("alpha", "rebased"),
        ("beta", "skipped"),
        ("gamma", "skipped"),
    ]
    assert result.skipped["beta"].startswith("data unavailable: ") and "data-beta/train.jsonl" in result.skipped["beta"]
    assert result.skipped["gamma"].startswith("data changed: ") and "data-gamma/test.jsonl" in result.skipped["gamma"]
    assert [t.name for t in target.tasks(include_retired=True, include_pending=True)] == ["alpha"]
    skipped_row = result.rows[1]
    assert skipped_row.old_score is not None and skipped_row.new_score is None and skipped_row.same_data is None
    text = rebase_markdown(result)
    assert "| beta |" in text and "skipped: data unavailable" in text and "- gamma: data changed" in text
    assert audit(Runner(target, progress=False)).ok


def test_tasks_selects_a_subset_and_a_later_run_adds_the_rest(source, second_encoder, tmp_path):
    target = Registry(tmp_path / "target.db")
    first = rebase(source, target, second_encoder, tasks=["gamma", "alpha"], progress=False)
    assert [(row.task, row.status) for row in first.rows] == [("alpha", "rebased"), ("gamma", "rebased")]
    assert first.excluded == ["beta"] and "Not selected (--tasks): beta." in rebase_markdown(first)
    assert [t.name for t in target.tasks()] == ["alpha", "gamma"]
    rest = rebase(source, target, second_encoder, progress=False)
    assert [(row.task, row.status) for row in rest.rows] == [
        ("alpha", "ready"),
        ("beta", "rebased"),
        ("gamma", "ready"),
    ]
    assert [t.name for t in target.tasks()] == ["alpha", "gamma", "beta"]  # the target's order is that of its additions
    assert audit(Runner(target, progress=False)).ok
    with pytest.raises(TaskNotFoundError, match="delta"):
        rebase(source, target, second_encoder, tasks=["delta"], progress=False)


@pytest.mark.parametrize(
    ("method", "options", "recorded"),
    [
        ("lora", ("--lora-rank", "4"), lambda b: b.hyperparameters["options"] == {"lora_rank": 4}),
        ("top-k", ("--top-layers", "1"), lambda b: b.config["task"]["top_k"] == 1),
        ("full", (), lambda b: b.param_counts["encoder"] > 0),
    ],
)
def test_registries_of_other_isolating_methods_are_rebased_through_the_same_runner(
    method, options, recorded, tiny_encoder_dir, second_encoder, tmp_path
):
    url = build_method_source(tmp_path / "src.db", tmp_path, tiny_encoder_dir, method, ("first", "second"), *options)
    target = Registry(tmp_path / "target.db")
    result = rebase(Registry(url), target, second_encoder, progress=False)
    assert [row.status for row in result.rows] == ["rebased", "rebased"]
    assert {t.method for t in target.tasks()} == {method}
    assert all(recorded(target.bundle(name)) for name in ("first", "second"))
    assert target.task("second").proof["unchanged"] is True
    assert audit(Runner(target, progress=False)).ok


def test_a_shared_encoder_registry_is_refused_before_anything_is_written(tiny_encoder_dir, second_encoder, tmp_path):
    url = build_method_source(tmp_path / "naive.db", tmp_path, tiny_encoder_dir, "naive", ("only",))
    with pytest.raises(RebaseError, match="naive tasks: a shared-encoder method"):
        rebase(Registry(url), Registry(tmp_path / "target.db"), second_encoder, progress=False)
    assert not (tmp_path / "target.db").exists()


def test_refusals_name_the_problem(source, second_encoder, tiny_encoder_dir, tmp_path):
    with pytest.raises(RebaseError, match="the target is the source"):
        rebase(source, Registry(source.url), second_encoder, progress=False)
    target = Registry(tmp_path / "target.db")
    rebase(source, target, second_encoder, tasks=["alpha"], progress=False)
    with pytest.raises(RebaseError, match=f"was built on {second_encoder}"):
        rebase(source, target, tiny_encoder_dir, progress=False)
    unrelated = Registry(copy_registry(Path(source.url.removeprefix("sqlite:///")), tmp_path / "unrelated"))
    unrelated.remove_task("alpha")
    with pytest.raises(RebaseError, match="holds tasks that are not the source's: alpha"):
        rebase(unrelated, target, second_encoder, progress=False)


def test_an_encoder_folder_is_recorded_by_path_and_checked_by_hash(source, second_encoder, tmp_path):
    """The target records a local encoder by its absolute path; other weights at that path are refused
    when the next task is retrained on them."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "encoder"
    shutil.copytree(second_encoder, folder)
    target = Registry(tmp_path / "target.db")
    rebase(source, target, str(folder), tasks=["alpha"], progress=False)
    assert target.base_model().name == str(folder.resolve())
    weights = load_file(folder / "model.safetensors")
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}, folder / "model.safetensors")
    with pytest.raises(IntegrityError, match="base weights"):
        rebase(source, target, str(folder), progress=False)
    assert [t.name for t in target.tasks(include_pending=True)] == ["alpha"]
