"""Task-agnostic inference (`--task auto`): which task does an input belong to?

Inputs are embedded once by the frozen base encoder (no adapter routed, mean pooling, L2
norm), and compared with one centroid per (task, label) computed from that task's training
data: the nearest centroid's task wins. Per-label centroids rather than one per task, because
a task's classes can be far apart in feature space (TREC's "HUM" vs "NUM" questions).

Adding a task only adds its centroids; nothing earlier is retrained, so identification of
earlier tasks can only lose to a genuinely similar new task, never drift. Centroids are a
registered artifact of their task (kind "centroids", committed with its bundle, sha256-checked
on every read, tagged with the base weights' sha256), so routing needs no dataset file; a task
without them (imported, or from an older registry) gets them once from its recorded data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from continual_adapters.core.errors import BundleError, DataError, IntegrityError
from continual_adapters.files.bundle import read_header

if TYPE_CHECKING:
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.registry import Registry

FEATURE_CAP = 2000
CENTROIDS_KIND = "centroids"
CENTROID_META = "cadapt_taskid"


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


def centroid_bytes(name: str, value: torch.Tensor, base_sha256: str) -> bytes:
    """A task's centroids as a safetensors file tagged with its task and base weights."""
    meta = {CENTROID_META: json.dumps({"task": name, "base_sha256": base_sha256}, sort_keys=True)}
    return save({"centroids": value.contiguous().float()}, metadata=meta)


def parse_centroids(data: bytes, name: str, base_sha256: str, hidden_size: int) -> torch.Tensor:
    """The centroids in a registered artifact (already sha256-checked by the registry), refused with
    IntegrityError when they belong to another task, another base or another width."""
    try:
        metadata, _ = read_header(data, f"centroids of task {name!r}")
        meta = json.loads(metadata[CENTROID_META])
        tensor = load(data)["centroids"]
    except (BundleError, KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise IntegrityError(f"the centroids of task {name!r} are not a centroid file ({exc})") from None
    if meta.get("task") != name or meta.get("base_sha256") != base_sha256:
        raise IntegrityError(f"the centroids stored for task {name!r} were computed for {meta}")
    if tensor.ndim != 2 or tensor.shape[1] != hidden_size:
        raise IntegrityError(f"the centroids of task {name!r} have shape {tuple(tensor.shape)}")
    return tensor.float()


def task_centroids(registry: Registry, model: ContinualModel, name: str) -> torch.Tensor:
    """A ready task's registered centroids. A task registered before centroids were an artifact (or
    imported without them) gets them computed once from its recorded training file (as recorded,
    sha256-checked: never a same-named file found elsewhere) and attached to it."""
    base = model.base_sha256()
    if registry.artifact(name, CENTROIDS_KIND) is not None:
        return parse_centroids(registry.read_artifact(name, CENTROIDS_KIND), name, base, model.hidden_size)
    from continual_adapters.data.taskdata import load_recorded_train

    train = load_recorded_train(registry.task(name).data)
    value = compute_centroids(
        model, train.texts[:FEATURE_CAP], train.pairs[:FEATURE_CAP] if train.pairs else None, train.labels[:FEATURE_CAP]
    )
    registry.add_artifact(name, registry.write_artifact(name, CENTROIDS_KIND, centroid_bytes(name, value, base)))
    return value


def compute_centroids(
    model: ContinualModel, texts: list[str], pairs: list[str] | None, labels: list[Any]
) -> torch.Tensor:
    return centroids(base_features(model, texts, pairs), labels)


def identifier(registry: Registry, model: ContinualModel) -> TaskIdentifier:
    """Every ready task's centroids, in stream order."""
    return TaskIdentifier({t.name: task_centroids(registry, model, t.name) for t in registry.tasks()})
