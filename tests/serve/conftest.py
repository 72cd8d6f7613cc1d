"""Fixtures of the `cadapt serve` tests: one tiny three-task registry built once per session (read
only), and a private copy of it for the tests that add, remove or tamper with tasks."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="cadapt serve needs the 'serve' extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="cadapt serve needs the 'serve' extra: pip install -e '.[serve]'")

from tests.support.serving import build_registry, copy_registry  # noqa: E402


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory, tiny_encoder_dir):
    """Tasks alpha, beta and gamma (tests.support.serving.TASKS) on the tiny encoder. Never modified."""
    return build_registry(tmp_path_factory.mktemp("served"), tiny_encoder_dir)


@pytest.fixture
def own_registry(served_registry, tmp_path):
    """A copy of `served_registry` a test may change."""
    return copy_registry(served_registry, tmp_path / "own")
