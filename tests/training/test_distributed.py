"""Data-parallel training through accelerate: two processes make the single-process update (up to the
order of floating-point sums), `accelerate launch` registers the task once, and only rank 0 writes."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from continual_adapters.core.errors import ConfigError
from continual_adapters.registry.registry import Registry
from continual_adapters.stream.job import TaskJob
from continual_adapters.training.distributed import World, check_launch, world
from tests.support.cli import cli_ok
from tests.support.distributed_cli import without_head_dropout
from tests.support.paths import DATA_DIR, ROOT

WORKER = "tests.support.distributed_worker"
CLI = "tests.support.distributed_cli"
#: Two processes sum each gradient in another order than one process does (DDP's average of two
#: weighted slices against one mean over the batch) and pad each slice to its own longest row:
#: float32 results that differ in their last bits per step. Measured: weights at most 2.3e-6 apart
#: (the worker, 10 AdamW steps at lr 1e-2) and 1.2e-7 (the CLI run, 8 steps at lr 3e-3), epoch losses
#: 4e-8 apart relatively. The tolerances (1e-5 + 1e-4 |w| for a weight, 1e-6 relative for a loss)
#: sit at least 4x and 25x above that, and far below a real fault:
#: weighting each slice's mean equally instead of by its share moves weights by 6e-3 to 1.4e-2 and
#: the epoch loss by 2e-3 to 8e-3 relatively.
WEIGHTS_ATOL, WEIGHTS_RTOL = 1e-5, 1e-4
LOSS_RTOL = 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(rank: int, size: int, port: int) -> dict:
    """What torchrun exports for one process on one machine."""
    return {
        **os.environ,
        "RANK": str(rank),
        "WORLD_SIZE": str(size),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def single_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def assert_close_weights(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(ours[key], reference[key], atol=WEIGHTS_ATOL, rtol=WEIGHTS_RTOL), key


def test_world_from_the_launcher_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world() == World(0, 1, 0) and world().is_main and not world().active
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert not world().is_main and world().active


def test_a_launch_refuses_what_it_cannot_train_as_one_process(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    two = World(0, 2, 0)
    check_launch(two, "adapters", 32)
    check_launch(two, "naive", 32)
    check_launch(World(), "ewc", 7)
    for method in ("ewc", "replay", "lwf"):
        with pytest.raises(ConfigError, match="trains in one process only"):
            check_launch(two, method, 32)
    with pytest.raises(ConfigError, match="not a multiple of the 2 processes"):
        check_launch(two, "adapters", 15)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ConfigError, match="--mixed_precision fp16"):
        check_launch(World(), "adapters", 32)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    check_launch(two, "adapters", 32)


def test_two_processes_make_the_single_process_update(tmp_path):
    """45 rows in global batches of 10: the last batch (5 rows) lies on rank 0 alone and rank 1 joins
    the exchange with its padding at weight zero; 47 rows: the last batch splits 5 and 2."""
    subprocess.run([sys.executable, "-m", WORKER, str(tmp_path)], check=True, timeout=300, cwd=ROOT, env=single_env())
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", WORKER, str(tmp_path)], env=launch_env(r, 2, port), cwd=ROOT)
        for r in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for rows in (45, 47):
        single, rank0, rank1 = (load_file(tmp_path / f"rank{n}-{rows}.safetensors") for n in ("single", 0, 1))
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "every process ends with the same weights"
        assert_close_weights(rank0, single)
        curves = [json.loads((tmp_path / f"rank{n}-{rows}.json").read_text()) for n in ("single", 0, 1)]
        assert curves[0]["steps"] == curves[1]["steps"] == 2 * 5
        assert curves[0]["tokens"] == curves[1]["tokens"] == curves[2]["tokens"], "tokens of the whole batches"
        for curve in curves[1:]:
            assert curve["train_loss"] == pytest.approx(curves[0]["train_loss"], rel=LOSS_RTOL)


@pytest.fixture
def dropout_free_encoder(tiny_encoder_dir, tmp_path) -> str:
    folder = tmp_path / "encoder"
    shutil.copytree(tiny_encoder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def add_task_args(db: Path, encoder: str) -> list[str]:
    folder = DATA_DIR / "sst2"
    return [
        "--registry",
        str(db),
        "add-task",
        "sst2",
        "--train",
        str(folder / "train.jsonl"),
        "--validation",
        str(folder / "validation.jsonl"),
        "--max-train",
        "60",
        "--max-eval",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--encoder",
        encoder,
        "--device",
        "cpu",
        "--json",
    ]


def test_accelerate_launch_registers_the_single_process_task_once(tmp_path, dropout_free_encoder, monkeypatch):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) against one process on the same global batches
    (60 rows in batches of 16: the last one, 12 rows, splits 8 and 4): same loss curve and weights
    within the tolerances above, one registration, and every registry write made by rank 0."""
    monkeypatch.setattr(TaskJob, "spec", without_head_dropout(TaskJob.spec))
    single_db, launched_db = tmp_path / "single" / "registry.db", tmp_path / "launched" / "registry.db"
    log = tmp_path / "writes.jsonl"
    single = json.loads(cli_ok(*add_task_args(single_db, dropout_free_encoder)).output)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    # On a machine without GPUs, `--cpu` makes accelerate start one process whatever --num_processes
    # says; `--multi_gpu` is its torchrun launcher, and cadapt then trains on CPU through gloo.
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    env = {**single_env(), "OMP_NUM_THREADS": "1", "CADAPT_WRITE_LOG": str(log)}
    command = [*launch, "-m", CLI, *add_task_args(launched_db, dropout_free_encoder)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"task": "sst2"') == 1, "only rank 0 reports"
    launched = json.loads(result.stdout[result.stdout.index("{") :])
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    trainings = [entry for entry in logged if "training_processes" in entry]
    assert sorted((e["rank"], e["training_processes"]) for e in trainings) == [(0, 2), (1, 2)], "shared by two"
    writes = [entry for entry in logged if "call" in entry]
    assert {w["rank"] for w in writes} == {0}, "rank 1 wrote to the registry"
    assert {"begin_task", "write_file", "finish_task"} <= {w["call"] for w in writes}
    registries = {name: Registry(db) for name, db in (("single", single_db), ("launched", launched_db))}
    for registry in registries.values():
        assert [(t.name, t.status) for t in registry.tasks(include_pending=True)] == [("sst2", "ready")]
        assert registry.bundle("sst2").hyperparameters["steps"] == 2 * 4
        assert len(list((registry.root / "bundles").iterdir())) == 1, "one bundle, nothing left over"
    weights = {name: load_file(registry.root / registry.bundle("sst2").path) for name, registry in registries.items()}
    assert_close_weights(weights["launched"], weights["single"])
    curve = [h["train_loss"] for h in launched["history"]]
    assert curve == pytest.approx([h["train_loss"] for h in single["history"]], rel=LOSS_RTOL)
