"""A task's recorded data paths name one file each, for good.

The issue: a task registered with ``--train cr/train.jsonl … --test cr/test.jsonl`` recorded those
relative paths; once ``cr/`` had moved, reloading its evaluation split found a same-named file
under the default data directory and failed with "data file changed since the task was
registered". Now the absolute paths read at registration are what is recorded and reloaded, and
a file that is gone is "data unavailable", naming it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from continual_adapters.core.errors import DataError, IntegrityError
from continual_adapters.data.taskdata import DataSpec, load_eval_split, load_recorded_train, load_task_data


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(tag: str, count: int) -> list[dict]:
    return [{"text": f"{tag} good {i}", "label": "pos"} for i in range(count)] + [
        {"text": f"{tag} bad {i}", "label": "neg"} for i in range(count)
    ]


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """`work/cr/` with the task's files (the cwd), and a default data dir holding another `cr/`."""
    work, shared = tmp_path / "work", tmp_path / "shared-data"
    for split, count in (("train", 20), ("validation", 5), ("test", 6)):
        _write(work / "cr" / f"{split}.jsonl", _rows(f"cr-{split}", count))
        _write(shared / "cr" / f"{split}.jsonl", _rows(f"other-{split}", count + 1))
    monkeypatch.chdir(work)
    monkeypatch.setenv("CADAPT_DATA_DIR", str(shared))
    return {"work": work, "shared": shared, "cr": (work / "cr").resolve()}


def _register(spec: DataSpec) -> tuple[dict, list[str]]:
    """What the runner stores: the provenance, through JSON as the registry keeps it."""
    loaded = load_task_data(spec)
    return json.loads(json.dumps(loaded.provenance(spec))), loaded.labels


RELATIVE = DataSpec(train="cr/train.jsonl", validation="cr/validation.jsonl", test="cr/test.jsonl")


def test_relative_paths_are_recorded_absolute(layout):
    provenance, labels = _register(RELATIVE)
    cr = layout["cr"]
    for split in ("train", "validation", "test"):
        assert provenance["spec"][split] == str(cr / f"{split}.jsonl")
        assert provenance["splits"][split]["path"] == str(cr / f"{split}.jsonl")
        assert Path(provenance["splits"][split]["path"]).is_absolute()
    split, targets = load_eval_split(provenance, labels)
    assert split.texts[0].startswith("cr-test") and len(targets) == 12


def test_moved_folder_is_data_unavailable_never_the_same_named_file(layout, tmp_path):
    provenance, labels = _register(RELATIVE)
    shutil.move(layout["work"] / "cr", tmp_path / "moved-away")
    original, other = layout["cr"] / "test.jsonl", layout["shared"] / "cr" / "test.jsonl"
    assert other.is_file()  # the trap: `cr/test.jsonl` under the default data dir
    with pytest.raises(DataError, match="^data unavailable:") as caught:
        load_eval_split(provenance, labels)
    assert str(original) in str(caught.value) and str(other) not in str(caught.value)
    with pytest.raises(DataError, match="^data unavailable:") as caught:
        load_recorded_train(provenance)  # the centroid rebuild of `--task auto`
    assert str(layout["cr"] / "train.jsonl") in str(caught.value)


def test_reload_from_another_directory_reads_the_registered_file(layout, tmp_path, monkeypatch):
    provenance, labels = _register(RELATIVE)
    elsewhere = tmp_path / "elsewhere"
    _write(elsewhere / "cr" / "test.jsonl", _rows("elsewhere", 6))
    monkeypatch.chdir(elsewhere)
    split, _ = load_eval_split(provenance, labels)
    assert split.source["path"] == str(layout["cr"] / "test.jsonl") and split.texts[0].startswith("cr-test")


def test_carved_validation_reloads_from_the_recorded_train_file(layout, tmp_path):
    provenance, labels = _register(DataSpec(train="cr/train.jsonl"))
    assert provenance["eval_split"] == "validation" and provenance["spec"]["train"] == str(layout["cr"] / "train.jsonl")
    split, _ = load_eval_split(provenance, labels)
    assert split.source["carved_from"] == "train" and split.texts[0].startswith("cr-train")
    train = load_recorded_train(provenance)
    assert len(train) + len(split) == 40 and not set(train.texts) & set(split.texts)
    shutil.move(layout["work"] / "cr", tmp_path / "moved-away")
    with pytest.raises(DataError, match="^data unavailable:.*" + re.escape(str(layout["cr"] / "train.jsonl"))):
        load_eval_split(provenance, labels)


def test_registry_with_relative_paths_is_never_looked_up_in_the_data_dir(layout, tmp_path):
    """A registry written before paths were pinned: a relative recorded path is taken as given."""
    provenance, labels = _register(RELATIVE)
    old = copy.deepcopy(provenance)
    for split in ("train", "validation", "test"):
        old["spec"][split] = f"cr/{split}.jsonl"
        old["splits"][split]["path"] = f"cr/{split}.jsonl"
    assert load_eval_split(old, labels)[0].texts[0].startswith("cr-test")  # still there, relative to the cwd
    shutil.move(layout["work"] / "cr", tmp_path / "moved-away")
    with pytest.raises(DataError, match="^data unavailable: cr/test.jsonl") as caught:
        load_eval_split(old, labels)
    assert str(layout["shared"]) not in str(caught.value)


def test_changed_file_in_place_is_still_refused(layout):
    provenance, labels = _register(RELATIVE)
    test_file = layout["cr"] / "test.jsonl"
    test_file.write_text(test_file.read_text() + json.dumps({"text": "one more", "label": "pos"}) + "\n")
    with pytest.raises(IntegrityError, match="data file changed since the task was registered"):
        load_eval_split(provenance, labels)
    train_file = layout["cr"] / "train.jsonl"
    train_file.write_text(train_file.read_text().replace("cr-train good 0", "cr-train good zero"))
    with pytest.raises(IntegrityError, match="data file changed"):
        load_recorded_train(provenance)


# -- caps: max_validation caps the validation split alone, max_eval the test split (and validation
# -- too when max_validation is not set, as before the split caps existed)


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def test_max_validation_caps_validation_alone_on_real_data(data_dir):
    spec = DataSpec.from_folder("trec", data_dir, max_validation=20)
    assert (spec.max_eval, spec.max_validation) == (None, 20)
    loaded = load_task_data(spec)
    assert len(loaded.validation) == 20 and len(loaded.targets["validation"]) == 20
    assert loaded.eval_split == "test" and len(loaded.evaluation) == _lines(data_dir / "trec" / "test.jsonl") == 500
    provenance = json.loads(json.dumps(loaded.provenance(spec)))
    assert provenance["spec"]["max_validation"] == 20 and provenance["spec"]["max_eval"] is None
    assert provenance["sizes"] == {"train": _lines(data_dir / "trec" / "train.jsonl"), "validation": 20, "test": 500}
    split, targets = load_eval_split(provenance, loaded.labels)  # a re-score reads the same, uncapped, test split
    assert split.texts == loaded.evaluation.texts and targets == loaded.targets["test"]


def test_max_eval_alone_still_caps_both_and_max_validation_overrides_it_for_validation(data_dir):
    both = load_task_data(DataSpec.from_folder("trec", data_dir, max_eval=30))
    assert (len(both.validation), len(both.evaluation)) == (30, 30)
    assert both.provenance()["spec"]["max_validation"] is None
    split = load_task_data(DataSpec.from_folder("trec", data_dir, max_eval=30, max_validation=12))
    assert (len(split.validation), len(split.evaluation)) == (12, 30)
    assert split.evaluation.texts == both.evaluation.texts  # the test split is the one max_eval gave before
    # The same seeded subset whichever field caps it: max_validation=12 is max_eval=12's validation.
    twelve = load_task_data(DataSpec.from_folder("trec", data_dir, max_eval=12))
    assert split.validation.texts == twelve.validation.texts


def test_a_registry_recorded_before_max_validation_reloads_as_before(data_dir):
    loaded = load_task_data(DataSpec.from_folder("trec", data_dir, max_eval=30))
    provenance = json.loads(json.dumps(loaded.provenance()))
    del provenance["spec"]["max_validation"]  # what registries written before the field hold
    split, _ = load_eval_split(provenance, loaded.labels)
    assert split.texts == loaded.evaluation.texts and len(split) == 30


def test_max_validation_caps_an_evaluation_split_that_is_the_validation_split(layout):
    """No test file: the task is scored on its validation split, so max_validation caps what is
    scored, and the re-score reloads that same capped split."""
    spec = DataSpec(train="cr/train.jsonl", validation="cr/validation.jsonl", max_eval=100, max_validation=3)
    provenance, labels = _register(spec)
    assert provenance["eval_split"] == "validation" and provenance["sizes"]["validation"] == 3
    loaded = load_task_data(spec)
    split, _ = load_eval_split(provenance, labels)
    assert len(split) == 3 and split.texts == loaded.evaluation.texts
