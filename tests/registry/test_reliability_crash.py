"""Crash safety of add-task under kill -9, and many writers at once, on SQLite and PostgreSQL.

Every child here is a real `cadapt add-task` (tiny random encoder, 16 training rows) forked by
tests/reliability_worker.py, except in `test_crash_inside_the_probe_write`, which drives the
registry's protocol directly to crash inside an artifact write. After each kill the raw rows and
the files of bundles/ and every artifact folder are checked (`assert_consistent`), `cadapt fsck
--repair` must leave nothing over, and the interrupted task is simply run again. The CI loop
kills 50 times on SQLite; `-m nightly` runs 500.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import pytest

from continual_adapters.registry import BundleDraft, EvaluationDraft
from continual_adapters.registry import artifacts as registry_artifacts
from continual_adapters.registry.registry import CRASH_POINTS
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from tests.support.paths import ROOT
from tests.support.reliability import (
    ForkServer,
    assert_consistent,
    leftover_kind,
    repair_and_check,
    task_args,
    write_tiny_data,
)


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory, tiny_encoder_dir):
    worker = ForkServer(tmp_path_factory.mktemp("fork-server-logs"))
    scratch = tmp_path_factory.mktemp("warm-up")
    worker.warm_up(scratch, task_args(write_tiny_data(scratch), tiny_encoder_dir))
    yield worker
    worker.close()


@pytest.fixture
def server(fork_server, backend, tiny_encoder_dir, tmp_path):  # noqa: F811
    backend.registry().init()
    files = write_tiny_data(tmp_path)
    return fork_server.for_registry(backend.cli_args(), task_args(files, tiny_encoder_dir))


def _record(key: str, **figures) -> None:
    """The figures docs/reliability.md quotes; visible with `pytest -s`."""
    print(f"\nFIGURES {key} {json.dumps(figures)}")


def _ok(reply: dict) -> dict:
    assert reply["code"] == 0, reply["stderr"]
    return reply


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_crash_at_each_step_of_the_commit_protocol(backend, server, step):  # noqa: F811
    registry = backend.registry()
    _ok(server.add("first"))
    reply = server.add("second", crash_at=step)
    assert reply["code"] == 97, reply["stderr"]
    state = assert_consistent(backend, registry)
    landed = step == "after_commit"
    assert state["ready"] == 1 + landed and state["dead_pending"] == (not landed)
    orphans = registry.fsck().orphan_files
    kinds = [leftover_kind(o, "second") for o in orphans]
    assert None not in kinds, f"leftovers that are not the crashed task's files: {orphans}"
    if step in ("after_begin", "after_commit"):
        assert orphans == []
    else:
        # The bundle is written first, and a crash point fires in the first write that reaches it:
        # the bundle is among the leftovers, at most one file per folder, and exactly the write the
        # crash interrupted is a temporary (should it be a later artifact's, the bundle is final).
        assert any(o.startswith("bundles/") for o in orphans), orphans
        assert len({o.split("/", 1)[0] for o in orphans}) == len(orphans), orphans
        assert kinds.count("temp") == (step in ("after_tmp_write", "after_fsync")), orphans
    repair_and_check(backend, registry)
    if not landed:
        _ok(server.add("second"))
    assert [t.name for t in registry.tasks()] == ["first", "second"]
    assert_consistent(backend, registry)
    if landed:
        assert audit(Runner(registry, progress=False)).ok, "a task that landed as the process died must be sound"


# A registration that crashes inside its probe write: the bundle is written without a crash point
# armed, then CADAPT_CRASH_AT is set, so the write steps fire in write_artifact and the commit steps
# in finish_task. Registry calls alone (no torch), so each case is one quick interpreter.
ARTIFACT_CRASH = textwrap.dedent(
    """
    import os, sys
    from continual_adapters.registry import BundleDraft, EvaluationDraft, Registry

    url, artifacts, step = sys.argv[1:]
    registry = Registry(url, artifacts=artifacts or None)
    registry.begin_task("second", labels=["x", "y"], head="classification", primary_metric="accuracy", data={})
    rel, sha, size = registry.write_file("second", os.urandom(256))
    os.environ["CADAPT_CRASH_AT"] = step
    probe = registry.write_artifact("second", "probe", os.urandom(128))
    bundle = BundleDraft(rel, sha, size, {}, {}, {}, 0, {}, None, 0.0)
    evaluation = EvaluationDraft("second", "test", "accuracy", 0.5)
    registry.finish_task("second", bundle, [evaluation], {}, artifacts=[probe])
    """
)


def _add_with_probe(registry, name: str) -> None:
    """A task registered as the runner registers one: a bundle and a probe, committed together."""
    registry.begin_task(name, labels=["x", "y"], head="classification", primary_metric="accuracy", data={})
    rel, sha, size = registry.write_file(name, os.urandom(256))
    probe = registry.write_artifact(name, "probe", os.urandom(128))
    bundle = BundleDraft(rel, sha, size, {}, {}, {}, 0, {}, None, 0.0)
    registry.finish_task(name, bundle, [EvaluationDraft(name, "test", "accuracy", 0.5)], {}, artifacts=[probe])


@pytest.mark.parametrize("step", [s for s in CRASH_POINTS if s != "after_begin"])
def test_crash_inside_the_probe_write(backend, step):  # noqa: F811
    """An add-task's crash points fire in its bundle write first, so the named-step test above never
    dies inside an artifact write; this one does, whatever the runner writes today."""
    registry = backend.registry()
    registry.init()
    _add_with_probe(registry, "first")
    artifacts = "" if backend.kind == "sqlite" else str(backend.artifacts)
    env = {k: v for k, v in os.environ.items() if k != "CADAPT_CRASH_AT"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", ARTIFACT_CRASH, backend.url, artifacts, step],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 97, done.stderr
    state = assert_consistent(backend, registry)
    landed = step == "after_commit"
    assert state["ready"] == 1 + landed and state["dead_pending"] == (not landed)
    assert state["artifacts"] == 1 + landed
    probe = "temp" if step in ("after_tmp_write", "after_fsync") else "final"
    expected = [] if landed else [("bundles", "final"), ("probes", probe)]
    orphans = registry.fsck().orphan_files
    assert sorted((o.split("/", 1)[0], leftover_kind(o, "second")) for o in orphans) == expected, orphans
    repair_and_check(backend, registry)
    if not landed:
        _add_with_probe(registry, "second")
    assert assert_consistent(backend, registry) == {"orphans": 0, "dead_pending": 0, "ready": 2, "artifacts": 2}


def test_the_invariant_check_fails_on_a_leftover_fsck_does_not_list(backend, monkeypatch):  # noqa: F811
    """Guards the guard: were fsck blind to probes/, a crashed probe write's file would stay
    unreferenced and unlisted, and both helpers every crash test relies on must fail."""
    registry = backend.registry()
    registry.init()
    _add_with_probe(registry, "first")
    (registry.root / "probes" / f"second-{'0' * 16}.safetensors").write_bytes(b"debris")
    assert assert_consistent(backend, registry)["orphans"] == 1
    monkeypatch.setattr(registry_artifacts, "TASK_FOLDERS", ("bundles",))
    with pytest.raises(AssertionError, match="fsck must list every unreferenced task file"):
        assert_consistent(backend, registry)
    with pytest.raises(AssertionError):
        repair_and_check(backend, registry)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_kill_inside_a_progress_bar_lock_does_not_hang_later_add_tasks(backend, server):  # noqa: F811
    """A kill loop once froze here: a child killed while creating a progress bar kept tqdm's
    cross-process lock held, and every add-task forked after it waited on that lock forever."""
    assert server.request(op="kill_in_bar_lock") == {"held": True, "code": -9}
    _ok(server.add("after"))
    assert [t.name for t in backend.registry().tasks()] == ["after"]


def _kill_loop(backend, server, kills: int, seed: int) -> dict:  # noqa: F811
    """Half the kill moments are uniform over an add-task's whole run, half over its second half,
    where training, the bundle write, re-evaluation and the commit happen (loading the model and
    data comes first and would otherwise take most kills). The run's length is re-estimated as
    the stream grows; the named-step test above covers each protocol step deterministically."""
    registry = backend.registry()
    rng = random.Random(seed)
    first = _ok(server.add("base"))
    duration = first["elapsed"]
    counts = {"kills": 0, "finished_first": 0, "landed_before_kill": 0, "orphans_seen": 0, "dead_pending_seen": 0}
    current, serial = "k0", 0
    while counts["kills"] < kills:
        low = 0.0 if counts["kills"] % 2 == 0 else 0.5
        reply = server.add(current, delay=rng.uniform(low, 1.2) * duration)
        if reply["killed"]:
            assert reply["code"] == -9
            counts["kills"] += 1
        else:
            _ok(reply)
            counts["finished_first"] += 1
            duration = max(duration, reply["elapsed"])
        state = assert_consistent(backend, registry)
        counts["orphans_seen"] += state["orphans"]
        counts["dead_pending_seen"] += state["dead_pending"]
        repair_and_check(backend, registry)
        if current in {t.name for t in registry.tasks()}:
            counts["landed_before_kill"] += reply["killed"]
            serial += 1
            current = f"k{serial}"
    _ok(server.add(current))
    assert_consistent(backend, registry)
    report = audit(Runner(registry, progress=False))
    assert report.ok, report.to_dict()
    counts["tasks_in_stream"] = len(registry.tasks())
    return counts


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_kill_9_at_random_moments(backend, server):  # noqa: F811
    started = time.monotonic()
    counts = _kill_loop(backend, server, kills=50, seed=8)
    _record("kill_loop_ci", backend=backend.kind, seconds=round(time.monotonic() - started, 1), **counts)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_kill_9_at_random_moments_postgresql(backend, server):  # noqa: F811
    started = time.monotonic()
    counts = _kill_loop(backend, server, kills=15, seed=9)
    _record("kill_loop_ci_postgresql", backend=backend.kind, seconds=round(time.monotonic() - started, 1), **counts)


@pytest.mark.nightly
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_at_random_moments_nightly(backend, server):  # noqa: F811
    started = time.monotonic()
    counts = _kill_loop(backend, server, kills=500, seed=int(time.time()))
    _record(f"kill_loop_nightly_{backend.kind}", seconds=round(time.monotonic() - started, 1), **counts)


def test_eight_processes_add_tasks_at_once(backend, server):  # noqa: F811
    """Eight real add-tasks started together: each lands exactly once, none fails on a lock."""
    registry = backend.registry()
    names = [f"w{i}" for i in range(8)]
    started = time.monotonic()
    results = server.many(names)
    for name, reply in results.items():
        assert reply["code"] == 0, (name, reply["stderr"])
        assert "locked" not in reply["stderr"]
    tasks = registry.tasks()
    assert sorted(t.name for t in tasks) == names and [t.position for t in tasks] == list(range(1, 9))
    assert backend.execute("SELECT count(*) FROM bundles") == [(8,)]
    assert_consistent(backend, registry)
    assert registry.fsck().ok
    _record(f"eight_writers_{backend.kind}", writers=8, landed=len(tasks), seconds=round(time.monotonic() - started, 1))
