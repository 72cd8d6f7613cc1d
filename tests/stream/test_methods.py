"""EWC, replay and LwF through the runner and `cadapt add-task`: each keeps (or needs) its state in
the registry, resumes from it in a new process, records that the shared encoder changed the
earlier tasks, and refuses bad options before anything is written."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.core.config import MethodOptions, TrainConfig
from continual_adapters.core.errors import ConfigError
from continual_adapters.data.taskdata import DataSpec
from continual_adapters.registry import Registry
from continual_adapters.report.reporting import format_markdown, stream_report
from continual_adapters.stream.audit import audit
from continual_adapters.stream.runner import Runner
from continual_adapters.training.ewc import parse_fisher
from continual_adapters.training.replay import ReplayBuffer

CONFIG = TrainConfig(epochs=1, batch_size=16, max_length=32)
NAMES = ("sst2", "trec", "cr")


def spec(data_dir, name):
    return DataSpec.from_folder(data_dir / name, max_train=32, max_eval=24)


def runner_for(registry, encoder, method):
    return Runner(registry, encoder=encoder, progress=False, method=method)


@pytest.mark.parametrize("method", ["ewc", "replay", "lwf"])
def test_a_stream_keeps_its_state_and_resumes_in_a_new_runner(tmp_path, data_dir, tiny_encoder_dir, method):
    registry = Registry(tmp_path / "registry.db")
    options = MethodOptions(replay_size=40)
    for i, name in enumerate(NAMES):  # a new Runner per task: nothing carries over but the registry
        result = runner_for(registry, tiny_encoder_dir, method).add_task(
            name, spec(data_dir, name), train=CONFIG, method=method, options=options
        )
        assert result is not None and result.task.method == method
        assert result.proof["unchanged"] is (i == 0), "the shared encoder changes every earlier task"
        assert result.proof["confirmation"] == "full" and set(result.reevaluated) == set(NAMES[:i])
    kinds = {name: sorted(a.kind for a in registry.artifacts(name)) for name in NAMES}
    state = {"ewc": ["fisher"], "replay": ["replay"], "lwf": []}[method]
    assert all(kinds[name] == sorted(["centroids", "probe", *state]) for name in NAMES)
    hyper = registry.bundle("cr").hyperparameters
    assert hyper["method"] == method
    if method == "replay":
        buffer = ReplayBuffer.from_bytes(registry.read_artifact("cr", "replay"), "memory")
        assert buffer.capacity == 40 and buffer.seen == 3 * 32 and len(buffer.items) == 40
        assert set(buffer.by_task()) <= set(NAMES) and len(buffer.by_task()) >= 2
    if method == "ewc":
        first, last = (parse_fisher(registry.read_artifact(n, "fisher"), n) for n in ("sst2", "cr"))
        assert set(first) == set(last) and all(name.startswith("encoder.") for name in first)
        assert sum(float(v.sum()) for v in last.values()) > sum(float(v.sum()) for v in first.values())
    report = audit(runner_for(registry, tiny_encoder_dir, method))
    assert not report.ok, "a method that shares the encoder fails the 'unchanged' check by nature"
    state = stream_report(registry)["method_state"]
    stored: dict[str, int] = {}
    for artifact in (a for n in NAMES for a in registry.artifacts(n) if a.kind in ("fisher", "replay")):
        stored[artifact.kind] = stored.get(artifact.kind, 0) + artifact.size_bytes
    assert state["kinds"] == stored and state["bytes"] == sum(stored.values()) and bool(stored) is (method != "lwf")
    markdown = format_markdown(stream_report(registry))
    if method == "replay":
        assert state["replay"]["examples"] == 40 and state["replay"]["after"] == "cr"
        assert "replay memory after cr: 40 training examples kept" in markdown
    else:
        assert state["replay"] is None and "replay memory" not in markdown
    assert ("## Method state kept beside the bundles" in markdown) is (method != "lwf")


def drift(tmp_path, data_dir, encoder, weight):
    """How far the shared encoder moves while the second task trains, under EWC of `weight`."""
    registry = Registry(tmp_path / f"ewc{weight:g}.db")
    runner = runner_for(registry, encoder, "ewc")
    options = MethodOptions(ewc_lambda=weight)
    runner.add_task("sst2", spec(data_dir, "sst2"), train=CONFIG, options=options)
    before = {n: p.detach().clone() for n, p in runner.model.task_modules("sst2").encoder.named_parameters()}
    runner.add_task(
        "trec",
        spec(data_dir, "trec"),
        train=TrainConfig(epochs=2, batch_size=8, max_length=32, lr=1e-3),
        options=options,
    )
    after = dict(runner.model.task_modules("trec").encoder.named_parameters())
    return sum(float((after[n].detach() - before[n]).pow(2).sum()) for n in before)


def test_the_ewc_penalty_holds_the_encoder_near_its_anchor(tmp_path, data_dir, tiny_encoder_dir):
    free, held = drift(tmp_path, data_dir, tiny_encoder_dir, 0.0), drift(tmp_path, data_dir, tiny_encoder_dir, 1e9)
    assert held < 0.5 * free


def test_the_replay_size_cannot_change_mid_stream(tmp_path, data_dir, tiny_encoder_dir):
    registry = Registry(tmp_path / "registry.db")
    runner = runner_for(registry, tiny_encoder_dir, "replay")
    runner.add_task("sst2", spec(data_dir, "sst2"), train=CONFIG, options=MethodOptions(replay_size=10))
    before = registry.dump()
    with pytest.raises(ConfigError, match="holds 10 examples"):
        runner.add_task("trec", spec(data_dir, "trec"), train=CONFIG, options=MethodOptions(replay_size=20))
    assert registry.dump() == before


def files(folder):
    """Every file of the registry but SQLite's shared-memory index and log, which merely opening it for
    reading creates (the test checks apart that the log stayed empty)."""
    return {
        p.relative_to(folder): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-shm", "-wal"))
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "replay", "--replay-size", "-1"], "replay size must be an integer >= 1"),
        (["--method", "replay", "--replay-size", "0"], "replay size must be an integer >= 1"),
        (["--method", "ewc", "--ewc-lambda", "-2"], "EWC needs lambda >= 0"),
        (["--method", "lwf", "--lwf-temperature", "0"], "LwF needs temperature > 0"),
        (
            ["--method", "lwf", "--replay-size", "5"],
            "replay_size: these options belong to another method than 'lwf'; it takes lwf_temperature, lwf_weight",
        ),
        (["--method", "lora", "--adapter-size", "64"], "method 'lora' trains no adapter"),
        (["--method", "lora", "--lora-rank", "0"], "LoRA rank must be an integer >= 1"),
        (["--method", "ewc"], "this registry holds 'replay' tasks; 'ewc' needs a registry of its own"),
        (["--method", "adapters"], "this registry holds 'replay' tasks; 'adapters' needs a registry of its own"),
        (
            ["--ewc-lambda", "3"],
            "ewc_lambda: these options belong to another method than 'replay'; it takes replay_size",
        ),
    ],
)
def test_bad_options_say_error_and_leave_the_registry_byte_identical(
    tmp_path_factory, data_dir, tiny_encoder_dir, args, message
):
    folder = tmp_path_factory.mktemp("registry")
    registry = Registry(folder / "registry.db")
    runner_for(registry, tiny_encoder_dir, "replay").add_task(
        "sst2", spec(data_dir, "sst2"), train=CONFIG, options=MethodOptions(replay_size=10)
    )
    registry.close()
    before = files(folder)
    result = CliRunner().invoke(
        cli,
        ["--registry", str(folder / "registry.db"), "add-task", "trec", "--data", str(data_dir / "trec")]
        + ["--max-train", "16", "--max-eval", "8", "--epochs", "1", "--max-length", "32", "--encoder", tiny_encoder_dir]
        + args,
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") or "\nError: " in result.output
    assert re.search(message, result.output), result.output
    assert files(folder) == before
    wal = folder / "registry.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "nothing was written to the log either"
