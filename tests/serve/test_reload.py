"""Tasks change while serving: added and removed tasks appear and disappear without a restart (by
polling or `POST /v1/reload`), a bundle that does not match its sha256 is refused and reported,
requests in flight during a reload are all answered, a promotion moves what a bare task name serves,
and nothing the server does writes to the registry."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from continual_adapters.registry import Registry
from tests.support.cli import cli_ok
from tests.support.serving import RunningServer, add_tiny_task
from tests.support.versions import COMMON, data_args


def served_names(running: RunningServer) -> list[str]:
    return [t["name"] for t in running.call("GET", "/v1/tasks").json()["tasks"]]


def wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def flip_a_byte(path) -> bytes:
    original = path.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    return original


def test_a_task_added_while_serving_is_served_after_a_reload_and_a_removed_one_disappears(
    own_registry, tiny_encoder_dir, tmp_path
):
    with RunningServer(own_registry) as running:
        before = running.predict([{"text": "good film", "task": "delta"}])
        add_tiny_task(own_registry, "delta", tiny_encoder_dir, tmp_path / "delta", seed=7)
        stop, statuses = threading.Event(), []

        def keep_asking():
            while not stop.is_set():
                statuses.append(running.predict([{"text": "good film", "task": "alpha"}] * 3).status)

        with ThreadPoolExecutor(2) as pool:
            askers = [pool.submit(keep_asking) for _ in range(2)]
            time.sleep(0.2)
            reloaded = running.call("POST", "/v1/reload")
            time.sleep(0.2)
            stop.set()
            for asker in askers:
                asker.result(30)
        after = running.predict([{"text": "good film", "task": "delta"}])
        expected = cli_ok("--registry", own_registry, "predict", "--task", "delta", "good film").output.split("\t")
        cli_ok("--registry", own_registry, "remove", "delta")
        removed = running.call("POST", "/v1/reload", {"verify": False})
        gone = running.predict([{"text": "good film", "task": "delta"}])
        names = served_names(running)
    assert (before.status, before.code) == (404, "unknown_task")
    assert reloaded.status == 200 and reloaded.json()["added"] == ["delta"]
    assert statuses and set(statuses) == {200}, "requests in flight during the reload were all answered"
    assert after.status == 200 and after.json()["predictions"][0]["label"] == expected[1].split()[0]
    assert removed.json()["removed"] == ["delta"]
    assert (gone.status, gone.code) == (404, "unknown_task") and names == ["alpha", "beta", "gamma"]


def test_polling_serves_a_new_task_without_a_restart(own_registry, tiny_encoder_dir, tmp_path):
    with RunningServer(own_registry, poll_s=0.2) as running:
        assert served_names(running) == ["alpha", "beta", "gamma"]
        add_tiny_task(own_registry, "delta", tiny_encoder_dir, tmp_path / "delta", seed=7)
        assert wait_for(lambda: "delta" in served_names(running))
        reply = running.predict([{"text": "good film", "task": "delta"}])
    assert reply.status == 200 and reply.json()["predictions"][0]["task"] == "delta"


def test_a_tampered_bundle_is_refused_at_start_and_reported(own_registry):
    path = Registry(own_registry).bundle_path("beta")
    flip_a_byte(path)
    with RunningServer(own_registry) as running:
        tasks = running.call("GET", "/v1/tasks").json()
        beta = running.predict([{"text": "good film", "task": "beta"}])
        alpha = running.predict([{"text": "good film", "task": "alpha"}])
        health = running.call("GET", "/healthz").json()
        metrics = running.call("GET", "/metrics").body.decode()
    assert [t["name"] for t in tasks["tasks"]] == ["alpha", "gamma"]
    [refused] = tasks["refused"]
    assert refused["name"] == "beta" and "does not match the recorded" in refused["reason"]
    assert (beta.status, beta.code) == (404, "unknown_task") and "refused" in beta.json()["error"]["message"]
    assert alpha.status == 200
    assert health["refused"] == 1 and "cadapt_tasks_refused 1" in metrics


def test_a_bundle_tampered_while_served_is_taken_out_of_service(own_registry):
    path = Registry(own_registry).bundle_path("alpha")
    with RunningServer(own_registry) as running:
        assert running.predict([{"text": "good film", "task": "alpha"}]).status == 200
        original = flip_a_byte(path)
        report = running.call("POST", "/v1/reload").json()
        refused = running.predict([{"text": "good film", "task": "alpha"}])
        path.write_bytes(original)
        restored = running.call("POST", "/v1/reload").json()
        served = running.predict([{"text": "good film", "task": "alpha"}])
    assert list(report["refused"]) == ["alpha"] and "sha256" in report["refused"]["alpha"]
    assert (refused.status, refused.code) == (404, "unknown_task")
    assert restored["added"] == ["alpha"] and served.status == 200


def test_no_endpoint_writes_to_the_registry(own_registry):
    registry = Registry(own_registry)
    before = registry.dump()
    with RunningServer(own_registry, poll_s=0.1) as running:
        running.predict([{"text": "good film", "task": t} for t in ("alpha", "beta", "gamma", "auto")])
        for path in ("/", "/v1/tasks", "/healthz", "/metrics"):
            assert running.call("GET", path).status == 200
        assert running.call("POST", "/v1/reload").status == 200
        time.sleep(0.3)
    assert registry.dump() == before


def test_a_promotion_reaches_the_server_at_its_next_reload(own_registry, tmp_path):
    """A bare name follows `cadapt promote` (which moves no file); name@N and name@alias are served too,
    and every answer names the version that gave it."""
    cli_ok("--registry", own_registry, "add-task", "alpha", "--new-version", *data_args(tmp_path, 5), *COMMON)

    def answered(running: RunningServer, ref: str) -> str:
        reply = running.predict([{"text": "good film", "task": ref}])
        assert reply.status == 200, reply.body
        return reply.json()["predictions"][0]["task"]

    with RunningServer(own_registry) as running:
        before = [answered(running, ref) for ref in ("alpha", "alpha@1", "alpha@2")]
        cli_ok("--registry", own_registry, "promote", "alpha@2")
        cli_ok("--registry", own_registry, "alias", "alpha", "stable", "1")
        assert running.call("POST", "/v1/reload").status == 200
        after = [answered(running, ref) for ref in ("alpha", "alpha@1", "alpha@stable", "alpha@current")]
        unknown = running.predict([{"text": "good film", "task": "alpha@9"}])
    assert before == ["alpha", "alpha", "alpha@2"]
    assert after == ["alpha@2", "alpha", "alpha", "alpha@2"]
    assert (unknown.status, unknown.code) == (404, "unknown_task")
