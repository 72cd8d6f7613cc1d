"""A team registry: rows in PostgreSQL, files in an S3 bucket, and two machines that share nothing else.

Two `cadapt` processes, each in its own working directory with its own data files (relative paths,
as a user types them), add a task at the same time to one PostgreSQL registry and one bucket on an
S3-compatible server (moto's; both servers come from .ci/run). Each then sees the other's task, and
predicts with it from its own directory: the bundle it loads comes out of the bucket, checked
against the sha256 the other process recorded. The servers are named only through the variables a
user sets (CADAPT_REGISTRY-style flags, AWS_ENDPOINT_URL and credentials), as on a real team.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.backends import Backend
from tests.support.paths import ROOT
from tests.support.reliability import task_args, write_tiny_data
from tests.support.s3 import environment, new_bucket, s3_endpoint

TIMEOUT_S = 600


def cadapt(cwd, env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "continual_adapters.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{err[-3000:]}"
    return out


def test_two_machines_share_a_registry_and_a_bucket(tmp_path, tiny_encoder_dir):
    endpoint = s3_endpoint()
    database = Backend("postgresql", tmp_path)
    try:
        bucket = new_bucket(endpoint)
        env = {
            **os.environ,
            **environment(endpoint),
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("CADAPT_ARTIFACTS", None)
        base = ["--registry", database.url, "--artifacts", f"s3://{bucket}/team"]
        machines = {"alpha": tmp_path / "machine-1", "beta": tmp_path / "machine-2"}
        adding = []
        for seed, (name, home) in enumerate(machines.items()):
            home.mkdir()
            files = write_tiny_data(home, seed=seed)
            relative = {split: path.relative_to(home) for split, path in files.items()}
            adding.append(cadapt(home, env, *base, "add-task", name, *task_args(relative, tiny_encoder_dir)))
        for proc in adding:
            finished(proc)

        for name, home in machines.items():
            other = "beta" if name == "alpha" else "alpha"
            listed = json.loads(finished(cadapt(home, env, *base, "tasks", "--json")))
            assert sorted(row["name"] for row in listed) == ["alpha", "beta"], listed
            rows = finished(cadapt(home, env, *base, "predict", "--task", other, "--json", "good film", "awful film"))
            predictions = [json.loads(line) for line in rows.splitlines()]
            assert [p["task"] for p in predictions] == [other, other]
            assert all(p["label"] in ("pos", "neg") and 0.0 <= p["score"] <= 1.0 for p in predictions), predictions

        check = json.loads(finished(cadapt(tmp_path, env, *base, "fsck", "--json")))
        assert check["ok"] is True, check
    finally:
        database.close()
