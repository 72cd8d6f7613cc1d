"""Crash safety of add-task under kill -9, and many writers at once, on SQLite and PostgreSQL.

Every child here is a real `cadapt add-task` (tiny random encoder, 16 training rows) forked by
tests/reliability_worker.py. After each kill the raw rows and files are checked
(`assert_consistent`), `cadapt fsck --repair` must leave nothing over, and the interrupted task
is simply run again. The CI loop kills 50 times on SQLite; `-m nightly` runs 500.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from continual_adapters.registry.registry import CRASH_POINTS
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from tests.support.reliability import ForkServer, assert_consistent, repair_and_check, task_args, write_tiny_data


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
    assert state["orphans"] == (step not in ("after_begin", "after_commit"))
    temporary = step in ("after_tmp_write", "after_fsync")
    assert all(
        o.startswith("bundles/.tmp-second-" if temporary else "bundles/second-") for o in registry.fsck().orphan_files
    )
    repair_and_check(backend, registry)
    if not landed:
        _ok(server.add("second"))
    assert [t.name for t in registry.tasks()] == ["first", "second"]
    if landed:
        assert audit(Runner(registry, progress=False)).ok, "a task that landed as the process died must be sound"


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
