"""`cadapt audit --probe` on a long stream (issue 19): the registry reads it makes are per round of
tasks, not per task, and reading only the re-evaluations that differ from a task's registration
(not its whole history, one row per later addition) still catches every edited one."""

import sqlite3

from continual_adapters.core.config import TrainConfig
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry import Registry
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from tests.support.queries import counted_queries

CONFIG = TrainConfig(epochs=1, batch_size=16, max_length=32)
NAMES = ("sst2", "trec", "cr", "mr", "subj")


def grow(registry, tiny_encoder_dir, data_dir, names):
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    for name in names:
        runner.add_task(name, DataSpec.from_folder(data_dir / name, max_train=16, max_eval=16), train=CONFIG)


def probe_audit_reads(registry, tiny_encoder_dir) -> int:
    """The SELECTs of one `audit --probe`. Its writes are the two rows per task it records (audit_record.py)."""
    runner = Runner(registry, encoder=tiny_encoder_dir, progress=False)
    runner.load_model()
    with counted_queries() as statements:
        report = audit(runner, probe_only=True)
    assert report.ok and report.record["recorded"], report.to_dict()
    return sum(s.lstrip().upper().startswith("SELECT") for s in statements)


def test_probe_audit_reads_as_much_at_5_tasks_as_at_2(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "registry.db")
    grow(registry, tiny_encoder_dir, data_dir, NAMES[:2])
    two = probe_audit_reads(registry, tiny_encoder_dir)
    grow(registry, tiny_encoder_dir, data_dir, NAMES[2:])
    assert probe_audit_reads(registry, tiny_encoder_dir) == two  # both fit in one round of TASKS_PER_ROUND


def test_an_edited_reevaluation_of_an_unchanged_task_fails_both_audits(tmp_path, data_dir, tiny_encoder_dir):
    """A carried-forward row (task sst2 after 3 tasks) edited in the database: the proofs say sst2 was
    unchanged, so the row must equal its registration score, in value and in predictions hash."""
    registry = Registry(tmp_path / "registry.db")
    grow(registry, tiny_encoder_dir, data_dir, NAMES[:3])
    with sqlite3.connect(tmp_path / "registry.db") as db:
        db.execute(
            "UPDATE evaluations SET value = value + 0.125 WHERE kind = 'reeval' AND after_tasks = 3 "
            "AND metric = 'accuracy' AND task_id = (SELECT id FROM tasks WHERE name = 'sst2')"
        )
        db.execute(
            "UPDATE evaluations SET predictions_sha256 = :sha WHERE kind = 'reeval' AND after_tasks = 3 "
            "AND metric = 'accuracy' AND task_id = (SELECT id FROM tasks WHERE name = 'trec')",
            {"sha": "e" * 64},
        )
        db.execute("UPDATE evaluations SET value = 0.001 WHERE kind = 'reeval' AND metric = 'macro_f1'")
    for probe_only in (True, False):
        report = audit(Runner(registry, encoder=tiny_encoder_dir, progress=False), probe_only=probe_only)
        problems = {t.task: t.problems for t in report.tasks}
        assert not report.ok and problems["cr"] == [], problems
        assert len(problems["sst2"]) == 1 and problems["sst2"][0].startswith("re-evaluation after 3 tasks records")
        assert len(problems["trec"]) == 1 and "re-evaluation after 3 tasks" in problems["trec"][0]
