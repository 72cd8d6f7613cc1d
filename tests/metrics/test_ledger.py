"""Parameter-growth ledger checked against hand-computed numbers."""

from __future__ import annotations

import dataclasses

import pytest

from continual_adapters.core.errors import ConfigError
from continual_adapters.metrics.ledger import LedgerRow, growth_ledger, ledger_totals

BASE = 1000


def adapter_task(name: str) -> dict:
    # 30 adapter + 4 layer-norm + 2 head = 36 stored parameters, 4 bytes each
    return dict(name=name, adapter=30, layer_norm=4, head=2, total=36, bytes=144)


def test_three_adapter_tasks():
    rows = growth_ledger(BASE, [adapter_task("a"), adapter_task("b"), adapter_task("c")])
    assert [row.task for row in rows] == ["a", "b", "c"]
    assert all(row.method == "adapters" for row in rows)
    # 36 / 1000 * 100 = 3.6 % per task
    assert [row.percent_of_base for row in rows] == pytest.approx([3.6, 3.6, 3.6])
    # 1000 + 36 = 1036, + 36 = 1072, + 36 = 1108
    assert [row.cumulative for row in rows] == [1036, 1072, 1108]
    assert [row.cumulative_multiple for row in rows] == pytest.approx([1.036, 1.072, 1.108])
    # one fine-tuned model per task: (1000 + 2) / 1000 = 1.002, then 2.004, 3.006
    assert [row.full_finetune_multiple for row in rows] == pytest.approx([1.002, 2.004, 3.006])
    assert rows[0].added == 36 and rows[0].added_bytes == 144

    totals = ledger_totals(rows, BASE)
    # 3 * 36 = 108 added; 1108 / 1000 = 1.108x; full 3.006x; mean 3.6 %
    assert totals["total_added"] == 108
    assert totals["total_multiple"] == pytest.approx(1.108)
    assert totals["full_finetune_multiple"] == pytest.approx(3.006)
    assert totals["mean_percent_per_task"] == pytest.approx(3.6)


def test_houlsby_nine_tasks():
    # Houlsby et al. 2019: nine tasks at 3.6 % -> 1 + 9 * 0.036 = 1.324 (their "1.3x");
    # nine fine-tuned copies without heads -> 9x
    tasks = [dict(name=f"t{k}", adapter=36) for k in range(9)]
    totals = ledger_totals(growth_ledger(BASE, tasks), BASE)
    assert totals["total_multiple"] == pytest.approx(1.324)
    assert totals["full_finetune_multiple"] == pytest.approx(9.0)


def test_defaults():
    # total defaults to 10 + 2 + 3 = 15; method to "adapters"; bytes to None
    (row,) = growth_ledger(BASE, [dict(name="only", adapter=10, layer_norm=2, head=3)])
    assert row.added == 15
    assert row.method == "adapters"
    assert row.added_bytes is None
    # 1015 / 1000
    assert row.cumulative_multiple == pytest.approx(1.015)


def test_given_total_is_trusted_for_other_methods():
    # "full" stores a whole copy plus head: 1000 + 2 = 1002, i.e. 100.2 % of base
    tasks = [
        adapter_task("a"),
        dict(name="b", method="full", head=2, total=1002),
        dict(name="c", method="top-k", adapter=0, head=2, total=250),
    ]
    rows = growth_ledger(BASE, tasks)
    assert [row.method for row in rows] == ["adapters", "full", "top-k"]
    assert rows[1].percent_of_base == pytest.approx(100.2)
    # 1000 + 36 = 1036; + 1002 = 2038; + 250 = 2288
    assert [row.cumulative for row in rows] == [1036, 2038, 2288]
    totals = ledger_totals(rows, BASE)
    # 36 + 1002 + 250 = 1288; mean percent (3.6 + 100.2 + 25.0) / 3 = 42.9333...
    assert totals["total_added"] == 1288
    assert totals["total_multiple"] == pytest.approx(2.288)
    assert totals["mean_percent_per_task"] == pytest.approx(128.8 / 3)


def test_empty_ledger():
    assert growth_ledger(BASE, []) == []
    totals = ledger_totals([], BASE)
    assert totals == {
        "total_added": 0,
        "total_multiple": 1.0,
        "full_finetune_multiple": 1.0,
        "mean_percent_per_task": None,
    }


def test_rows_are_frozen():
    (row,) = growth_ledger(BASE, [adapter_task("a")])
    assert isinstance(row, LedgerRow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.added = 0


@pytest.mark.parametrize("base", [0, -5, 12.5, True, "1000"])
def test_bad_base_raises(base):
    with pytest.raises(ConfigError):
        growth_ledger(base, [adapter_task("a")])
    with pytest.raises(ConfigError):
        ledger_totals([], base)


@pytest.mark.parametrize(
    "task",
    [
        dict(adapter=36),
        dict(name="", adapter=36),
        dict(name="a", adapter=-1),
        dict(name="a", total=36.5),
        dict(name="a", head="2"),
        dict(name="a", adapter=36, bytes=-4),
        ["a", 36],
    ],
    ids=["no-name", "empty-name", "negative", "float-total", "text-head", "negative-bytes", "list"],
)
def test_bad_task_raises(task):
    with pytest.raises(ConfigError):
        growth_ledger(BASE, [task])
