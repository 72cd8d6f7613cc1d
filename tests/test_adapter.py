import pytest
import torch

from continual_adapters.adapter import Adapter, adapter_parameter_count
from continual_adapters.config import AdapterConfig, TaskSpec
from continual_adapters.errors import ConfigError


def test_shapes_and_internal_skip():
    adapter = Adapter(16, AdapterConfig(bottleneck=4))
    assert adapter.down.weight.shape == (4, 16) and adapter.up.weight.shape == (16, 4)
    torch.nn.init.zeros_(adapter.up.weight)
    x = torch.randn(2, 5, 16)
    assert torch.equal(adapter(x), x)


def test_paper_init_truncated_normal_with_zero_biases():
    torch.manual_seed(0)
    adapter = Adapter(384, AdapterConfig(bottleneck=64, init_std=1e-2))
    for linear in (adapter.down, adapter.up):
        w = linear.weight
        assert w.abs().max() <= 2e-2 + 1e-9
        assert 0.006 < w.std().item() < 0.01  # a normal cut at 2 std has std 0.88 sigma
        assert torch.count_nonzero(linear.bias) == 0


def test_near_identity_at_init():
    torch.manual_seed(0)
    adapter = Adapter(64, AdapterConfig(bottleneck=8))
    x = torch.randn(4, 64)
    assert (adapter(x) - x).abs().max() < 0.05
    assert not torch.equal(adapter(x), x)


@pytest.mark.parametrize("name", ["gelu", "relu", "tanh", "swish", "identity"])
def test_activation_is_configurable(name):
    adapter = Adapter(8, AdapterConfig(bottleneck=2, activation=name))
    assert adapter(torch.randn(1, 8)).shape == (1, 8)


def test_closed_form():
    assert adapter_parameter_count(384, 64, 6) == 2 * 6 * (2 * 64 * 384 + 384 + 64)
    assert adapter_parameter_count(384, 0, 6) == 0


@pytest.mark.parametrize("bad", [dict(bottleneck=-1), dict(activation="softmax"), dict(init_std=0)])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        AdapterConfig(**bad)


@pytest.mark.parametrize("bad", [dict(name="Bad Name", labels=("a", "b")), dict(name="x", labels=("a",)),
                                 dict(name="x", labels=("a", "a")), dict(name="x", head="regression", labels=("a", "b")),
                                 dict(name="../x", labels=("a", "b")), dict(name="x", labels=("a", "b"), pooling="max")])
def test_bad_task_spec(bad):
    with pytest.raises(ConfigError):
        TaskSpec(**bad)


def test_spec_round_trip():
    spec = TaskSpec("t1", labels=("neg", "pos"), adapter=AdapterConfig(bottleneck=8, activation="relu"))
    assert TaskSpec.from_dict(spec.to_dict()) == spec
