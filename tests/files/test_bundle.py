import struct

import pytest
import torch
from safetensors.torch import save as st_save

from continual_adapters.core.config import AdapterConfig, TaskSpec
from continual_adapters.core.errors import BundleError, IntegrityError, TaskNotFoundError
from continual_adapters.files.atomic import sha256_file
from continual_adapters.files.bundle import bundle_bytes, bundle_metadata, load_task, parse_bundle, save_task
from tests.support.tiny import tiny_batch, tiny_model

SPEC = TaskSpec("a", labels=("neg", "pos"), adapter=AdapterConfig(bottleneck=8))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(3)
    model = tiny_model()
    model.add_task(SPEC)
    for p in model.tasks["a"].parameters():
        p.data.normal_()
    path = save_task(model, "a", tmp_path / "a.safetensors")
    return model, path


def test_round_trip_gives_identical_logits(saved):
    model, path = saved
    ids, mask = tiny_batch()
    expected = model(ids, mask, task="a")
    fresh = tiny_model()
    assert load_task(fresh, path, expected_sha256=sha256_file(path)) == SPEC
    assert torch.equal(fresh(ids, mask, task="a"), expected)


def test_config_is_in_the_header(saved):
    model, path = saved
    config, _ = parse_bundle(path.read_bytes())
    assert config["task"]["labels"] == ["neg", "pos"]
    assert config["base_sha256"] == model.base_sha256()
    assert config["param_counts"]["adapter"] == model.parameter_counts("a").adapter


def _rejects(path, error=BundleError, **kwargs):
    fresh = tiny_model()
    with pytest.raises(error) as info:
        load_task(fresh, path, **kwargs)
    assert "a" not in fresh.tasks, "a rejected bundle must not leave a half-attached task"
    return str(info.value)


def test_flipped_bit_is_caught_by_sha256(saved):
    _, path = saved
    expected = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    assert str(path) in _rejects(path, IntegrityError, expected_sha256=expected)


def test_truncated(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:100])
    assert "header length" in _rejects(path) or "not a valid" in _rejects(path)


def test_different_base_weights(saved):
    _, path = saved
    other = tiny_model(seed=9)
    with pytest.raises(IntegrityError):
        load_task(other, path)
    assert load_task(other, path, allow_base_mismatch=True) == SPEC


def test_shape_mismatch_with_config(saved, tmp_path):
    _, path = saved
    config, tensors = parse_bundle(path.read_bytes())
    tensors["head.out.weight"] = torch.zeros(3, 32)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(st_save(tensors, metadata=bundle_metadata(config)))
    assert "head.out.weight" in _rejects(bad)


def test_missing_key_and_nan(saved, tmp_path):
    _, path = saved
    config, tensors = parse_bundle(path.read_bytes())
    meta = bundle_metadata(config)
    missing = dict(tensors)
    missing.pop("adapters.0.up.bias")
    (tmp_path / "m.safetensors").write_bytes(st_save(missing, metadata=meta))
    assert "missing" in _rejects(tmp_path / "m.safetensors")
    tensors["adapters.0.up.bias"] = torch.full_like(tensors["adapters.0.up.bias"], float("nan"))
    (tmp_path / "n.safetensors").write_bytes(st_save(tensors, metadata=meta))
    assert "NaN" in _rejects(tmp_path / "n.safetensors")


def test_not_a_bundle(tmp_path):
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"x": torch.zeros(2)}))
    assert "not a cadapt-bundle" in _rejects(plain)
    pickle = tmp_path / "p.safetensors"
    torch.save({"x": torch.zeros(2)}, pickle)
    _rejects(pickle)
    huge = tmp_path / "h.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    assert "header length" in _rejects(huge)


def test_symlink_refused(saved, tmp_path):
    _, path = saved
    link = tmp_path / "link.safetensors"
    link.symlink_to(path)
    assert "symbolic link" in _rejects(link)


def test_unknown_task_cannot_be_saved(tmp_path):
    with pytest.raises(TaskNotFoundError):
        save_task(tiny_model(), "zzz", tmp_path / "z.safetensors")


def test_bytes_are_deterministic(saved):
    model, path = saved
    assert bundle_bytes(model, "a") == path.read_bytes()
