import pytest
import torch

from conftest import TINY, tiny_batch, tiny_model
from continual_adapters.adapter import adapter_parameter_count
from continual_adapters.config import AdapterConfig, TaskSpec
from continual_adapters.errors import ConfigError, TaskExistsError, TaskNotFoundError


def spec(name, bottleneck=8, head="classification"):
    labels = () if head == "regression" else ("neg", "pos", "mid")
    return TaskSpec(name, labels=labels, head=head, adapter=AdapterConfig(bottleneck=bottleneck))


def test_only_task_parameters_require_grad():
    model = tiny_model()
    a = model.add_task(spec("a"))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in a.parameters()}
    assert all(not p.requires_grad for p in model.encoder.parameters())


def test_two_tasks_share_no_tensor():
    model = tiny_model()
    a, b = model.add_task(spec("a")), model.add_task(spec("b"))
    storages_a = {p.data_ptr() for p in a.parameters()}
    assert not storages_a & {p.data_ptr() for p in b.parameters()}
    assert not storages_a & {p.data_ptr() for p in model.encoder.parameters()}


def test_training_task_b_leaves_base_and_task_a_bit_identical():
    torch.manual_seed(0)
    model = tiny_model()
    model.add_task(spec("a"))
    b = model.add_task(spec("b"))
    base_before, a_before, b_before = model.base_sha256(refresh=True), model.task_sha256("a"), model.task_sha256("b")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = tiny_batch()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(ids, mask, task="b"), torch.tensor([0, 1, 2]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model.base_sha256(refresh=True) == base_before
    assert model.task_sha256("a") == a_before
    assert model.task_sha256("b") != b_before
    assert all(p.grad is None for p in model.tasks["a"].parameters())


def test_switching_tasks_switches_outputs():
    model = tiny_model()
    model.add_task(spec("a"))
    model.add_task(spec("b"))
    ids, mask = tiny_batch()
    out_a, out_b = model(ids, mask, task="a"), model(ids, mask, task="b")
    assert not torch.equal(out_a, out_b)
    assert torch.equal(model(ids, mask, task="a"), out_a)
    assert model.active_task == "a"


@pytest.mark.parametrize("model_type", sorted(TINY))
@pytest.mark.parametrize("bottleneck", [0, 1, 8, 64])
def test_parameter_count_matches_closed_form(model_type, bottleneck):
    model = tiny_model(model_type)
    model.add_task(spec("a", bottleneck))
    counts = model.parameter_counts("a")
    d, layers = model.hidden_size, model.num_layers
    assert counts.adapter == adapter_parameter_count(d, bottleneck, layers) == (
        2 * layers * (2 * bottleneck * d + d + bottleneck) if bottleneck else 0)
    assert counts.layer_norm == 2 * layers * 2 * d
    assert counts.head == d * 3 + 3
    assert counts.base == sum(p.numel() for p in model.encoder.parameters())
    assert counts.bytes == 4 * counts.total


def test_regression_head_has_one_output():
    model = tiny_model()
    model.add_task(spec("r", head="regression"))
    assert model(*tiny_batch(), task="r").shape == (3, 1)


def test_typed_errors():
    model = tiny_model()
    model.add_task(spec("a"))
    with pytest.raises(TaskExistsError):
        model.add_task(spec("a"))
    with pytest.raises(TaskNotFoundError):
        model.set_task("nope")
    model.set_task(None)
    with pytest.raises(ConfigError):
        model(*tiny_batch())
    model.remove_task("a")
    assert "a" not in model.tasks
