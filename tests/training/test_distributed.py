"""Data-parallel training: the same update as one process, and only rank 0 writes the registry."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from continual_adapters.registry.registry import Registry
from continual_adapters.training.distributed import World, shard, world
from tests.support.paths import DATA_DIR, ROOT

WORKER = "tests.support.distributed_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(rank: int, size: int, port: int) -> dict:
    return {
        **os.environ,
        "RANK": str(rank),
        "WORLD_SIZE": str(size),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def test_world_and_shards_from_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert world() == World(0, 1, 0) and world().is_main and not world().active
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert not world().is_main and world().active
    rows = list(range(10))
    parts = [shard(rows, World(r, 3, r)) for r in range(3)]
    assert sorted(sum(parts, [])) == rows and parts[1] == [1, 4, 7]
    assert shard(rows, World()) == rows


def test_two_processes_make_the_single_process_update(tmp_path):
    """Gradients are summed with each slice weighted by its share, so the run matches one process
    on the whole batch (up to float summation order); both ranks end identical."""
    subprocess.run(
        [sys.executable, "-m", WORKER, str(tmp_path)],
        check=True,
        timeout=300,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")},
    )
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", WORKER, str(tmp_path)], env=launch_env(r, 2, port), cwd=ROOT)
        for r in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    single, rank0, rank1 = (load_file(tmp_path / f"rank{n}.safetensors") for n in ("single", 0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    for key in single:
        assert torch.allclose(rank0[key], single[key], atol=1e-5, rtol=1e-4), key


def test_accelerate_launch_cpu_two_processes_registers_once(tmp_path, tiny_encoder_dir):
    accelerate = str(Path(sys.executable).parent / "accelerate")
    db = tmp_path / "registry.db"
    folder = DATA_DIR / "sst2"
    command = [
        accelerate,
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "continual_adapters",
        "--registry",
        str(db),
        "add-task",
        "sst2",
        "--train",
        str(folder / "train.jsonl"),
        "--validation",
        str(folder / "validation.jsonl"),
        "--max-train",
        "64",
        "--max-eval",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--encoder",
        tiny_encoder_dir,
        "--quiet",
        "--json",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"task": "sst2"') == 1
    registry = Registry(db)
    assert [(t.name, t.status) for t in registry.tasks(include_pending=True)] == [("sst2", "ready")]
    assert registry.bundle("sst2").hyperparameters["steps"] == 4
