"""Run records: a run's numbers kept in a small file rebuild the same row as its run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from continual_adapters.core.errors import RecordError
from continual_adapters.report.comparison import compare, method_row, run_summary
from continual_adapters.report.run_record import (
    RECORD_FORMAT,
    pack_correct,
    read_run_record,
    unpack_correct,
    write_run_record,
)
from continual_adapters.stream.scenario import load_scenario
from tests.support.paths import ROOT


def test_packed_correctness_round_trips_at_every_length():
    vectors = [np.array([], dtype=np.uint8), np.array([1]), np.array([0, 1, 1, 0, 1, 0, 0, 1, 1]), np.ones(16)]
    back = unpack_correct(pack_correct(vectors))
    assert [v.tolist() for v in back] == [np.asarray(v, dtype=np.uint8).tolist() for v in vectors]
    assert pack_correct([np.array([1, 0, 1])]) == [{"examples": 3, "bits": "oA=="}], "0b10100000 in base64"
    assert pack_correct(None) is None and unpack_correct(None) is None


def test_a_seed_average_is_refused_and_torn_bits_are_caught():
    with pytest.raises(RecordError, match="0 or 1"):
        pack_correct([np.array([0.5, 1.0])])
    with pytest.raises(RecordError, match="not the 2 of 9 examples"):
        unpack_correct([{"examples": 9, "bits": "oA=="}])


def test_a_record_rebuilds_the_run_folders_row(smoke_run, tmp_path):
    """Each smoke run's summary written to a record and read back: method_row over the records is
    compare()'s row over the run folders, interval included; extra fields come back as written."""
    scenario = load_scenario(ROOT / "scenarios" / "smoke.yaml")
    out, names = smoke_run["out"], [t.name for t in scenario.tasks]
    expected = {m["label"]: m for m in compare(scenario, out)["methods"]}
    for settings in scenario.methods:
        summary = run_summary(scenario, settings, out, 0, names)
        assert summary is not None
        path = write_run_record(tmp_path / f"{settings.label}.json", summary, wall_seconds=12.5)
        record = read_run_record(path)
        assert record["wall_seconds"] == 12.5 and record["format"] == RECORD_FORMAT
        row = method_row(settings, settings.lr or scenario.train.lr, [record["summary"]])
        want = expected[settings.label]
        assert row["acc_ci95"] == want["acc_ci95"] and row["acc_ci95"] is not None
        assert json.loads(json.dumps(row, default=float)) == json.loads(json.dumps(want, default=float))


def test_a_record_of_another_format_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": RECORD_FORMAT + 1, "summary": {}, "correct": None}))
    with pytest.raises(RecordError, match="format 2"):
        read_run_record(path)
    path.write_text("{not json")
    with pytest.raises(RecordError, match="not a readable run record"):
        read_run_record(path)
