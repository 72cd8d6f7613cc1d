"""Hostile bundle files put in a registry's place: `verify_bundle`, `fsck` and the sha256 load refuse them.

The registry's folder must be byte-identical afterwards. The cases are those of
test_hostile_bundles.py (tests/support/hostile_bundles.py); this file comes after it in collection
order, so `test_figures` here reports the measurements of both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from continual_adapters.core.errors import IntegrityError
from continual_adapters.files.bundle import load_task
from continual_adapters.registry.registry import BundleDraft, EvaluationDraft, Registry
from tests.support.hostile_bundles import CASES, EXTRA_BYTES_LIMIT, MEASURED, SPEC, VALID, check_bounded
from tests.support.tiny import tiny_model


def folder_state(folder: Path) -> dict:
    state = {}
    for path in sorted(folder.rglob("*")):
        info = os.lstat(path)
        content = path.read_bytes() if path.is_file() and not path.is_symlink() and info.st_size < 2**20 else None
        state[str(path.relative_to(folder))] = (
            info.st_mode,
            info.st_size,
            content,
            os.readlink(path) if path.is_symlink() else None,
        )
    return state


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry-template")
    reg = Registry(folder / "registry.db")
    reg.init()
    reg.begin_task("a", labels=["neg", "pos"], head="classification", primary_metric="accuracy", data={})
    rel, sha, size = reg.write_file("a", VALID)
    reg.finish_task(
        "a",
        BundleDraft(rel, sha, size, {"task": SPEC.to_dict()}, {}, {}, 0, {}, None, 0.0),
        [EvaluationDraft("a", "test", "accuracy", 0.5)],
        {},
    )
    reg.close()
    return folder


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_registry_verification_rejects(case, tmp_path, model, registry_template):
    folder = tmp_path / "reg"
    shutil.copytree(registry_template, folder, symlinks=True)
    reg = Registry(folder / "registry.db")
    path = reg.bundle_path("a")
    path.unlink()
    case.build(path)
    reg.close()
    before = folder_state(folder)
    reg = Registry(folder / "registry.db")
    with pytest.raises(IntegrityError) as info:
        reg.verify_bundle("a")
    assert str(path) in str(info.value)
    error, elapsed, extra = check_bounded(lambda: load_task(model, path, expected_sha256=reg.bundle("a").sha256))
    assert str(path) in str(error) and elapsed < 1.0 and extra < EXTRA_BYTES_LIMIT
    assert not reg.fsck().ok and "a" in reg.fsck().checksum_mismatches
    reg.close()
    assert folder_state(folder) == before


def test_figures():
    """Prints the figures docs/reliability.md quotes (`pytest -s`): it runs after both hostile-bundle files,
    so it counts the rejections timed in each."""
    assert MEASURED
    print(
        f'\nFIGURES hostile_bundles {{"cases": {len(CASES)}, "rejections_measured": {len(MEASURED)}, '
        f'"max_seconds": {max(t for t, _ in MEASURED):.3f}, '
        f'"max_extra_mib": {max(m for _, m in MEASURED) / 2**20:.2f}}}'
    )
