"""The Long Sequence Benchmark's three scenarios: the published orders, and a smoke run of each.

The orders are read from the data folder's README, where they are published, so a scenario that
drifts from them fails here. The smoke run takes every task of the stream through the same runner
and audit at tiny caps on a tiny encoder: the full-size runs take hours (docs/long_benchmark.md).
"""

import dataclasses
import json
import re

import pytest

from continual_adapters.core.config import TrainConfig
from continual_adapters.registry import Registry
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.scenario import load_scenario, run_method
from tests.support.paths import ROOT

ORDERS = (4, 5, 6)


def published_order(data_dir, number: int) -> list[str]:
    """The order as the data README gives it, without Yahoo Answers (not in the pool)."""
    text = (data_dir / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"^\* order {number}: (.+)$", text, flags=re.M)
    assert found, f"order {number} is not in {data_dir / 'README.md'}"
    return [t.strip() for t in found.group(1).split(",") if t.strip() != "yahoo"]


@pytest.mark.parametrize("number", ORDERS)
def test_scenario_is_the_published_order_at_full_size(number, data_dir):
    scenario = load_scenario(ROOT / "scenarios" / f"long_order{number}.yaml", data_dir)
    assert [t.name for t in scenario.tasks] == published_order(data_dir, number)
    assert len(scenario.tasks) == 14
    for task in scenario.tasks:
        assert task.data.max_train is None and task.data.max_eval is None  # nothing capped
        assert task.dataset_name.removeprefix("long_").removeprefix("olora_") == task.name
    # The rates bench/lr_grid.py chose on validation (bench/results/lr_grid_long.json); the methods
    # that fine-tune the whole encoder share full fine-tuning's.
    chosen = json.loads((ROOT / "bench" / "results" / "lr_grid_long.json").read_text())["chosen_lr"]
    shared = {m: chosen["full"] for m in ("naive", "ewc", "replay", "lwf", "mtl")}
    assert {m.label: m.lr for m in scenario.methods} == {**chosen, **shared}


@pytest.mark.parametrize("number", ORDERS)
def test_smoke_run_of_every_task_at_tiny_caps(number, data_dir, tiny_encoder_dir, tmp_path):
    scenario = load_scenario(ROOT / "scenarios" / f"long_order{number}.yaml", data_dir)
    tiny = [dataclasses.replace(t, data=dataclasses.replace(t.data, max_train=12, max_eval=8)) for t in scenario.tasks]
    scenario = dataclasses.replace(
        scenario, tasks=tuple(tiny), encoder=tiny_encoder_dir, train=TrainConfig(epochs=1, batch_size=8, max_length=32)
    )
    registry = Registry(tmp_path / "registry.db")
    outcome = run_method(scenario, scenario.method("adapters"), 0, registry, progress=False, log=lambda _: None)
    assert outcome.added == [t.name for t in scenario.tasks]
    names, matrix = registry.accuracy_matrix()
    assert names == outcome.added and all(v is not None for v in matrix[-1])
    assert audit(Runner(registry, encoder=tiny_encoder_dir, progress=False), probe_only=True).ok
