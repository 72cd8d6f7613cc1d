"""Experience replay: the reservoir keeps exactly algorithm R's examples, resumes from its bytes as
if never interrupted, refuses a malformed memory, and rehearsal averages the loss over the new
and the replayed examples."""

from __future__ import annotations

import pytest
import torch

from continual_adapters.core.baselines import BaselineModel
from continual_adapters.core.config import TaskSpec
from continual_adapters.core.errors import BundleError
from continual_adapters.training import replay
from continual_adapters.training.loop import encode, head_loss, pad_batch
from continual_adapters.training.replay import Rehearsal, ReplayBuffer, ReplayItem, encode_memory


class Scripted:
    """A random stream whose randrange answers are written in the test."""

    answers: list[int] = []

    def __init__(self, seed):
        self.seed = seed

    def randrange(self, stop):
        value = Scripted.answers.pop(0)
        assert 0 <= value < stop
        return value


def test_the_reservoir_keeps_algorithm_rs_examples(monkeypatch):
    monkeypatch.setattr(replay.random, "Random", Scripted)
    # capacity 2: e0 and e1 fill it; e2 draws slot 0 of 3 (replaces e0), e3 draws 3 of 4 (dropped),
    # e4 draws 1 of 5 (replaces e1).
    Scripted.answers = [0, 3, 1]
    buffer = ReplayBuffer(capacity=2)
    buffer.add("t", [f"e{i}" for i in range(5)], None, ["a", "b", "a", "b", "a"], seed=0)
    assert [item.text for item in buffer.items] == ["e2", "e4"] and buffer.seen == 5
    assert [item.label for item in buffer.items] == ["a", "a"] and Scripted.answers == []


def test_a_resumed_memory_equals_an_uninterrupted_one():
    texts = {name: [f"{name} {i}" for i in range(40)] for name in ("one", "two", "three")}
    straight = ReplayBuffer(capacity=10)
    for name, items in texts.items():
        straight.add(name, items, None, ["x"] * 40, seed=7)
    resumed = ReplayBuffer(capacity=10)
    for name, items in texts.items():
        resumed = ReplayBuffer.from_bytes(resumed.to_bytes(), "memory")
        resumed.add(name, items, None, ["x"] * 40, seed=7)
    assert resumed == straight and resumed.to_bytes() == straight.to_bytes()
    assert len(straight.items) == 10 and straight.seen == 120 and set(straight.by_task()) <= set(texts)
    other = ReplayBuffer(capacity=10)
    for name, items in texts.items():
        other.add(name, items, None, ["x"] * 40, seed=8)
    assert other.items != straight.items, "the seed decides what is kept"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"format": "cadapt-replay", "capacity": 1, "seen": 0}',
        b'{"format": "other", "capacity": 1, "seen": 0, "items": []}',
        b'{"format": "cadapt-replay", "capacity": 1, "seen": 2, "items": [{"task": "a", "text": "x", "label": "l"},'
        b' {"task": "a", "text": "y", "label": "l"}]}',
        b'{"format": "cadapt-replay", "capacity": 5, "seen": 0, "items": [{"task": "a", "text": "x", "label": "l"}]}',
        b'{"format": "cadapt-replay", "capacity": 5, "seen": 1,'
        b' "items": [{"task": "../a", "text": "x", "label": "l"}]}',
        b'{"format": "cadapt-replay", "capacity": 5, "seen": 1, "items": [{"task": "a", "text": "x"}]}',
    ],
)
def test_a_malformed_memory_is_refused_naming_its_source(data):
    with pytest.raises(BundleError, match="^memory of t"):
        ReplayBuffer.from_bytes(data, "memory of t")


def test_rehearsal_is_the_mean_loss_over_new_and_replayed_examples(tiny_encoder_dir):
    model = BaselineModel.from_pretrained(tiny_encoder_dir, method="naive").eval()
    model.add_task(TaskSpec("old", labels=("neg", "pos"), method="naive"))
    model.add_task(TaskSpec("older", labels=("a", "b", "c"), method="naive"))
    model.add_task(TaskSpec("new", labels=("p", "q"), method="naive"))
    buffer = ReplayBuffer(
        capacity=3,
        seen=3,
        items=[
            ReplayItem("old", "fine film", "pos"),
            ReplayItem("older", "what is it", "c"),
            ReplayItem("old", "dull", "neg"),
        ],
    )
    memory = encode_memory(model, buffer, 32)
    assert memory["old"].targets.tolist() == [1, 0] and memory["older"].targets.tolist() == [2]
    new = encode(model.tokenizer, ["one", "two words"], None, [0, 1], 32, "classification")
    objective = Rehearsal(memory, batch_size=8, seed=0)
    batch = pad_batch(model.tokenizer, new, [0, 1], None)
    loss = objective.loss(model, "new", [0, 1], batch, new.targets)

    def losses(task, encoded, rows):
        encoded_batch = pad_batch(model.tokenizer, encoded, rows, None)
        logits = model(encoded_batch["input_ids"], encoded_batch["attention_mask"], task=task)
        return [head_loss("classification", logits[i : i + 1], encoded.targets[[r]]) for i, r in enumerate(rows)]

    every = losses("new", new, [0, 1]) + losses("old", memory["old"], [0, 1]) + losses("older", memory["older"], [0])
    assert loss.item() == pytest.approx(torch.stack(every).mean().item(), rel=1e-5)
    assert len(objective.draw()) == 3, "at most the memory's size is drawn"
