import pytest
import torch

from continual_adapters.core.architectures import ARCHITECTURES
from continual_adapters.core.config import AdapterConfig, TaskSpec
from continual_adapters.core.errors import UnsupportedArchitectureError
from continual_adapters.core.inject import AdapterSlot, TaskLayerNorm
from continual_adapters.core.model import ContinualModel
from tests.support.tiny import TINY, tiny_batch, tiny_encoder, tiny_model

SPEC = TaskSpec("a", labels=("x", "y"), adapter=AdapterConfig(bottleneck=8))


def _bare_hidden(model_type, ids, mask):
    return tiny_encoder(model_type)(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_zeroed_up_projection_is_bit_identical(model_type):
    ids, mask = tiny_batch()
    model = tiny_model(model_type)
    modules = model.add_task(SPEC)
    for adapter in modules.adapters:
        torch.nn.init.zeros_(adapter.up.weight)
    model.set_task("a")
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(hidden, _bare_hidden(model_type, ids, mask))


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_paper_init_is_close_but_not_equal(model_type):
    ids, mask = tiny_batch()
    model = tiny_model(model_type)
    model.add_task(SPEC)
    model.set_task("a")
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    bare = _bare_hidden(model_type, ids, mask)
    assert not torch.equal(hidden, bare)
    assert torch.allclose(hidden, bare, atol=0.1)


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_two_adapters_and_two_norms_per_layer_in_order(model_type):
    model = tiny_model(model_type)
    slots = [m for m in model.encoder.modules() if isinstance(m, AdapterSlot)]
    norms = [m for m in model.encoder.modules() if isinstance(m, TaskLayerNorm)]
    assert [s.index for s in slots] == list(range(2 * model.num_layers))
    assert [n.index for n in norms] == list(range(2 * model.num_layers))


def test_adapter_runs_before_the_residual_layernorm():
    """Each LayerNorm must see the adapter's output: record call order per layer."""
    model = tiny_model("bert")
    modules = model.add_task(SPEC)
    model.set_task("a")
    calls = []
    for i, adapter in enumerate(modules.adapters):
        adapter.register_forward_hook(lambda *_, i=i: calls.append(("adapter", i)))
    for i, norm in enumerate(modules.norms):
        norm.register_forward_hook(lambda *_, i=i: calls.append(("norm", i)))
    model.encoder(*tiny_batch())
    expected = [(kind, i) for i in range(4) for kind in ("adapter", "norm")]
    assert calls == expected


def test_no_task_active_is_the_bare_encoder():
    ids, mask = tiny_batch()
    model = tiny_model("bert")
    model.add_task(SPEC)
    model.set_task(None)
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(hidden, _bare_hidden("bert", ids, mask))


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import AutoConfig, AutoModel

    encoder = AutoModel.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError) as info:
        ContinualModel(encoder)
    for name in ARCHITECTURES:
        assert name in str(info.value)
