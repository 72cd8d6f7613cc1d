"""Shared fixtures: real data, the session's real task stream, a tiny hub-like encoder, registry backends.

Helpers that tests import live in `tests/support/`; this file only holds fixtures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.backends import Backend
from tests.support.cli import cli_ok, real_task_args
from tests.support.paths import DATA_DIR, ROOT


@pytest.fixture
def data_dir() -> Path:
    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def stream(tmp_path_factory):
    """A registry holding three real tasks (SST-2, TREC, TweetEval-emotion) on the real default encoder.

    Shared by the runner, CLI, audit and report tests so the real training runs once.
    """
    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    root = tmp_path_factory.mktemp("stream")
    url = str(root / "registry.db")
    cli_ok("--registry", url, "init")
    first = cli_ok("--registry", url, *real_task_args(DATA_DIR, "sst2", 400), "--json")
    second = cli_ok("--registry", url, *real_task_args(DATA_DIR, "trec", 400), "--json")
    third = cli_ok("--registry", url, *real_task_args(DATA_DIR, "tweeteval_emotion", 300), "--json")
    import json

    return {"url": url, "root": root, "outputs": [json.loads(r.output) for r in (first, second, third)]}


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> str:
    """A tiny random BERT saved like a hub checkpoint, with the real MiniLM tokenizer: fast runner tests."""
    from continual_adapters.core.encoder import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """scenarios/smoke.yaml run end to end through the CLI, as CI and users run it."""
    import json

    if not (DATA_DIR / "sst2" / "train.jsonl").exists():
        pytest.fail(f"real data not found at {DATA_DIR}; set CADAPT_DATA_DIR")
    out = tmp_path_factory.mktemp("smoke")
    result = cli_ok(
        "run-scenario",
        ROOT / "scenarios" / "smoke.yaml",
        "--out",
        out,
        "--data-dir",
        DATA_DIR,
        "--results",
        out / "results.md",
        "--quiet",
        "--json",
    )
    return {"out": out, "data": json.loads(result.stdout)}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """One empty registry location per backend (PostgreSQL when CADAPT_TEST_POSTGRES_URL is set)."""
    made = Backend(request.param, tmp_path)
    yield made
    made.close()
