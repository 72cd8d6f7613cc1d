"""`cadapt report` on a long stream (issue 19): the queries it makes do not grow with the number of
tasks, and the accuracy matrix with how each entry was confirmed comes from one read. At 200 tasks a
query per task, and an ORM object per evaluation row read twice, had made it take 25 s."""

import os
import re

from continual_adapters.registry import EvaluationDraft, Registry
from continual_adapters.registry.records import AccuracyMatrix
from continual_adapters.report.reporting import format_markdown, stream_report
from tests.registry.helpers import begin, draft, make_registry
from tests.support.queries import counted_queries

METRICS = ("accuracy", "macro_f1")
BASE = dict(sha256="b" * 64, num_parameters=1000, architecture="bert", hidden_size=8, num_layers=2)


def score(j: int) -> float:
    return 0.5 + j / 100


def long_stream(tmp_path, n: int) -> Registry:
    """n tasks added as the default policy adds them: each addition carries every earlier task's last
    full score forward (a probe row per metric), so the evaluations table holds about n^2 rows. Every
    third task keeps EWC's Fisher beside its bundle, which the report's method state sums."""
    reg = make_registry(tmp_path / f"stream{n}")
    reg.set_base_model("base", **BASE)
    for k in range(1, n + 1):
        name = f"t{k}"
        begin(reg, name, eval_split="test")
        rel, sha, size = reg.write_file(name, os.urandom(64))
        own = [EvaluationDraft(name, "test", m, score(k)) for m in METRICS]
        carried = [
            EvaluationDraft(f"t{j}", "test", m, score(j), kind="reeval", confirmation="probe")
            for j in range(1, k)
            for m in METRICS
        ]
        state = [reg.write_artifact(name, "fisher", b"f" * k)] if k % 3 == 0 else []
        reg.finish_task(name, draft(rel, sha, size), own + carried, {"before": {}, "after": {}}, state)
    return reg


def test_report_makes_as_many_queries_at_12_tasks_as_at_3(tmp_path):
    counts = {}
    for n in (3, 12):
        reg = long_stream(tmp_path, n)
        with counted_queries() as statements:
            report = stream_report(reg)
            format_markdown(report)
        counts[n] = len(statements)
        assert len(report["matrix"]["R"]) == n and len(report["ledger"]) == n
    assert counts[3] == counts[12], counts


def test_report_of_a_long_stream_says_what_each_entry_is(tmp_path):
    n = 12
    reg = long_stream(tmp_path, n)
    report = stream_report(reg)
    R, how = report["matrix"]["R"], report["matrix"]["confirmed_by"]
    assert report["matrix"]["tasks"] == [f"t{k}" for k in range(1, n + 1)]
    assert R == [[score(j + 1) if j <= i else None for j in range(n)] for i in range(n)]
    assert how == [["probe" if j < i else "registration" if j == i else None for j in range(n)] for i in range(n)]
    assert [t["score"] for t in report["tasks"]] == [score(k) for k in range(1, n + 1)]
    assert report["metrics"]["bwt"] == 0.0 and report["metrics"]["forgetting"] == 0.0
    assert report["method_state"] == {"bytes": 3 + 6 + 9 + 12, "kinds": {"fisher": 30}, "replay": None}
    markdown = format_markdown(report)
    assert len(re.findall(r"\d\.\d{4}ᵖ", markdown)) == n * (n - 1) // 2
    assert "- fisher: 30 bytes over the stream" in markdown


def test_matrix_is_accuracy_matrix_and_confirmations_in_one_read(tmp_path):
    reg = long_stream(tmp_path, 4)
    reg.add_evaluations([EvaluationDraft("t1", "test", "accuracy", 0.0, kind="skipped")], after_tasks=4)
    reg.add_evaluations([EvaluationDraft("t2", "test", "accuracy", 0.1, kind="skipped")], after_tasks=3)
    for metric, split in ((None, None), ("macro_f1", None), (None, "validation")):
        with counted_queries() as statements:
            matrix = reg.matrix(metric, split)
        expected = reg.accuracy_matrix(metric, split)
        assert matrix == AccuracyMatrix(*expected, reg.confirmations(metric, split)[1])
        assert sum(s.lstrip().upper().startswith("SELECT") for s in statements) <= 4
    matrix = reg.matrix()
    assert matrix.values[2][1] == score(2) and matrix.confirmed_by[2][1] == "probe", "a score outranks a skipped row"
    assert matrix.confirmed_by[3][0] == "probe"
