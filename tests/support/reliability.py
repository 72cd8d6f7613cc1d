"""Shared pieces of the reliability tests: tiny task data, the fork server, and the invariant check
that every crash test runs after every kill."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry.schema import ARTIFACT_FOLDERS

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("reliability_worker.py")
WORDS = {"pos": ["good", "great", "fine", "nice"], "neg": ["bad", "awful", "poor", "dull"]}


def write_tiny_data(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Sixteen training rows: enough to train an adapter for one epoch in well under a second."""
    import random

    rng = random.Random(seed)
    files = {}
    for split, count in (("train", 16), ("validation", 8), ("test", 8)):
        path = folder / f"{split}.jsonl"
        with path.open("w") as fh:
            for i in range(count):
                label = ("pos", "neg")[i % 2]
                fh.write(
                    json.dumps({"text": f"{rng.choice(WORDS[label])} film {rng.randint(0, 99)}", "label": label}) + "\n"
                )
        files[split] = path
    return files


def task_args(files: dict[str, Path], encoder: str) -> list[str]:
    return [
        "--train",
        str(files["train"]),
        "--validation",
        str(files["validation"]),
        "--test",
        str(files["test"]),
        "--encoder",
        encoder,
        "--epochs",
        "1",
        "--adapter-size",
        "8",
        "--max-length",
        "32",
        "--quiet",
    ]


class ForkServer:
    """Drives tests/reliability_worker.py (see there for why a fork server). One per test session;
    `for_registry` binds it to one registry and one set of task arguments."""

    def __init__(self, log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("CADAPT_CRASH_AT", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(log_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(log_dir),
        )
        assert json.loads(self._reply()) == {"ready": True}
        self.base_args: list[str] = []
        self.task_args: list[str] = []

    def for_registry(self, base_args: list[str], task_args: list[str]) -> ForkServer:
        self.base_args, self.task_args = base_args, task_args
        return self

    def _reply(self) -> str:
        line = self.proc.stdout.readline()
        assert line, f"fork server died (exit {self.proc.poll()})"
        return line

    def request(self, **request) -> dict:
        request.update(base_args=self.base_args, task_args=self.task_args)
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._reply())

    def add(self, name: str, delay: float | None = None, crash_at: str | None = None) -> dict:
        reply = self.request(op="add", name=name, delay=delay, crash_at=crash_at)
        assert not reply["timed_out"], f"add-task {name} hung: {reply['stderr']}"
        return reply

    def many(self, names: list[str]) -> dict:
        replies = self.request(op="many", names=names)["results"]
        assert not any(r["timed_out"] for r in replies.values()), replies
        return replies

    def warm_up(self, scratch: Path, task_args: list[str]) -> None:
        self.for_registry(["--registry", str(scratch / "warmup.db")], task_args)
        reply = self.request(op="warmup")
        threads = reply["python_threads"]
        assert threads == ["MainThread"], f"the fork server must not fork with threads running: {threads}"
        assert not reply["tqdm_process_lock"], "a lock shared with every child would hang them all after one kill"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


def leftover_kind(path: str, name: str) -> str | None:
    """Says "final" or "temp" when ``path`` is one of task ``name``'s files in a task folder (its
    ``<task>-<sha16>.safetensors``, or the ``.tmp-<task>-<16 hex>`` of a write in progress), else None."""
    folder, _, entry = path.partition("/")
    if folder not in task_folders(set()):
        return None
    if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.safetensors", entry):
        return "final"
    return "temp" if re.fullmatch(rf"\.tmp-{re.escape(name)}-[0-9a-f]{{16}}", entry) else None


def referenced_paths(backend) -> set[str]:
    """Every file a row points at, read with raw SQL: bundle rows and task_artifacts rows alike, so
    the check holds whichever files add-task writes (today its bundle, soon its probe as well)."""
    paths = [row[0] for row in backend.execute("SELECT path FROM bundles UNION ALL SELECT path FROM task_artifacts")]
    assert len(paths) == len(set(paths)), f"two rows point at one file: {sorted(paths)}"
    return set(paths)


def task_folders(referenced: set[str]) -> set[str]:
    """bundles/ and one folder per artifact kind as the schema declares them (not the list fsck
    scans, so a folder fsck forgot is still looked at), plus any folder a row points into."""
    return {"bundles", *ARTIFACT_FOLDERS.values()} | {path.split("/", 1)[0] for path in referenced}


def files_on_disk(root: Path, folders: set[str]) -> set[str]:
    """Every entry of those folders (final files and temporaries alike), relative to the root."""
    return {f"{folder}/{e}" for folder in folders if (root / folder).is_dir() for e in os.listdir(root / folder)}


def _assert_file(root: Path, path: str, sha: str, size: int, what: str) -> None:
    data = (root / path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha and len(data) == size, what


def assert_consistent(backend, registry) -> dict:
    """The crash-safety claim, checked from the raw rows rather than through the registry's own
    readers: every ready row has its bundle row, its registration scores and a file whose bytes
    hash to the recorded sha256, and so has each of its artifact rows; a pending row has nothing
    else; positions have no holes; every pending row's owner is dead (the process was killed), so
    every file in bundles/ or an artifact folder that no row references is debris; and fsck names
    exactly those files and the dead pending rows. Returns fsck's view and the artifact count."""
    if backend.kind == "sqlite":
        assert backend.execute("PRAGMA integrity_check") == [("ok",)]
        assert backend.execute("PRAGMA foreign_key_check") == []
    rows = backend.execute(
        "SELECT t.name, t.status, t.position, b.path, b.sha256, b.size_bytes, "
        "(SELECT count(*) FROM evaluations e WHERE e.task_id = t.id AND e.kind = 'registration'), "
        "(SELECT count(*) FROM evaluations e WHERE e.task_id = t.id) "
        "FROM tasks t LEFT JOIN bundles b ON b.task_id = t.id"
    )
    positions, pending = [], []
    for name, status, position, path, sha, size, registrations, evaluations in rows:
        if status == "ready":
            assert position is not None and path is not None and registrations > 0, name
            _assert_file(registry.root, path, sha, size, name)
            registry.verify_bundle(name)
        else:
            assert status == "pending", (name, status)
            assert position is None and path is None and evaluations == 0, name
            pending.append(name)
        if position is not None:
            positions.append(position)
    assert sorted(positions) == list(range(1, len(positions) + 1))
    artifacts = backend.execute(
        "SELECT t.name, t.status, a.kind, a.path, a.sha256, a.size_bytes "
        "FROM task_artifacts a JOIN tasks t ON t.id = a.task_id"
    )
    for name, status, kind, path, sha, size in artifacts:
        # Artifact rows commit with the bundle row, so a pending task never has one.
        assert status == "ready", (name, kind, status)
        assert path.startswith(f"{ARTIFACT_FOLDERS[kind]}/{name}-"), (name, kind, path)
        _assert_file(registry.root, path, sha, size, f"{name}:{kind}")
        assert len(registry.read_artifact(name, kind)) == size
    referenced = referenced_paths(backend)
    on_disk = files_on_disk(registry.root, task_folders(referenced))
    report = registry.fsck()
    assert sorted(report.dead_pending) == sorted(pending), "a pending row outlived its killed owner"
    assert set(report.orphan_files) == on_disk - referenced, "fsck must list every unreferenced task file"
    assert not report.missing_files and not report.checksum_mismatches
    return {
        "orphans": len(report.orphan_files),
        "dead_pending": len(report.dead_pending),
        "ready": len(positions),
        "artifacts": len(artifacts),
    }


def repair_and_check(backend, registry) -> None:
    """`cadapt fsck --repair`, then nothing is left over: no pending rows, and bundles/ and every
    artifact folder hold exactly the files the bundle and task_artifacts rows reference."""
    result = CliRunner().invoke(cli, [*backend.cli_args(), "fsck", "--repair"])
    assert result.exit_code == 0, result.output
    assert registry.fsck().ok
    referenced = referenced_paths(backend)
    assert files_on_disk(registry.root, task_folders(referenced)) == referenced
    assert backend.execute("SELECT name FROM tasks WHERE status = 'pending'") == []
