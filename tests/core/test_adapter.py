import pytest
import torch

from continual_adapters.core.adapter import Adapter, adapter_parameter_count
from continual_adapters.core.config import AdapterConfig, TaskSpec
from continual_adapters.core.errors import ConfigError


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


@pytest.mark.parametrize(
    "bad",
    [
        dict(name="Bad Name", labels=("a", "b")),
        dict(name="x", labels=("a",)),
        dict(name="x", labels=("a", "a")),
        dict(name="x", head="regression", labels=("a", "b")),
        dict(name="../x", labels=("a", "b")),
        dict(name="x", labels=("a", "b"), pooling="max"),
    ],
)
def test_bad_task_spec(bad):
    with pytest.raises(ConfigError):
        TaskSpec(**bad)


def test_spec_round_trip():
    spec = TaskSpec("t1", labels=("neg", "pos"), adapter=AdapterConfig(bottleneck=8, activation="relu"))
    assert TaskSpec.from_dict(spec.to_dict()) == spec


# --- fast path vs reference (issue #9) ------------------------------------------------------
# Tolerance: none. In fp32 the fast path performs the same operations in the same order as the
# reference formula, so logits and gradients must be bit-identical (torch.equal); this keeps
# `cadapt audit`'s exact golden-logit check valid for tasks registered before the fast path.

from continual_adapters.core.adapter import fast_path, fast_path_enabled, set_fast_path  # noqa: E402


def _perturbed_model(model_type: str, activation: str = "gelu", bottleneck: int = 8):
    from tests.support.tiny import tiny_model

    model = tiny_model(model_type)
    torch.manual_seed(3)
    model.add_task(
        TaskSpec("t", labels=("a", "b", "c"), adapter=AdapterConfig(bottleneck=bottleneck, activation=activation))
    )
    with torch.no_grad():  # move the adapters away from the identity so the test means something
        for param in model.task_modules("t").parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


def _logits_and_grads(model, fast: bool, train: bool = False):
    from tests.support.tiny import tiny_batch

    ids, mask = tiny_batch()
    model.train(train)
    model.zero_grad(set_to_none=True)
    with fast_path(fast):
        torch.manual_seed(7)  # same dropout masks in both runs when training
        logits = model(ids, mask, task="t")
        (logits.square().sum() + logits[:, 0].sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.task_modules("t").named_parameters()}
    return logits.detach(), grads


@pytest.mark.parametrize(
    "model_type,activation",
    [
        ("bert", "gelu"),
        ("bert", "relu"),
        ("bert", "swish"),
        ("bert", "identity"),
        ("distilbert", "gelu"),
        ("mpnet", "tanh"),
    ],
)
def test_fast_path_logits_and_gradients_are_bit_identical_to_reference(model_type, activation):
    model = _perturbed_model(model_type, activation)
    fast_logits, fast_grads = _logits_and_grads(model, fast=True)
    ref_logits, ref_grads = _logits_and_grads(model, fast=False)
    assert torch.equal(fast_logits, ref_logits)
    assert fast_grads.keys() == ref_grads.keys() and len(fast_grads) > 0
    for name in ref_grads:
        assert torch.equal(fast_grads[name], ref_grads[name]), name


def test_fast_path_matches_reference_in_train_mode_with_dropout():
    model = _perturbed_model("bert")
    fast_logits, fast_grads = _logits_and_grads(model, fast=True, train=True)
    ref_logits, ref_grads = _logits_and_grads(model, fast=False, train=True)
    assert torch.equal(fast_logits, ref_logits)
    assert all(torch.equal(fast_grads[k], ref_grads[k]) for k in ref_grads)


def test_fast_path_input_gradient_and_shapes():
    torch.manual_seed(0)
    adapter = Adapter(16, AdapterConfig(bottleneck=4))
    with torch.no_grad():
        adapter.up.weight.normal_()
    for shape in [(5, 16), (2, 3, 16), (2, 1, 3, 16)]:
        results = []
        for fast in (True, False):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
            with fast_path(fast):
                y = adapter(x)
            y.pow(2).sum().backward()
            results.append((y.detach(), x.grad))
        assert results[0][0].shape == shape
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_fast_path_handles_non_contiguous_input():
    adapter = Adapter(8, AdapterConfig(bottleneck=2))
    x = torch.randn(8, 4, 3).transpose(0, 2)  # (3, 4, 8), not contiguous
    with fast_path(False):
        expected = adapter(x)
    assert torch.equal(adapter(x), expected)


def test_fast_path_under_cpu_autocast_keeps_the_reference_dtype():
    adapter = Adapter(16, AdapterConfig(bottleneck=4))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 16).to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = adapter(x)
            with fast_path(False):
                ref = adapter(x)
        assert fast.dtype == ref.dtype
        assert torch.equal(fast, ref)


def test_fast_path_switch_and_context_manager_restore():
    assert fast_path_enabled()
    with fast_path(False):
        assert not fast_path_enabled()
        with fast_path(True):
            assert fast_path_enabled()
        assert not fast_path_enabled()
    assert fast_path_enabled()
    set_fast_path(False)
    try:
        assert not fast_path_enabled()
    finally:
        set_fast_path(True)


def test_fast_path_in_inference_mode():
    model = _perturbed_model("bert")
    from tests.support.tiny import tiny_batch

    ids, mask = tiny_batch()
    with torch.inference_mode():
        fast = model(ids, mask, task="t")
        with fast_path(False):
            ref = model(ids, mask, task="t")
    assert torch.equal(fast, ref)
