"""The audit passes on an untouched registry and names the task after each kind of tampering."""

import json
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry.registry import Registry


@pytest.fixture
def copy(stream, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(stream["root"], root)
    return str(root / "registry.db")


def audit(url, *extra):
    result = CliRunner().invoke(cli, ["--registry", url, "audit", "--json", *extra])
    return result.exit_code, json.loads(result.output)


def failed(report):
    return {t["task"] for t in report["tasks"] if not t["ok"]}


def test_untouched_registry_passes_bit_for_bit(copy):
    code, report = audit(copy)
    assert code == 0 and report["ok"]
    assert all(t["golden_equal"] and t["predictions_equal"] for t in report["tasks"])


def test_flipped_byte_in_a_bundle(copy):
    path = Registry(copy).bundle_path("trec")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, report = audit(copy)
    assert code == 1 and failed(report) == {"trec"}
    assert "sha256" in " ".join(report["tasks"][1]["problems"])


def test_edited_recorded_metric(copy):
    with sqlite3.connect(copy) as db:
        db.execute(
            "UPDATE evaluations SET value = value + 0.01 WHERE kind = 'registration' AND metric = 'accuracy' "
            "AND task_id = (SELECT id FROM tasks WHERE name = 'sst2')"
        )
    code, report = audit(copy)
    assert code == 1 and failed(report) == {"sst2"}
    assert "recorded" in report["tasks"][0]["problems"][0]
    code, _ = audit(copy, "--tolerance", "0.02")
    assert code == 0


def test_swapped_bundle_files(copy):
    registry = Registry(copy)
    a, b = registry.bundle_path("sst2"), registry.bundle_path("trec")
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    code, report = audit(copy)
    assert code == 1 and failed(report) == {"sst2", "trec"}
