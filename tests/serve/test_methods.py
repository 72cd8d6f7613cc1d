"""Registries of other methods are served as `cadapt predict` runs them: a shared-encoder registry
(naive, EWC, replay, LwF) with the encoder the latest task left under every task's head, also after
tasks are added or removed while serving; a LoRA registry one task's LoRA at a time. Same labels as
`cadapt predict`, scores within float rounding."""

from __future__ import annotations

import json

import pytest

from continual_adapters.registry import Registry
from tests.support.cli import cli_ok
from tests.support.serving import TASKS, RunningServer, add_tiny_task, build_registry, copy_registry

TEXTS = ["good film 3", "awful film 12", "nice film", "poor film 7", "a great film " * 8, "dull film 40"]
NAIVE = ("--method", "naive")


def rows_of(names) -> list[dict]:
    names = list(names)
    return [{"text": text, "task": names[i % len(names)]} for i, text in enumerate(TEXTS)]


def predicted(url, rows, tmp_path) -> list[tuple[str, str, float]]:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = cli_ok("--registry", url, "predict", "--file", path, "--task-column", "task", "--json").output
    return [(p["task"], p["label"], p["score"]) for p in map(json.loads, out.splitlines())]


def served(running: RunningServer, rows) -> list[tuple[str, str, float]]:
    reply = running.predict(rows)
    assert reply.status == 200, reply.body
    return [(p["task"], p["label"], p["score"]) for p in reply.json()["predictions"]]


def assert_same(got, expected) -> None:
    assert [(t, label) for t, label, _ in got] == [(t, label) for t, label, _ in expected]
    assert [s for _, _, s in got] == pytest.approx([s for _, _, s in expected], abs=1e-5)


@pytest.fixture(scope="module")
def naive_registry(tmp_path_factory, tiny_encoder_dir):
    """alpha, beta and gamma trained in turn through one shared encoder (method naive). Read only."""
    return build_registry(tmp_path_factory.mktemp("naive"), tiny_encoder_dir, TASKS, NAIVE)


@pytest.mark.parametrize("method", ["naive", "lwf"])
def test_a_shared_encoder_registry_answers_as_cadapt_predict(method, naive_registry, tmp_path, tiny_encoder_dir):
    url = naive_registry
    if method != "naive":
        url = build_registry(tmp_path / method, tiny_encoder_dir, {"alpha": 32, "beta": 16}, ("--method", method))
    names = [t.name for t in Registry(url).tasks()]
    rows = rows_of(names)
    with RunningServer(url) as running:
        listed = running.call("GET", "/v1/tasks").json()
        got = served(running, rows)
    assert [t["name"] for t in listed["tasks"]] == names and {t["method"] for t in listed["tasks"]} == {method}
    assert_same(got, predicted(url, rows, tmp_path))


def test_only_the_selected_tasks_are_served_on_the_latest_encoder(naive_registry, tmp_path):
    rows = [{"text": text, "task": "beta"} for text in TEXTS]
    with RunningServer(naive_registry, tasks=("beta",)) as running:
        assert [t["name"] for t in running.call("GET", "/v1/tasks").json()["tasks"]] == ["beta"]
        got = served(running, rows)
        assert running.predict([{"text": "x", "task": "alpha"}]).code == "unknown_task"
    assert_same(got, predicted(naive_registry, rows, tmp_path))


def test_an_added_or_removed_task_brings_every_task_its_new_encoder(naive_registry, tmp_path, tiny_encoder_dir):
    url = copy_registry(naive_registry, tmp_path / "own")
    rows = rows_of(TASKS)
    with RunningServer(url) as running:
        before = served(running, rows)
        add_tiny_task(url, "delta", tiny_encoder_dir, tmp_path / "delta", seed=7, options=NAIVE)
        reload = running.call("POST", "/v1/reload", {}).json()
        assert reload["added"] == ["delta"]
        after = served(running, [*rows, {"text": "good film", "task": "delta"}])
        expected = predicted(url, [*rows, {"text": "good film", "task": "delta"}], tmp_path)
        assert_same(after, expected)
        assert [s for _, _, s in after[: len(rows)]] != [s for _, _, s in before], "delta's encoder is served"

        cli_ok("--registry", url, "remove", "delta")
        assert running.call("POST", "/v1/reload", {}).json()["removed"] == ["delta"]
        assert_same(served(running, rows), predicted(url, rows, tmp_path))
    assert_same(before, predicted(url, rows, tmp_path))


def test_a_refused_latest_bundle_refuses_every_task_of_its_encoder(naive_registry, tmp_path):
    url = copy_registry(naive_registry, tmp_path / "own")
    path = Registry(url).bundle_path("gamma")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with RunningServer(url) as running:
        listed = running.call("GET", "/v1/tasks").json()
        assert running.predict([{"text": "good film", "task": "alpha"}]).code == "unknown_task"
    assert listed["tasks"] == []
    reasons = {r["name"]: r["reason"] for r in listed["refused"]}
    assert set(reasons) == set(TASKS) and "sha256" in reasons["gamma"]
    assert "gamma's bundle is refused" in reasons["alpha"] and "gamma's bundle is refused" in reasons["beta"]


def test_a_lora_registry_answers_as_cadapt_predict(tmp_path, tiny_encoder_dir):
    lora = ("--method", "lora", "--lora-rank", "4", "--lr", "1e-3")
    url = build_registry(tmp_path / "lora", tiny_encoder_dir, {"alpha": 32, "beta": 16}, lora)
    rows = rows_of(["alpha", "beta"])
    with RunningServer(url) as running:
        assert {t["method"] for t in running.call("GET", "/v1/tasks").json()["tasks"]} == {"lora"}
        got = served(running, rows)
    assert_same(got, predicted(url, rows, tmp_path))
