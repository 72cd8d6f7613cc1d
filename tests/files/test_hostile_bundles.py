"""Hostile bundle files refused by `files.bundle.load_task`, with and without the recorded sha256.

Each case (tests/support/hostile_bundles.py) must be refused with a typed error naming the file and
the problem, in under a second and without reading or allocating more than the model itself
implies. The same cases against registry verification are in test_hostile_bundles_registry.py.
"""

from __future__ import annotations

import re
from functools import partial

import pytest

from continual_adapters.files.bundle import load_task
from tests.support.hostile_bundles import CASES, EXTRA_BYTES_LIMIT, SENTINEL, VALID_SHA, check_bounded
from tests.support.tiny import tiny_model


def test_case_count():
    assert len(CASES) >= 50 and len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_load_task_rejects(case, tmp_path, model):
    path = tmp_path / "hostile.safetensors"
    case.build(path)
    attempts = [None, VALID_SHA] if not case.sha_only else [VALID_SHA]
    for expected in attempts:
        error, elapsed, extra = check_bounded(partial(load_task, model, path, expected_sha256=expected))
        assert str(path) in str(error), str(error)
        if expected is None or case.sha_only:
            assert isinstance(error, case.error)
            assert re.search(case.match, str(error)), str(error)
        assert elapsed < 1.0, f"{case.name}: {elapsed:.2f}s"
        assert extra < EXTRA_BYTES_LIMIT, f"{case.name}: {extra / 2**20:.1f} MiB"
        assert "a" not in model.tasks
    assert not SENTINEL.exists(), "a pickle in a bundle file was executed"


def test_sha_only_cases_load_without_a_hash(tmp_path, model):
    """The point of the sha256: these files are well-formed bundles, only different ones."""
    for case in (c for c in CASES if c.sha_only):
        path = tmp_path / f"{case.name}.safetensors"
        case.build(path)
        load_task(model, path)
        model.remove_task("a")
