"""Joint training of every task (the multitask upper bound) on tiny random models: the mixed-batch
loss against a hand computation, determinism, mixing, and what training moves."""

from __future__ import annotations

import pytest
import torch

from continual_adapters.core.baselines import BaselineModel
from continual_adapters.core.config import AdapterConfig, TaskSpec, TrainConfig
from continual_adapters.training import multitask
from continual_adapters.training.loop import Encoded, pad_batch
from continual_adapters.training.multitask import mixed_batch_loss, mixed_batches, train_multitask

NO_ADAPTER = AdapterConfig(bottleneck=0)
LABELS = {"two": ("a", "b"), "three": ("x", "y", "z")}


def tiny_naive(encoder_dir: str, regression: bool = False) -> BaselineModel:
    """A naive (one shared encoder copy) model with a 2-label, a 3-label and optionally a regression task."""
    model = BaselineModel.from_pretrained(encoder_dir, method="naive")
    torch.manual_seed(0)
    for name, labels in LABELS.items():
        model.add_task(TaskSpec(name, labels=labels, method="naive", adapter=NO_ADAPTER))
    if regression:
        model.add_task(TaskSpec("score", head="regression", method="naive", adapter=NO_ADAPTER))
    return model.eval()


def random_encoded(rows: int, outputs: int, seed: int) -> Encoded:
    """Token ids of random lengths with targets that depend on the first word, so there is something to learn."""
    generator = torch.Generator().manual_seed(seed)
    features, targets = [], []
    for _ in range(rows):
        length = int(torch.randint(4, 12, (1,), generator=generator))
        ids = torch.randint(1000, 1000 + 4 * max(outputs, 1), (length,), generator=generator).tolist()
        features.append({"input_ids": [101, *ids, 102], "attention_mask": [1] * (length + 2)})
        targets.append((ids[0] - 1000) % outputs if outputs > 1 else float(ids[0] - 1000) / 4)
    dtype = torch.long if outputs > 1 else torch.float32
    return Encoded(features, torch.tensor(targets, dtype=dtype))


def tasks_for(seed: int = 0) -> dict[str, tuple[Encoded, Encoded, str]]:
    return {
        name: (random_encoded(20 + 4 * i, len(labels), seed + i), random_encoded(8, len(labels), 50 + i), "accuracy")
        for i, (name, labels) in enumerate(LABELS.items())
    }


CONFIG = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_ratio=0.1)


def test_mixed_batch_loss_is_the_mean_of_every_examples_own_loss(tiny_encoder_dir):
    model = tiny_naive(tiny_encoder_dir, regression=True)
    data = {"two": random_encoded(3, 2, 1), "three": random_encoded(2, 3, 2), "score": random_encoded(4, 1, 3)}
    groups = [
        (name, pad_batch(model.tokenizer, enc, list(range(len(enc))), None), enc.targets) for name, enc in data.items()
    ]
    loss = mixed_batch_loss(model, groups, model.device)

    per_example = []
    for name, batch, targets in groups:
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), task=name)
        for row in range(len(targets)):  # one example at a time, by hand
            if name == "score":
                per_example.append((logits[row, 0] - targets[row]) ** 2)
            else:
                per_example.append(-torch.log_softmax(logits[row], -1)[targets[row]])
    expected = torch.stack(per_example).mean()
    assert len(per_example) == 9
    torch.testing.assert_close(loss, expected)
    # Not the mean of the group means: the groups differ in size.
    group_means = [torch.stack(per_example[:3]).mean(), torch.stack(per_example[3:5]).mean()]
    group_means.append(torch.stack(per_example[5:]).mean())
    assert not torch.allclose(loss, torch.stack(group_means).mean())
    loss.backward()
    assert all(model.task_modules(name).head.out.weight.grad is not None for name in data)


def test_mixed_batch_loss_refuses_an_empty_batch(tiny_encoder_dir):
    from continual_adapters.core.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one example"):
        mixed_batch_loss(tiny_naive(tiny_encoder_dir), [], torch.device("cpu"))


def test_mixed_batches_group_rows_by_task_in_batch_order():
    order = [("a", 0), ("b", 3), ("a", 2), ("b", 1), ("c", 0)]
    assert mixed_batches(order, 3) == [[("a", [0, 2]), ("b", [3])], [("b", [1]), ("c", [0])]]


def _parameters(model: BaselineModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.tasks.named_parameters()}


def test_training_is_deterministic_for_a_seed(tiny_encoder_dir):
    runs = []
    for _ in range(2):
        model = tiny_naive(tiny_encoder_dir)
        result = train_multitask(model, tasks_for(), CONFIG, progress=False)
        runs.append((result, _parameters(model)))
    (first, first_params), (second, second_params) = runs
    assert first.history == second.history and first.best_epoch == second.best_epoch
    assert first.steps == second.steps == CONFIG.epochs * -(-(20 + 24) // CONFIG.batch_size)
    assert first_params.keys() == second_params.keys()
    assert all(torch.equal(first_params[k], second_params[k]) for k in first_params)
    other = tiny_naive(tiny_encoder_dir)
    train_multitask(other, tasks_for(), TrainConfig(**{**CONFIG.to_dict(), "seed": 1}), progress=False)
    assert any(not torch.equal(first_params[k], v) for k, v in _parameters(other).items())


def test_batches_mix_tasks_and_cover_every_example(tiny_encoder_dir, monkeypatch):
    seen: list[list[tuple[str, int]]] = []
    original = multitask.mixed_batch_loss

    def recording(model, groups, device):
        seen.append([(name, len(targets)) for name, _, targets in groups])
        return original(model, groups, device)

    monkeypatch.setattr(multitask, "mixed_batch_loss", recording)
    tasks = tasks_for()
    result = train_multitask(tiny_naive(tiny_encoder_dir), tasks, CONFIG, progress=False)
    assert len(seen) == result.steps
    assert sum(len(batch) > 1 for batch in seen) >= len(seen) // 2  # most batches hold both tasks
    for name, (train, _, _) in tasks.items():
        assert sum(n for batch in seen for task, n in batch if task == name) == CONFIG.epochs * len(train)
    assert all(sum(n for _, n in batch) <= CONFIG.batch_size for batch in seen)
    assert [h["epoch"] for h in result.history] == [1, 2] and 1 <= result.best_epoch <= 2
    assert all(f"{name}/accuracy" in h for h in result.history for name in tasks)


def test_every_head_and_the_encoder_train_the_pristine_base_does_not(tiny_encoder_dir):
    model = tiny_naive(tiny_encoder_dir)
    base = model.base_sha256(refresh=True)
    shared = model.task_modules("two").encoder
    assert shared is model.task_modules("three").encoder  # one encoder copy for every task
    before = {name: model.task_modules(name).head.out.weight.detach().clone() for name in LABELS}
    encoder_before = {k: v.detach().clone() for k, v in shared.named_parameters()}
    result = train_multitask(model, tasks_for(), TrainConfig(**{**CONFIG.to_dict(), "epochs": 1}), progress=False)
    assert result.best_epoch == 1 and result.wall_time_s > 0 and result.train_tokens > 0
    for name in LABELS:
        assert not torch.equal(model.task_modules(name).head.out.weight, before[name]), name
    moved = [k for k, v in shared.named_parameters() if not torch.equal(v, encoder_before[k])]
    assert len(moved) > len(encoder_before) // 2
    assert model.base_sha256(refresh=True) == base
    assert not model.training  # left in eval mode, like train_task
