"""Served = audited: each task is served at its recorded max_length and precision, so its probe rows
come back with exactly the logits its probe recorded, and its evaluation split with the predictions
(and golden logits) recorded at registration. `task: "auto"` routes as `cadapt predict` does and
answers "no task" below `--min-task-confidence`."""

from __future__ import annotations

import json
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest
import torch

from continual_adapters.data.taskdata import load_eval_split
from continual_adapters.registry import Registry
from continual_adapters.serve.inference import Row, run_rows
from continual_adapters.serve.state import TaskLoader
from continual_adapters.stream.confirm import load_probe
from continual_adapters.stream.runner import Runner
from continual_adapters.stream.serving import Inputs, TaskSettings, predict_inputs, settings_from
from continual_adapters.training.loop import predictions_sha256
from tests.support.cli import cli_ok
from tests.support.serving import TASKS, RunningServer


def eval_texts(registry: Registry, name: str) -> list[str]:
    task = registry.task(name)
    return load_eval_split(task.data, task.labels)[0].texts


def test_probe_rows_of_every_task_in_one_request_give_the_recorded_logits_bit_for_bit(served_registry):
    registry = Registry(served_registry)
    probes = {name: load_probe(registry, name) for name in TASKS}
    rows = [{"text": text, "task": name} for name in TASKS for text in eval_texts(registry, name)[:2]]
    loader = TaskLoader(registry)
    loader.reload()
    tokenizer = loader.model.tokenizer
    for name, probe in probes.items():  # the probe holds these two rows, uncut, padded to 8 tokens
        texts = [r["text"] for r in rows if r["task"] == name]
        padded = tokenizer(texts, padding="longest", pad_to_multiple_of=8, return_tensors="pt")
        assert torch.equal(padded["input_ids"], probe.input_ids)
    with RunningServer(served_registry) as running:
        reply = running.predict(rows, return_logits=True)
    assert reply.status == 200, reply.body
    got = reply.json()["predictions"]
    for name, probe in probes.items():
        served = torch.tensor([p["logits"] for p in got if p["task"] == name], dtype=torch.float32)
        assert torch.equal(served, probe.logits), (name, served, probe.logits)


def test_the_evaluation_split_served_gives_the_recorded_predictions_and_golden_logits(served_registry):
    registry = Registry(served_registry)
    with RunningServer(served_registry) as running:
        for name in TASKS:
            task = registry.task(name)
            texts = eval_texts(registry, name)
            reply = running.predict([{"text": t, "task": name} for t in texts], return_logits=True)
            assert reply.status == 200, reply.body
            got = reply.json()["predictions"]
            predictions = np.array([task.labels.index(p["label"]) for p in got], dtype=np.int64)
            recorded = [e for e in registry.evaluations(name, kind="registration") if e.metric == "accuracy"]
            assert predictions_sha256(predictions) == recorded[0].predictions_sha256
            golden = torch.tensor(task.proof["golden"]["logits"])
            served = torch.tensor([p["logits"] for p in got[: len(golden)]])
            assert torch.allclose(served, golden, atol=1e-5, rtol=0)


def test_each_task_is_served_at_its_recorded_max_length(served_registry):
    """beta was registered with --max-length 16: a long text is cut there, as evaluation cut it,
    and `cadapt predict` now cuts it there too."""
    long = "a good film " * 30
    runner = Runner(Registry(served_registry), progress=False)
    recorded = predict_inputs(runner, Inputs([long]), "beta")[0]
    uncut = predict_inputs(runner, Inputs([long]), "beta", max_length=128)[0]
    assert abs(recorded.score - uncut.score) > 1e-4, "the test needs a text whose cut changes the answer"
    with RunningServer(served_registry) as running:
        served = running.predict([{"text": long, "task": "beta"}]).json()["predictions"][0]
    assert served["score"] == pytest.approx(recorded.score, abs=1e-6)
    out = cli_ok("--registry", served_registry, "predict", "--task", "beta", long, "--json").output
    assert json.loads(out)["score"] == pytest.approx(recorded.score, abs=1e-6)


def test_recorded_settings_and_the_precision_a_task_is_run_in(served_registry):
    registry = Registry(served_registry)
    bundle = registry.bundle("alpha")
    assert settings_from(bundle) == TaskSettings(32, "float32")
    on_cuda = replace(bundle, hyperparameters={**bundle.hyperparameters, "device": "cuda:0"})
    assert settings_from(on_cuda) == TaskSettings(32, "bfloat16")
    assert settings_from(replace(bundle, hyperparameters={})) == TaskSettings(128, "float32")

    loader = TaskLoader(registry)
    loader.reload()
    model, state = loader.model, loader.state
    rows = [Row("good film 3", None, "alpha"), Row("awful film 12", None, "alpha")]
    fp32 = torch.tensor([a.logits for a in run_rows(model, state, rows, 64)])
    bf16_state = replace(
        state, tasks=MappingProxyType({**state.tasks, "alpha": replace(state.tasks["alpha"], precision="bfloat16")})
    )
    bf16 = torch.tensor([a.logits for a in run_rows(model, bf16_state, rows, 64)])
    batch = model.tokenizer([r.text for r in rows], padding="longest", pad_to_multiple_of=8, return_tensors="pt")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.stack(
            model.forward_mixed(
                batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], tasks=["alpha", "alpha"]
            )
        ).float()
    assert torch.equal(bf16, expected)
    assert not torch.equal(bf16, fp32)


TEXTS = ["good film 3", "awful film", "nice", "the of and", "zzz qqq", "poor film 7", "fine", "dull film 40"]


def test_auto_routes_like_cadapt_predict_and_rejects_below_the_confidence(served_registry):
    out = cli_ok("--registry", served_registry, "predict", "--task", "auto", *TEXTS, "--json").output
    expected = [json.loads(line)["task"] for line in out.splitlines()]
    rows = [{"text": text, "task": "auto"} for text in TEXTS]
    with RunningServer(served_registry) as running:
        routed = running.predict(rows).json()["predictions"]
    assert [p["task"] for p in routed] == expected
    assert {p["task_source"] for p in routed} == {"auto"}
    confidence = [p["task_confidence"] for p in routed]
    assert all(0 <= c <= 1 for c in confidence)
    distinct = sorted(set(confidence))
    assert len(distinct) > 1, "the test needs rows routed with different confidence"
    threshold = (distinct[0] + distinct[1]) / 2
    with RunningServer(served_registry, min_task_confidence=threshold) as running:
        strict = running.predict(rows).json()["predictions"]
    for before, after in zip(routed, strict, strict=True):
        assert after["task_confidence"] == before["task_confidence"]
        if before["task_confidence"] < threshold:
            assert (after["task"], after["label"], after["scores"]) == (None, None, [])
            assert "no task" in after["rejected"]
        else:
            assert (after["task"], after["label"]) == (before["task"], before["label"])
