"""The HTTP API through a real uvicorn server on a loopback port: answers equal `cadapt predict`'s,
alone, mixed and across concurrent requests; every documented error answers with its code."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from continual_adapters.registry import Registry
from continual_adapters.serve.protocol import ERROR_CODES
from tests.support.cli import cli_ok
from tests.support.serving import TASKS, RunningServer, request

LONG = "a long and winding review of a good film that goes on and on about the plot and the actors " * 2


def mixed_rows() -> list[dict]:
    """Rows of all three tasks interleaved, one longer than beta's recorded max_length of 16 tokens."""
    texts = ["good film 3", "awful film 12", "nice film", "poor film 7", LONG, "great film 1"]
    names = list(TASKS)
    return [{"text": text, "task": names[i % len(names)]} for i, text in enumerate(texts)]


def predicted_by_cli(url, rows, tmp_path, top_k=1) -> list[dict]:
    """`cadapt predict --file ... --task-column task --json`, one JSON object per row."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = cli_ok("--registry", url, "predict", "--file", path, "--task-column", "task", "--json", "--top-k", top_k)
    return [json.loads(line) for line in out.output.splitlines()]


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    assert [(g["task"], g["label"]) for g in got] == [(e["task"], e["label"]) for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["score"] == pytest.approx(e["score"], abs=1e-5)


def test_rows_of_several_tasks_in_one_request_answer_as_cadapt_predict(served_registry, tmp_path):
    rows = mixed_rows()
    expected = predicted_by_cli(served_registry, rows, tmp_path, top_k=2)
    with RunningServer(served_registry) as running:
        reply = running.predict(rows, top_k=2)
    assert reply.status == 200, reply.body
    got = reply.json()["predictions"]
    assert_same_answers(got, expected)
    assert [g["task_source"] for g in got] == ["given"] * len(rows)
    assert [[s["label"] for s in g["scores"]] for g in got] == [[t["label"] for t in e["top"]] for e in expected]


def test_concurrent_requests_are_merged_and_each_gets_its_own_answers(served_registry, tmp_path):
    rows = mixed_rows()
    requests = [[rows[(i + k) % len(rows)] for k in range(1 + i % 4)] for i in range(12)]
    expected = predicted_by_cli(served_registry, rows, tmp_path)
    by_text = {(r["text"], r["task"]): e for r, e in zip(rows, expected, strict=True)}
    with RunningServer(served_registry, max_wait_ms=300.0, max_batch=64) as running:
        start = threading.Barrier(len(requests))

        def send(inputs):
            start.wait()
            return running.predict(inputs)

        with ThreadPoolExecutor(len(requests)) as pool:
            replies = list(pool.map(send, requests))
        batches = running.server.metrics.batches
    for inputs, reply in zip(requests, replies, strict=True):
        assert reply.status == 200, reply.body
        assert_same_answers(reply.json()["predictions"], [by_text[(r["text"], r["task"])] for r in inputs])
    assert batches < len(requests), "requests arriving together should share batches"


def test_without_batching_each_request_runs_alone(served_registry):
    with RunningServer(served_registry, batching=False, max_wait_ms=300.0) as running:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: running.predict(mixed_rows()[:2]), range(4)))
        assert [r.status for r in replies] == [200] * 4
        assert running.server.metrics.batches == 4


def test_every_error_has_its_code_and_status(served_registry):
    cases = []
    with RunningServer(served_registry, max_body_bytes=2048, max_rows=4) as running:
        call = running.call
        cases.append(("invalid_json", call("POST", "/v1/predict", b"{not json")))
        cases.append(("invalid_json", call("POST", "/v1/predict", b"[1, 2]")))
        cases.append(("invalid_json", call("POST", "/v1/predict", b'{"inputs": [], "inputs": []}')))
        cases.append(("invalid_input", running.predict([])))
        cases.append(("invalid_input", running.predict([{"text": "no task named"}])))
        cases.append(("invalid_input", running.predict([{"text": "", "task": "alpha"}])))
        cases.append(("invalid_input", running.predict([{"text": "x", "task": "alpha"}], top_k=0)))
        cases.append(("invalid_input", running.predict([{"text": "x", "task": "alpha"}], colour="red")))
        cases.append(("unknown_task", running.predict([{"text": "x", "task": "alpha"}, {"text": "y", "task": "nope"}])))
        cases.append(("body_too_large", running.predict([{"text": "x" * 5000, "task": "alpha"}])))
        cases.append(("too_many_rows", running.predict([{"text": "x", "task": "alpha"}] * 5)))
        cases.append(("method_not_allowed", call("GET", "/v1/predict")))
        cases.append(("not_found", call("GET", "/v2/predict")))
        ok = running.predict([{"text": "x", "task": "alpha"}] * 4)
    assert ok.status == 200
    for code, reply in cases:
        assert (reply.code, reply.status) == (code, ERROR_CODES[code][0]), reply.body
        assert reply.headers["content-type"] == "application/json"
        assert "Traceback" not in reply.body.decode()
    assert "'nope'" in cases[8][1].json()["error"]["message"]


def test_a_full_queue_answers_503_with_retry_after_and_a_late_answer_504(served_registry):
    with RunningServer(served_registry, max_queue=1, timeout_s=30.0) as running:
        busy, release = threading.Event(), threading.Event()
        running.server.batcher.control(lambda: (busy.set(), release.wait(30)))
        assert busy.wait(10)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(running.predict, [{"text": "good film", "task": "alpha"}])
            deadline = time.monotonic() + 10
            while running.server.batcher.depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = running.predict([{"text": "good film", "task": "beta"}])
            release.set()
            answered = waiting.result(30)
    assert (refused.status, refused.code) == (503, "queue_full")
    assert refused.headers["retry-after"] == "1"
    assert answered.status == 200

    with RunningServer(served_registry, timeout_s=0.3) as running:
        release = threading.Event()
        running.server.batcher.control(lambda: release.wait(30))
        late = running.predict([{"text": "good film", "task": "alpha"}])
        release.set()
        after = running.predict([{"text": "good film", "task": "alpha"}])
    assert (late.status, late.code) == (504, "timeout")
    assert after.status == 200


def test_a_token_guards_everything_but_healthz(served_registry):
    with RunningServer(served_registry, token="s3cret") as running:
        health = running.call("GET", "/healthz")
        anonymous = running.call("GET", "/v1/tasks")
        wrong = running.call("GET", "/v1/tasks", headers={"Authorization": "Bearer nope"})
        denied = running.predict([{"text": "x", "task": "alpha"}])
        allowed = running.call(
            "POST",
            "/v1/predict",
            {"inputs": [{"text": "x", "task": "alpha"}]},
            headers={"Authorization": "Bearer s3cret"},
        )
    assert health.status == 200
    for reply in (anonymous, wrong, denied):
        assert (reply.status, reply.code) == (401, "unauthorized")
        assert reply.headers["www-authenticate"] == "Bearer"
    assert allowed.status == 200


def test_tasks_health_and_metrics_describe_what_is_served(served_registry):
    registry = Registry(served_registry)
    with RunningServer(served_registry) as running:
        running.predict(mixed_rows())
        tasks = running.call("GET", "/v1/tasks").json()
        health = running.call("GET", "/healthz").json()
        metrics = request(running.base, "GET", "/metrics")
    assert [t["name"] for t in tasks["tasks"]] == list(TASKS)
    for task in tasks["tasks"]:
        bundle = registry.bundle(task["name"])
        assert task["bundle_sha256"] == bundle.sha256 and task["params"] == bundle.param_counts
        assert (task["max_length"], task["precision"]) == (TASKS[task["name"]], "float32")
        assert task["metric"] == "accuracy" and task["auto_routable"]
    assert tasks["refused"] == []
    assert health == {"status": "ok", "tasks": 3, "refused": 0, "version": 1, "queue": 0}
    text = metrics.body.decode()
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'cadapt_requests_total{route="/v1/predict",status="200"} 1' in text
    assert 'cadapt_rows_total{task="alpha"} 2' in text and 'cadapt_rows_total{task="beta"} 2' in text
    assert 'cadapt_request_seconds_bucket{le="+Inf"} 1' in text
    assert 'cadapt_task_row_seconds_count{task="gamma"} 2' in text
    assert "cadapt_tasks_served 3" in text and "cadapt_batches_total 1" in text


def test_rows_with_and_without_a_second_text_are_tokenized_as_sent(served_registry):
    from continual_adapters.stream.runner import Runner

    runner = Runner(Registry(served_registry), progress=False)
    runner.attach("alpha")
    paired = runner.model.predict(["good film"], "alpha", pairs=["awful film 12"], max_length=TASKS["alpha"])[0]
    single = runner.model.predict(["good film"], "alpha", max_length=TASKS["alpha"])[0]
    assert abs(paired.score - single.score) > 1e-6, "the test needs a pair that changes the answer"
    rows = [
        {"text": "good film", "text_pair": "awful film 12", "task": "alpha"},
        {"text": "good film", "task": "alpha"},
        {"text": "good film", "text_pair": "awful film 12", "task": "auto"},
    ]
    with RunningServer(served_registry) as running:
        got = running.predict(rows).json()["predictions"]
    assert got[0]["score"] == pytest.approx(paired.score, abs=1e-6)
    assert got[1]["score"] == pytest.approx(single.score, abs=1e-6)
    assert got[2]["task_source"] == "auto" and got[2]["task"] in TASKS
