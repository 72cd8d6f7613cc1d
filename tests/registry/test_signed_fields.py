"""What a task's signature covers, pinned field by field: signatures written by earlier releases
must still verify after the fields are read a new way (registry/signed.py reads them for many tasks
at once), and checking the signatures of many tasks costs the same number of queries for 2 or 6."""

from dataclasses import asdict

from continual_adapters.registry import EvaluationDraft
from continual_adapters.registry.signing import KEY_ENV, registry_key, sign
from tests.registry.helpers import begin, draft, make_registry
from tests.support.queries import counted_queries

KEY = "a-key-of-at-least-16-characters"


def add(reg, name, evals, **blobs):
    begin(reg, name)
    rel, sha, size = reg.write_file(name, name.encode() * 16)
    artifacts = [reg.write_artifact(name, kind, data) for kind, data in blobs.items()]
    return reg.finish_task(name, draft(rel, sha, size), evals, {"before": {}, "after": {}}, artifacts)


def test_signature_covers_exactly_the_documented_fields(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    reg = make_registry(tmp_path)
    add(reg, "a", [EvaluationDraft("a", "test", "accuracy", 0.5, "f" * 64)], probe=b"probe of a")
    add(reg, "b", [EvaluationDraft("a", "test", "accuracy", 0.5, kind="reeval", confirmation="probe")])
    reg.add_evaluations([EvaluationDraft("a", "test", "accuracy", 0.25, kind="audit")], after_tasks=2)
    task, bundle, probe = reg.task("a"), asdict(reg.bundle("a")), reg.artifact("a", "probe")
    assert probe is not None
    expected = {
        "name": "a",
        "position": 1,
        "labels": ["neg", "pos"],
        "head": "classification",
        "method": task.method,
        "primary_metric": "accuracy",
        "data": task.data,
        "proof": {"before": {}, "after": {}},
        "bundle": {k: bundle[k] for k in ("path", "sha256", "size_bytes", "config", "param_counts")}
        | {"hyperparameters": bundle["hyperparameters"], "seed": 7},
        "evaluations": [
            [1, "test", "accuracy", "registration", 0.5, "f" * 64],  # no confirmation: schema-2 signatures hold
            [2, "test", "accuracy", "audit", 0.25, None],
            [2, "test", "accuracy", "reeval", 0.5, None, "probe"],
        ],
        "artifacts": [["probe", probe.path, probe.sha256, probe.size_bytes]],
    }
    key = registry_key()
    assert key is not None and task.signature == sign(key, expected)
    assert reg.fsck().signature_mismatches == []


def test_checking_signatures_of_many_tasks_reads_as_much_for_6_as_for_2(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    reads = {}
    for n in (2, 6):
        reg = make_registry(tmp_path / str(n))
        for k in range(1, n + 1):
            carried = [EvaluationDraft(f"t{j}", "test", "accuracy", 0.5, kind="reeval") for j in range(1, k)]
            add(reg, f"t{k}", [EvaluationDraft(f"t{k}", "test", "accuracy", 0.5), *carried], probe=b"p" * k)
        names = [f"t{k}" for k in range(1, n + 1)]
        with counted_queries() as statements:
            reg.bundles(names)
            reg.read_artifacts("probe", names)
            reg.add_evaluations([EvaluationDraft(t, "test", "accuracy", 0.5, kind="audit") for t in names], n)
            assert reg.fsck().signature_mismatches == []
        reads[n] = sum(s.lstrip().upper().startswith("SELECT") for s in statements)
    assert reads[2] == reads[6], reads
