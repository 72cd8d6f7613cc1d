"""Task-agnostic inference (`--task auto`): which task does an input belong to?

Inputs are embedded once by the frozen base encoder (no adapter routed, mean pooling, L2
norm), and compared with one mean per (task, label) computed from that task's training data:
the nearest mean's task wins. Per-label means rather than one per task, because a task's
classes can be far apart in feature space (TREC's "HUM" vs "NUM" questions). "Nearest" is
measured under the within-label covariance pooled over all tasks (Mahalanobis, the default),
or by cosine ("centroid").

Adding a task only adds its statistics; nothing earlier is retrained, and no training row is
kept (means, counts and a scatter matrix are). They are a registered artifact of their task
(kind "centroids", committed with its bundle, sha256-checked on every read, tagged with the
base weights' sha256), so routing needs no dataset file; a task without them (imported, or
from an older registry) gets them once from its recorded data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from continual_adapters.core.errors import BundleError, ConfigError, DataError, IntegrityError
from continual_adapters.files.bundle import read_header

if TYPE_CHECKING:
    from continual_adapters.core.model import ContinualModel
    from continual_adapters.data.reader import Split
    from continual_adapters.registry import Registry

FEATURE_CAP = 2000
CENTROIDS_KIND = "centroids"
CENTROID_META = "cadapt_taskid"
ROUTERS = ("mahalanobis", "centroid")
DEFAULT_ROUTER = "mahalanobis"
#: Weight of the identity (scaled to the average variance) in the pooled covariance: chosen on
#: validation rows by bench/taskid_scale.py, never on test rows.
SHRINKAGE = 0.01


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
    return torch.nn.functional.normalize(label_statistics(features, labels).means, dim=-1)


@dataclass(frozen=True)
class TaskStatistics:
    """What routing keeps of a task's training features: the mean of each label's (unit) features,
    how many rows each mean has, and the scatter of the rows around their label's mean (summed, so
    that tasks pool into one within-label covariance without keeping any row)."""

    means: torch.Tensor  # [labels, hidden]
    counts: torch.Tensor  # [labels]
    scatter: torch.Tensor  # [hidden, hidden]


def label_statistics(features: torch.Tensor, labels: list[Any]) -> TaskStatistics:
    """Per-label means and counts, in sorted label order, and the within-label scatter (float64 sums)."""
    names = sorted({str(v) for v in labels})
    keys = np.array([str(v) for v in labels])
    rows = features.double()
    means, counts = [], []
    scatter = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64)
    for name in names:
        picked = rows[torch.from_numpy(keys == name)]
        mean = picked.mean(0)
        centred = picked - mean
        scatter += centred.T @ centred
        means.append(mean)
        counts.append(len(picked))
    return TaskStatistics(torch.stack(means).float(), torch.tensor(counts, dtype=torch.float32), scatter.float())


class TaskIdentifier:
    """Routes each input to the task of the nearest label mean over every registered task.

    "mahalanobis" (the default) measures distance under the within-label covariance pooled over all
    tasks, shrunk toward its average variance (`shrinkage`); "centroid" is cosine similarity to the
    unit means, the first version. Both are one linear score per label mean, so routing 200 tasks
    is one matrix product. bench/taskid_scale.py measured both as the task count grew
    (docs/scale.md): the pooled covariance is what keeps similar tasks apart.
    """

    def __init__(self, tasks: dict[str, TaskStatistics], router: str = DEFAULT_ROUTER, shrinkage: float = SHRINKAGE):
        if router not in ROUTERS:
            raise ConfigError(f"unknown router {router!r}; choose one of {', '.join(ROUTERS)}")
        if not 0 < shrinkage <= 1:
            raise ConfigError(f"shrinkage must be in (0, 1], got {shrinkage!r}")
        self.tasks, self.router = tasks, router
        self.owners = [name for name, stats in tasks.items() for _ in range(len(stats.means))]
        if not tasks:
            return
        means = torch.cat([stats.means for stats in tasks.values()]).double()
        if router == "centroid":
            self.weights = torch.nn.functional.normalize(means, dim=-1)
            self.bias = torch.zeros(len(means), dtype=torch.float64)
            return
        rows = sum(float(stats.counts.sum()) for stats in tasks.values())
        pooled = sum(stats.scatter.double() for stats in tasks.values()) / max(1.0, rows - len(means))
        assert isinstance(pooled, torch.Tensor)
        scale = float(pooled.diagonal().mean()) or 1.0
        shrunk = (1 - shrinkage) * pooled + shrinkage * scale * torch.eye(len(pooled), dtype=torch.float64)
        precision = torch.linalg.inv(shrunk)
        # argmin (x - m)' P (x - m) = argmax x' P m - m' P m / 2: the x' P x term is the same for all m
        self.weights = means @ precision
        self.bias = -0.5 * (self.weights * means).sum(-1)

    def predict(self, features: torch.Tensor) -> list[str]:
        if not self.tasks:
            raise DataError("no task has centroids yet: add a task first")
        scores = features.double() @ self.weights.T + self.bias
        return [self.owners[i] for i in scores.argmax(-1).tolist()]

    def identify(self, features: torch.Tensor) -> tuple[list[str], list[float]]:
        """`predict`'s tasks, each with a confidence in [0, 1]: the softmax of the label scores,
        summed over the chosen task's labels. Under "mahalanobis" the scores are -d²/2 up to a
        per-input constant, so this is the posterior of a Gaussian model with the pooled
        covariance and equal priors per label mean (linear discriminant analysis); under
        "centroid" it is a softmax over cosines, a ranking more than a probability. A server
        answers "no task" below a threshold of it (`cadapt serve --min-task-confidence`)."""
        if not self.tasks:
            raise DataError("no task has centroids yet: add a task first")
        scores = features.double() @ self.weights.T + self.bias
        order = list(self.tasks)
        owner = torch.tensor([order.index(name) for name in self.owners])
        per_task = torch.zeros(len(scores), len(order), dtype=scores.dtype).index_add_(1, owner, scores.softmax(-1))
        best = owner[scores.argmax(-1)]
        confidence = per_task.gather(1, best.unsqueeze(1)).squeeze(1)
        return [order[i] for i in best.tolist()], confidence.tolist()


def statistics_bytes(name: str, stats: TaskStatistics, base_sha256: str) -> bytes:
    """A task's routing statistics as a safetensors file tagged with its task and base weights."""
    meta = {CENTROID_META: json.dumps({"task": name, "base_sha256": base_sha256}, sort_keys=True)}
    tensors = {"means": stats.means, "counts": stats.counts, "scatter": stats.scatter}
    return save({k: v.contiguous().float() for k, v in tensors.items()}, metadata=meta)


def parse_statistics(data: bytes, name: str, base_sha256: str, hidden_size: int) -> TaskStatistics:
    """The statistics in a registered artifact (already sha256-checked by the registry), refused with
    IntegrityError when they belong to another task, another base or another width."""
    try:
        metadata, _ = read_header(data, f"centroids of task {name!r}")
        meta = json.loads(metadata[CENTROID_META])
        tensors = load(data)
        stats = TaskStatistics(tensors["means"], tensors["counts"], tensors["scatter"])
    except (BundleError, KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise IntegrityError(f"the centroids of task {name!r} are not a centroid file ({exc})") from None
    if meta.get("task") != name or meta.get("base_sha256") != base_sha256:
        raise IntegrityError(f"the centroids stored for task {name!r} were computed for {meta}")
    labels = stats.means.shape[0] if stats.means.ndim == 2 else -1
    if (
        stats.means.shape != (labels, hidden_size)
        or stats.counts.shape != (labels,)
        or stats.scatter.shape != (hidden_size, hidden_size)
    ):
        raise IntegrityError(f"the centroids of task {name!r} have shape {tuple(stats.means.shape)}")
    return stats


def compute_statistics(
    model: ContinualModel, texts: list[str], pairs: list[str] | None, labels: list[Any]
) -> TaskStatistics:
    """From at most `FEATURE_CAP` training rows, the first ones (as the recorded split orders them)."""
    rows = slice(0, FEATURE_CAP)
    return label_statistics(base_features(model, texts[rows], pairs[rows] if pairs else None), labels[rows])


def split_statistics_bytes(model: ContinualModel, name: str, split: Split) -> bytes:
    """The routing statistics a new task registers (its centroids artifact), from its training split."""
    stats = compute_statistics(model, split.texts, split.pairs, split.labels)
    return statistics_bytes(name, stats, model.base_sha256())


def identifier(registry: Registry, model: ContinualModel, router: str = DEFAULT_ROUTER) -> TaskIdentifier:
    """The statistics of every task's current version (one query for all), in stream order: other
    versions of a task would compete with it for its own inputs, and a bare name serves the current
    one. A task registered before they were an artifact (or imported without them) gets them
    computed once from its recorded training file (as recorded, sha256-checked: never a same-named
    file found elsewhere)."""
    from continual_adapters.data.taskdata import load_recorded_train

    base, names = model.base_sha256(), [t.name for t in registry.current_tasks()]
    stored = registry.read_artifacts(CENTROIDS_KIND, names)
    tasks = {}
    for name in names:
        if name in stored:
            tasks[name] = parse_statistics(stored[name], name, base, model.hidden_size)
            continue
        train = load_recorded_train(registry.task(name).data)
        stats = compute_statistics(model, train.texts, train.pairs, train.labels)
        registry.add_artifact(name, registry.write_artifact(name, CENTROIDS_KIND, statistics_bytes(name, stats, base)))
        tasks[name] = stats
    return TaskIdentifier(tasks, router)
