import pytest
import torch

from continual_adapters.core.adapter import adapter_parameter_count
from continual_adapters.core.config import AdapterConfig, TaskSpec
from continual_adapters.core.errors import ConfigError, TaskExistsError, TaskNotFoundError
from tests.support.tiny import TINY, tiny_batch, tiny_model


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
    model.add_task(spec("b"))
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
    assert (
        counts.adapter
        == adapter_parameter_count(d, bottleneck, layers)
        == (2 * layers * (2 * bottleneck * d + d + bottleneck) if bottleneck else 0)
    )
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


def _three_tasks(model):
    from continual_adapters.core.config import AdapterConfig, TaskSpec

    model.add_task(TaskSpec("two", labels=("a", "b")))
    model.add_task(TaskSpec("three", labels=("x", "y", "z"), pooling="cls", adapter=AdapterConfig(bottleneck=8)))
    model.add_task(TaskSpec("norms", labels=("p", "q"), method="ln-only", adapter=AdapterConfig(bottleneck=0)))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name in ("two", "three", "norms"):
            for param in model.task_modules(name).parameters():
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def test_mixed_batch_equals_per_task_runs_in_row_order():
    """One encoder pass with per-row routing gives each row its own task's logits (fp32, 1e-5)."""
    model = _three_tasks(tiny_model())
    ids, mask = tiny_batch(batch=7, length=9)
    tasks = ["three", "two", "norms", "two", "three", "norms", "two"]
    mixed = model.forward_mixed(ids, mask, tasks=tasks)
    for row, name in enumerate(tasks):
        alone = model(ids[row : row + 1], mask[row : row + 1], task=name)[0]
        assert mixed[row].shape == alone.shape
        assert torch.allclose(mixed[row], alone, atol=1e-5), (row, name)
    assert model.router.groups == []


def test_predict_with_a_task_per_text_matches_single_task_predict():
    from continual_adapters.core.prediction import Prediction

    class Tokenizer:
        def __call__(self, texts, pairs=None, **kwargs):
            width = max(len(t) for t in texts)
            ids = torch.zeros(len(texts), width, dtype=torch.long)
            mask = torch.zeros(len(texts), width, dtype=torch.long)
            for i, text in enumerate(texts):
                ids[i, : len(text)] = torch.tensor([5 + ord(c) % 100 for c in text])
                mask[i, : len(text)] = 1
            return _Batch(input_ids=ids, attention_mask=mask)

    model = _three_tasks(tiny_model())
    model.tokenizer = Tokenizer()
    texts = ["good film", "why", "meh", "a long sentence here", "ok"]
    tasks = ["two", "three", "norms", "two", "three"]
    mixed = model.predict(texts, task=tasks, batch_size=8)
    for text, name, got in zip(texts, tasks, mixed, strict=True):
        alone = model.predict([text], task=name)[0]
        assert isinstance(got, Prediction) and got.task == name and got.label == alone.label
        assert got.probabilities.keys() == alone.probabilities.keys()
        assert all(abs(got.probabilities[k] - alone.probabilities[k]) < 1e-5 for k in got.probabilities)
    assert mixed[1].top(2)[0][1] >= mixed[1].top(2)[1][1]
    with pytest.raises(ConfigError):
        model.predict(texts, task=tasks[:2])


class _Batch(dict):
    def to(self, device):
        return _Batch({k: v.to(device) for k, v in self.items()})


def test_a_released_tasks_modules_are_reused_for_a_loaded_task_of_the_same_shape(tmp_path):
    """Attaching with `initialise=False` (a bundle is about to fill every tensor) takes the modules of a
    released task of the same shape instead of building new ones; its answers are then exactly those
    of the task when it was first attached. At most MAX_SPARES are kept."""
    from continual_adapters.core.model import MAX_SPARES
    from continual_adapters.files.bundle import load_task, save_task

    torch.manual_seed(0)
    model = tiny_model().eval()
    ids, mask = tiny_batch()
    for name in ("a", "b"):
        with torch.no_grad():
            for p in model.add_task(spec(name)).parameters():
                p.add_(0.1 * torch.randn_like(p))
        save_task(model, name, tmp_path / f"{name}.safetensors")
    model.eval()
    want = model(ids, mask, task="b")
    # The modules are held, so their ids stay theirs: a freed module's address can be reused.
    held = [model.tasks[n] for n in ("a", "b")]
    released = {id(m) for m in held}
    model.remove_task("a")
    model.remove_task("b")
    load_task(model, tmp_path / "b.safetensors")
    assert id(model.tasks["b"]) in released and model.tasks["b"].spec.name == "b"
    assert torch.equal(model(ids, mask, task="b"), want)
    assert id(model.add_task(spec("c", bottleneck=4), initialise=False)) not in released, "other shapes are built"
    assert id(model.add_task(spec("d"))) not in released, "a random init never takes a spare"
    model = tiny_model()
    many = [f"t{i}" for i in range(MAX_SPARES + 4)]
    held = [model.add_task(spec(name)) for name in many]
    built = {id(m) for m in held}
    for name in many:
        model.remove_task(name)
    taken = [id(model.add_task(spec(f"u{name}"), initialise=False)) in built for name in many]
    assert sum(taken) == MAX_SPARES, "spares are capped"


def test_a_spare_is_reused_for_a_task_with_another_label_count_and_answers_as_a_fresh_load(tmp_path):
    """Spares are keyed by adapter shape and method only: a released 3-label task's modules serve a
    2-label task, whose head is rebuilt to its size, and the loaded task answers exactly as it does
    when loaded into a model that never had a spare."""
    from continual_adapters.files.bundle import load_task, save_task

    torch.manual_seed(0)
    two = TaskSpec("two", labels=("no", "yes"), adapter=AdapterConfig(bottleneck=8))
    source = tiny_model().eval()
    with torch.no_grad():
        for p in source.add_task(two).parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_task(source, "two", tmp_path / "two.safetensors")
    ids, mask = tiny_batch()

    fresh = tiny_model().eval()
    load_task(fresh, tmp_path / "two.safetensors")
    want = fresh(ids, mask, task="two")

    model = tiny_model().eval()
    released = model.add_task(spec("three"))
    model.remove_task("three")
    load_task(model, tmp_path / "two.safetensors")
    assert model.tasks["two"] is released, "the spare of another label count is taken"
    assert model.tasks["two"].head.out.out_features == 2
    assert torch.equal(model(ids, mask, task="two"), want)
