"""bench/long_records.py keeps each long run's numbers in a committed record, and
bench/long_benchmark.py renders from the records alone: checked on a tiny run whose folder is
deleted after it was recorded (the real runs take hours)."""

from __future__ import annotations

import importlib.util
import json

from continual_adapters.core.config import TrainConfig
from continual_adapters.data.taskdata import DataSpec, load_task_data
from continual_adapters.registry import Registry
from continual_adapters.report.comparison import compare
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.scenario import load_scenario, write_final_correct
from tests.support.paths import ROOT


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def tiny_scenario(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\nseeds: [0]\ntrain: {epochs: 1, batch_size: 16, max_length: 32}\n"
        "methods:\n  adapters: {adapter_size: 8, lr: 3.0e-3}\n  naive: {lr: 1.0e-4}\n"
        "tasks:\n  - {name: sst2, data: sst2}\n  - {name: trec, data: trec}\n"
    )
    return load_scenario(path)


def make_run(folder, encoder, data_dir, names):
    folder.mkdir(parents=True)
    registry = Registry(folder / "registry.db")
    runner = Runner(registry, encoder=encoder, progress=False)
    for name in names:
        spec = DataSpec.from_folder(data_dir / name, max_train=32, max_eval=20)
        runner.add_task(name, spec, train=TrainConfig(epochs=1, batch_size=16, max_length=32))
    write_final_correct(folder, audit(runner))
    registry.close()


def test_records_outlive_their_run_folders(tmp_path, data_dir, tiny_encoder_dir):
    """A finished adapters run and a naive run cut off after one task, recorded: the record holds
    the task-unknown scores (measured once, cached beside the run), the majority shares and the wall
    time; with every run folder deleted, gather() rebuilds the row compare() made from the folder."""
    records, bench, tables = load("long_records"), load("long_benchmark"), tmp_path / "records"
    scenario = tiny_scenario(tmp_path)
    runs = tmp_path / "runs" / "long_order4"
    make_run(runs / "adapters" / "seed0", tiny_encoder_dir, data_dir, ["sst2", "trec"])
    make_run(runs / "naive" / "seed3", tiny_encoder_dir, data_dir, ["sst2"])
    expected = next(m for m in compare(scenario, runs)["methods"] if m["label"] == "adapters")

    quick = records.record_runs(tmp_path / "runs", tables, scenario_of=lambda order: scenario, identification=False)
    assert json.loads(quick[0].read_text())["identification"] is None, "not measured: the record comes first"
    assert not (runs / "adapters" / "seed0" / records.IDENTIFICATION).exists()
    written = records.record_runs(tmp_path / "runs", tables, scenario_of=lambda order: scenario)
    assert [p.relative_to(tables).as_posix() for p in written] == [
        "long_order4/adapters_seed0.json",
        "long_order4/naive_seed3.json",
    ]
    record = json.loads(written[0].read_text())
    found = record["identification"]
    assert set(found["tasks"]) == {"sst2", "trec"} and all(t["examples"] == 20 for t in found["tasks"].values())
    assert 0 <= found["acc_task_unknown"] <= found["acc_task_given"] <= 1 and 0 <= found["task_id_accuracy"] <= 1
    assert json.loads((runs / "adapters" / "seed0" / records.IDENTIFICATION).read_text()) == found
    assert record["wall_seconds"] > 0 and record["lr"] == 3e-3 and (record["order"], record["seed"]) == (4, 0)
    for name in ("sst2", "trec"):  # the share of the most frequent label among the 20 test rows scored
        loaded = load_task_data(DataSpec.from_folder(data_dir / name, max_eval=20))
        targets = loaded.targets[loaded.eval_split]
        assert record["majority"][name] == max(map(targets.count, targets)) / 20
    cut_off = json.loads(written[1].read_text())
    assert "identification" not in cut_off and "majority" not in cut_off, "measured only once a run finished"

    for path in (runs / "adapters" / "seed0" / "registry.db", runs / "naive" / "seed3" / "registry.db"):
        path.unlink()
    per_order = bench.gather(tables, scenario_of=lambda order: scenario)
    assert list(per_order) == [4] and per_order[4]["majority"] == record["majority"]
    rows = {m["label"]: m for m in per_order[4]["methods"]}
    adapters = rows["adapters"]
    assert adapters["final"] == expected["final"] and adapters["acc_ci95"] == expected["acc_ci95"] is not None
    assert adapters["eval_seconds"] == record["wall_seconds"] - expected["train_seconds"]
    assert rows["naive"]["seeds"] == [3] and not rows["naive"]["complete"]
    lines = bench.identification_rows(per_order)
    assert lines[0] == "## With the task unknown"
    given, unknown = 100 * found["acc_task_given"], 100 * found["acc_task_unknown"]
    assert lines[-2].startswith(f"| adapters | 4 | 0 | {given:.1f} | {unknown:.1f} |")
    assert records.identify(runs / "adapters" / "seed0") == found, "the cache answers without the registry"
