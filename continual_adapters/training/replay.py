"""Experience replay: a fixed-size reservoir of earlier training examples, rehearsed with each new task.

The memory holds at most `capacity` examples of the whole stream, chosen by reservoir sampling
(Vitter's algorithm R: after n examples seen, each is kept with probability capacity / n), as in
Chaudhry et al. 2019 ("On tiny episodic memories in continual learning"). Every training step of
a new task draws as many memory examples as the batch holds and adds their loss, each through
its own task's head, to the new batch's: the step minimises the mean loss over both.

Earlier heads stay frozen (their bundles are registered and never rewritten): rehearsal keeps
the shared encoder useful to them. What the memory holds is raw text with its label and task, so
it is a storage and privacy cost of the method: the registry keeps it as an artifact and the
ledger counts it.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from continual_adapters.core.config import validate_task_key
from continual_adapters.core.errors import BundleError, ConfigError
from continual_adapters.training.loop import Encoded, Objective, encode, pad_batch, task_loss
from continual_adapters.training.multitask import mixed_batch_loss

if TYPE_CHECKING:
    from transformers import BatchEncoding

    from continual_adapters.core.model import ContinualModel

REPLAY_FORMAT = "cadapt-replay"


@dataclass(frozen=True)
class ReplayItem:
    task: str
    text: str
    label: str
    text_pair: str | None = None


@dataclass
class ReplayBuffer:
    """The reservoir: `seen` counts every example offered so far, `items` what is kept."""

    capacity: int
    seen: int = 0
    items: list[ReplayItem] = field(default_factory=list)

    def add(self, task: str, texts: list[str], pairs: list[str] | None, labels: list[str], seed: int) -> None:
        """Offers a task's training examples in order. The random stream is seeded by the run's
        seed and the task's name, so a stream resumed in a new process keeps the same memory."""
        rng = random.Random(f"{REPLAY_FORMAT}:{seed}:{task}")
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            item = ReplayItem(task, text, str(label), pairs[i] if pairs else None)
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                slot = rng.randrange(self.seen + 1)
                if slot < self.capacity:
                    self.items[slot] = item
            self.seen += 1

    def by_task(self) -> dict[str, list[ReplayItem]]:
        grouped: dict[str, list[ReplayItem]] = {}
        for item in self.items:
            grouped.setdefault(item.task, []).append(item)
        return grouped

    def to_bytes(self) -> bytes:
        content = {"format": REPLAY_FORMAT, "capacity": self.capacity, "seen": self.seen}
        content["items"] = [asdict(item) for item in self.items]
        return json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> ReplayBuffer:
        """A stored memory; `BundleError` naming `source` for anything malformed."""
        try:
            content = json.loads(data.decode("utf-8"))
            if content.pop("format") != REPLAY_FORMAT or set(content) != {"capacity", "seen", "items"}:
                raise ValueError("not a replay memory")
            items = [ReplayItem(**item) for item in content["items"]]
            buffer = cls(int(content["capacity"]), int(content["seen"]), items)
            for item in items:
                validate_task_key(item.task)
        except (ValueError, TypeError, KeyError, AttributeError, ConfigError) as exc:
            raise BundleError(f"{source}: not a replay memory ({exc})") from None
        if not 0 <= len(items) <= buffer.capacity or buffer.seen < len(items):
            raise BundleError(f"{source}: {len(items)} items, capacity {buffer.capacity}, seen {buffer.seen}")
        return buffer


def encode_memory(model: ContinualModel, buffer: ReplayBuffer, max_length: int) -> dict[str, Encoded]:
    """The memory tokenised per task, its labels as the ids of that task's head."""
    memory = {}
    for task, items in buffer.by_task().items():
        spec = model.spec(task)
        pairs = [item.text_pair or "" for item in items] if any(item.text_pair for item in items) else None
        if spec.head == "regression":
            targets: list[int] | list[float] = [float(item.label) for item in items]
        else:
            targets = [spec.labels.index(item.label) for item in items]
        memory[task] = encode(model.tokenizer, [i.text for i in items], pairs, targets, max_length, spec.head)
    return memory


class Rehearsal(Objective):
    """The mean loss over the new batch and as many examples drawn (seeded) from the memory."""

    def __init__(self, memory: dict[str, Encoded], batch_size: int, seed: int, pad_to: int | None = None):
        self.memory, self.batch_size, self.pad_to = memory, batch_size, pad_to
        self.index = [(task, row) for task, encoded in memory.items() for row in range(len(encoded))]
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> list[tuple[str, int]]:
        count = min(self.batch_size, len(self.index))
        return [self.index[i] for i in torch.randperm(len(self.index), generator=self.generator)[:count].tolist()]

    def loss(
        self, model: ContinualModel, task: str, rows: list[int], batch: BatchEncoding, targets: torch.Tensor
    ) -> torch.Tensor:
        new = task_loss(model, task, batch, targets)
        drawn = self.draw()
        if not drawn:
            return new
        assert model.tokenizer is not None, "a model that trains carries its tokenizer"
        groups = []
        for name in dict.fromkeys(t for t, _ in drawn):
            picked = [row for t, row in drawn if t == name]
            encoded = self.memory[name]
            groups.append((name, pad_batch(model.tokenizer, encoded, picked, self.pad_to), encoded.targets[picked]))
        replayed = mixed_batch_loss(model, groups, model.device)
        return (len(rows) * new + len(drawn) * replayed) / (len(rows) + len(drawn))
