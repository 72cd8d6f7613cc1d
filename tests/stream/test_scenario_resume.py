"""A scenario run killed in the middle of a task resumes to the very result of an uninterrupted run.

Folder A: a tiny three-task stream (tiny encoder, real datasets at tiny caps, adapters, one
epoch) run once. Folder B: the same scenario in a child process that is SIGKILLed in its second
task after the bundle, probe and centroid files were written and before the task is registered,
with a half-written temporary bundle beside them: what a kill -9 leaves (a `pending` row whose
owner is dead, unreferenced files; no cleanup ran). `run-scenario` on B must then clean that
debris, keep the first task as it was, train the second and third, and end exactly where A did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from continual_adapters.registry.registry import Registry
from tests.support.cli import cli_ok
from tests.support.paths import ROOT
from tests.support.reliability import leftover_kind

TASKS = ["sst2", "trec", "cr"]

# Runs the scenario into B and kills itself (SIGKILL: no except, no finally, no atexit) once the
# second task's files are on disk, just before `Runner.confirm` hands over to `Runner.register`.
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys

    from continual_adapters.files.atomic import TEMP_PREFIX
    from continual_adapters.stream.runner import Runner
    from continual_adapters.stream.scenario import load_scenario, run_scenario

    scenario_file, out, data_dir, victim = sys.argv[1:]
    confirm = Runner.confirm

    def killed_in_confirm(self, job, earlier, before):
        if job.name == victim:
            bundles = self.registry.root / "bundles"
            written = [p for p in bundles.iterdir() if p.name.startswith(victim + "-")]
            assert len(written) == 1, sorted(p.name for p in bundles.iterdir())
            half = written[0].read_bytes()[: written[0].stat().st_size // 2]
            (bundles / f"{TEMP_PREFIX}{victim}-0123456789abcdef").write_bytes(half)
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return confirm(self, job, earlier, before)

    Runner.confirm = killed_in_confirm
    run_scenario(load_scenario(scenario_file, data_dir), out, progress=False, audit_runs=False)
    """
)


def _scenario(tmp_path: Path, encoder: str) -> Path:
    path = tmp_path / "resume.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "resume",
                "encoder": encoder,
                "seeds": [0],
                "train": {"epochs": 1, "batch_size": 8, "max_length": 32},
                "data": {"max_train": 24, "max_eval": 16},
                "methods": {"adapters": {"adapter_size": 8}},
                "tasks": [{"name": name, "data": name} for name in TASKS],
            }
        )
    )
    return path


def _registry(out: Path) -> Registry:
    return Registry(out / "adapters" / "seed0" / "registry.db")


def _registration(registry: Registry, name: str) -> dict:
    return {
        (e.split, e.metric): (e.value, e.predictions_sha256) for e in registry.evaluations(name, kind="registration")
    }


def test_a_run_killed_mid_task_resumes_to_the_uninterrupted_result(tmp_path, data_dir, tiny_encoder_dir):
    scenario = _scenario(tmp_path, tiny_encoder_dir)
    a, b = tmp_path / "A", tmp_path / "B"

    # A: uninterrupted. Each task's progress line names the method, seed, position and task.
    whole = cli_ok("run-scenario", scenario, "--out", a, "--data-dir", data_dir, "--no-audit", "--quiet")
    for position, name in enumerate(TASKS, 1):
        assert f"[adapters seed 0] task {position}/3: {name}" in whole.output
        assert f"[adapters seed 0]   {name}: accuracy " in whole.output
    reference = _registry(a)
    assert [(t.name, t.status) for t in reference.tasks()] == [(n, "ready") for n in TASKS]

    # B: killed in the second task, between writing its files and registering it.
    env = {k: v for k, v in os.environ.items() if k != "CADAPT_CRASH_AT"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(scenario), str(b), str(data_dir), TASKS[1]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "[adapters seed 0] task 2/3: trec" in killed.stdout and "task 3/3" not in killed.stdout

    registry = _registry(b)
    assert [(t.name, t.status) for t in registry.tasks(include_pending=True)] == [
        ("sst2", "ready"),
        ("trec", "pending"),
    ]
    debris = registry.fsck()
    assert debris.dead_pending == ["trec"]
    kinds = sorted((o.split("/", 1)[0], leftover_kind(o, "trec")) for o in debris.orphan_files)
    assert kinds == [("bundles", "final"), ("bundles", "temp"), ("centroids", "final"), ("probes", "final")]
    first = registry.bundle("sst2")
    first_mtime = registry.bundle_path("sst2").stat().st_mtime_ns
    first_registration = registry.evaluations("sst2", kind="registration")
    registry.close()

    # The resume: debris cleaned, the ready task skipped (said so), the killed one trained again.
    resumed = cli_ok("run-scenario", scenario, "--out", b, "--data-dir", data_dir, "--quiet")
    out = resumed.output
    assert "[adapters seed 0] recovered from an interrupted run: removed pending trec and 4 orphan file(s)" in out
    assert "[adapters seed 0] skip 1/3: sst2 (already ready)" in out and "task 1/3" not in out
    assert "[adapters seed 0] task 2/3: trec" in out and "[adapters seed 0] task 3/3: cr" in out
    assert "[adapters seed 0] audit passed" in out

    registry = _registry(b)
    assert [(t.name, t.status) for t in registry.tasks(include_pending=True)] == [(n, "ready") for n in TASKS]
    assert [t.position for t in registry.tasks()] == [1, 2, 3]
    report = registry.fsck()
    assert report.ok and not report.orphan_files and not report.dead_pending
    assert not [p for p in (registry.root / "bundles").iterdir() if p.name.startswith(".tmp-")]

    # Trained once: the first task's bundle row, file and registration are those of before the resume.
    assert registry.bundle("sst2") == first
    assert registry.bundle_path("sst2").stat().st_mtime_ns == first_mtime
    assert registry.evaluations("sst2", kind="registration") == first_registration

    # The same stream as A's: order, registration scores (exactly: CPU), bundle bytes, accuracy matrix.
    assert [t.name for t in registry.tasks()] == [t.name for t in reference.tasks()] == TASKS
    for name in TASKS:
        assert _registration(registry, name) == _registration(reference, name), name
        assert registry.bundle(name).sha256 == reference.bundle(name).sha256, name
    assert registry.accuracy_matrix() == reference.accuracy_matrix()
