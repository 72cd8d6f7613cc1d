"""Task-agnostic inference (`--task auto`): which task does an input belong to?

Inputs are embedded once by the frozen base encoder (no adapter routed, mean pooling, L2
norm), and compared with one centroid per (task, label) computed from that task's training
data: the nearest centroid's task wins. Per-label centroids rather than one per task, because
a task's classes can be far apart in feature space (TREC's "HUM" vs "NUM" questions).

Adding a task only adds its centroids; nothing earlier is retrained, so identification of
earlier tasks can only lose to a genuinely similar new task, never drift. Centroids live with
the registry, in `<artifacts>/taskid/<task>.safetensors`, tagged with the base weights' sha256;
the file is a cache of a pure function of the recorded training data, so a missing or stale
one (an imported task, an older registry) is recomputed from that data and written back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from continual_adapters.core.errors import DataError
from continual_adapters.files.atomic import atomic_write

if TYPE_CHECKING:
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.registry import Registry

FEATURE_CAP = 2000


@torch.no_grad()
def base_features(
    model: ContinualModel, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64, max_length: int = 128
) -> torch.Tensor:
    """Unit-length mean-pooled features of the frozen base encoder (no task routed)."""
    previous = model.router.task
    model.set_task(None)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk_pairs = pairs[start : start + batch_size] if pairs else None
            batch = model.tokenize(texts[start : start + batch_size], chunk_pairs, max_length).to(model.device)
            chunks.append(
                model.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), "mean")
                .float()
                .cpu()
            )
    finally:
        model.router.task = previous
        model.train(was_training)
    features = torch.cat(chunks) if chunks else torch.empty(0, model.hidden_size)
    return torch.nn.functional.normalize(features, dim=-1)


def centroids(features: torch.Tensor, labels: list[Any]) -> torch.Tensor:
    """One unit-length centroid per distinct label, in sorted label order."""
    names = sorted({str(v) for v in labels})
    keys = np.array([str(v) for v in labels])
    rows = [features[torch.from_numpy(keys == name)].mean(0) for name in names]
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@dataclass
class TaskIdentifier:
    """Nearest-centroid task classifier over every registered task's centroids."""

    tasks: dict[str, torch.Tensor]

    def predict(self, features: torch.Tensor) -> list[str]:
        if not self.tasks:
            raise DataError("no task has centroids yet: add a task first")
        owners = [name for name, c in self.tasks.items() for _ in range(len(c))]
        similarity = features @ torch.cat(list(self.tasks.values())).T
        return [owners[i] for i in similarity.argmax(-1).tolist()]


def centroid_path(registry: Registry, name: str) -> Path:
    return Path(registry.root) / "taskid" / f"{name}.safetensors"


def save_centroids(registry: Registry, name: str, value: torch.Tensor, base_sha256: str) -> Path:
    meta = {"cadapt_taskid": json.dumps({"task": name, "base_sha256": base_sha256}, sort_keys=True)}
    return atomic_write(centroid_path(registry, name), save({"centroids": value.contiguous()}, metadata=meta))


def _stored(registry: Registry, name: str, base_sha256: str) -> torch.Tensor | None:
    path = centroid_path(registry, name)
    if path.is_symlink() or not path.is_file():
        return None
    try:  # a cache: anything unreadable is recomputed, never trusted
        with safe_open(path, framework="pt") as stored:
            meta = json.loads(stored.metadata()["cadapt_taskid"])
            tensor = stored.get_tensor("centroids")
    except Exception:
        return None
    if meta.get("task") != name or meta.get("base_sha256") != base_sha256 or tensor.ndim != 2:
        return None
    return tensor.float()


def task_centroids(registry: Registry, model: ContinualModel, name: str) -> torch.Tensor:
    """The stored centroids of a ready task, recomputed if needed from its recorded training file
    (as recorded, sha256-checked: never a same-named file found elsewhere)."""
    from continual_adapters.data.taskdata import load_recorded_train

    stored = _stored(registry, name, model.base_sha256())
    if stored is not None and stored.shape[1] == model.hidden_size:
        return stored
    train = load_recorded_train(registry.task(name).data)
    value = compute_centroids(
        model, train.texts[:FEATURE_CAP], train.pairs[:FEATURE_CAP] if train.pairs else None, train.labels[:FEATURE_CAP]
    )
    save_centroids(registry, name, value, model.base_sha256())
    return value


def compute_centroids(
    model: ContinualModel, texts: list[str], pairs: list[str] | None, labels: list[Any]
) -> torch.Tensor:
    return centroids(base_features(model, texts, pairs), labels)


def identifier(registry: Registry, model: ContinualModel) -> TaskIdentifier:
    """Every ready task's centroids, in stream order."""
    return TaskIdentifier({t.name: task_centroids(registry, model, t.name) for t in registry.tasks()})
