"""`cadapt serve` as users start it: a real process on a loopback port, stopped by SIGTERM; its
help needs neither FastAPI nor torch; a named task that is not ready stops it before it binds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

from tests.support.paths import ROOT
from tests.support.serving import free_port, request


def test_help_lists_serve_and_imports_neither_the_server_nor_the_model():
    script = textwrap.dedent(
        """
        import json, sys
        from click.testing import CliRunner
        from continual_adapters.cli import cli
        top = CliRunner().invoke(cli, ["--help"])
        own = CliRunner().invoke(cli, ["serve", "--help"])
        heavy = [m for m in ("fastapi", "uvicorn", "starlette", "torch", "transformers") if m in sys.modules]
        codes = [top.exit_code, own.exit_code]
        print(json.dumps({"top": top.output, "own": own.output, "codes": codes, "heavy": heavy}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["codes"] == [0, 0] and out["heavy"] == []
    assert "serve" in out["top"]
    assert "--host TEXT" in out["own"] and "127.0.0.1" in out["own"] and "--min-task-confidence" in out["own"]


def _serve(registry, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "continual_adapters", "--registry", str(registry), "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--poll-s", "0", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, port


def test_cadapt_serve_runs_on_loopback_and_stops_on_sigterm(served_registry):
    proc, port = _serve(served_registry, "--tasks", "alpha,beta")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(base, "GET", "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.3)
        tasks = request(base, "GET", "/v1/tasks").json()
        reply = request(base, "POST", "/v1/predict", {"inputs": [{"text": "good film", "task": "beta"}]})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert [t["name"] for t in tasks["tasks"]] == ["alpha", "beta"]
    assert reply.status == 200 and reply.json()["predictions"][0]["task"] == "beta"
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a process should
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert f"Serving 2 task(s) on http://127.0.0.1:{port}" in stderr


def test_a_named_task_that_is_not_ready_stops_the_server_before_it_binds(served_registry):
    proc, _ = _serve(served_registry, "--tasks", "alpha,nope")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Error: not ready in this registry: nope" in stderr
