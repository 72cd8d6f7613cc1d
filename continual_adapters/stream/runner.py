"""The sequential-task runner: add one task to a registry without touching any earlier one.

`Runner.add_task` is the whole protocol, in order:

1. validate the name and load every split (nothing is written if the data is bad);
2. load the base encoder and every ready bundle (sha256-verified) and hash all of them;
3. register the task as `pending`, train its modules, evaluate them;
4. write the bundle file (temp name, fsync, rename) and re-evaluate every earlier task;
5. hash the base and every earlier bundle again: any difference aborts;
6. commit the bundle, the new row of the accuracy matrix and the proof in one transaction.

Any failure after step 3 removes the pending row and the file, leaving the registry as it was.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from continual_adapters.core.baselines import model_for_method
from continual_adapters.core.config import BASELINE_METHODS, AdapterConfig, TaskSpec, validate_task_name
from continual_adapters.core.errors import ConfigError, IntegrityError, TaskExistsError
from continual_adapters.core.model import ContinualModel
from continual_adapters.data.taskdata import DataSpec, load_eval_split, load_task_data
from continual_adapters.files.atomic import sha256_file
from continual_adapters.files.bundle import bundle_bytes, load_task
from continual_adapters.metrics.scoring import higher_is_better
from continual_adapters.registry.registry import BundleDraft, EvaluationDraft, Registry, TaskRecord
from continual_adapters.stream.taskid import FEATURE_CAP, compute_centroids, save_centroids
from continual_adapters.training import distributed
from continual_adapters.training.loop import TrainConfig, encode, evaluate, resolve_device, train_task

AUTO_SIZES = (8, 64, 256)
PROBE_SIZE = 8


@dataclass
class AddTaskResult:
    task: TaskRecord
    scores: dict[str, float]
    eval_split: str
    param_counts: dict
    bundle_sha256: str
    history: list[dict]
    size_search: list[dict]
    reevaluated: dict[str, float] = field(default_factory=dict)
    proof: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "task": self.task.name,
            "position": self.task.position,
            "status": self.task.status,
            "metric": self.task.primary_metric,
            "eval_split": self.eval_split,
            "scores": self.scores,
            "param_counts": self.param_counts,
            "bundle_sha256": self.bundle_sha256,
            "history": self.history,
            "size_search": self.size_search,
            "reevaluated": self.reevaluated,
            "unchanged": self.proof.get("unchanged"),
        }


def library_versions() -> dict:
    import safetensors
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class Runner:
    """Holds one registry and, lazily, the model with every ready task attached."""

    def __init__(
        self,
        registry: Registry,
        encoder: str | None = None,
        device: str | None = None,
        progress: bool = True,
        method: str | None = None,
        top_k: int = 2,
    ):
        self.registry = registry
        self.encoder = encoder
        self.world = distributed.world()
        self.device = distributed.device_for(self.world, resolve_device(device))
        self.progress = progress
        self._method, self._top_k = method, top_k
        self._model: ContinualModel | None = None

    @property
    def method(self) -> str:
        """The registry's method family: given, else that of its first task, else adapters.

        Adapters and ln-only share one model and may mix in a registry; each fine-tuning
        baseline needs its own model, hence its own registry.
        """
        if self._method is None:
            self.registry.ensure()
            first = self.registry.tasks(include_retired=True)
            self._method = first[0].method if first else "adapters"
            if first and self._method == "top-k":
                self._top_k = self.registry.bundle(first[0].name).config["task"]["top_k"]
        return self._method

    def load_model(self) -> ContinualModel:
        """The registry's base encoder with this runner's method, loaded once and checked against the
        base weights' sha256 the registry recorded."""
        if self._model is None:
            base = self.registry.base_model()
            model = model_for_method(self.method, self.encoder or (base.name if base else None), self._top_k)
            if base is not None and base.sha256 != model.base_sha256():
                raise IntegrityError(
                    f"registry was built on base weights {base.sha256}, {model.base_name} has {model.base_sha256()}"
                )
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def model(self) -> ContinualModel:
        return self.load_model()

    def attach(self, name: str) -> None:
        """Loads a ready task's bundle into the model after checking its recorded sha256.

        When tasks share trained weights (the naive baseline), every ready task is loaded in
        stream order first, so the shared encoder is the latest one, as it would be deployed.
        """
        names = [t.name for t in self.registry.tasks()] if not self.model.isolates_tasks else []
        for other in names if name in names else names + [name]:
            if other not in self.model.tasks:
                record = self.registry.verify_bundle(other)
                load_task(self.model, self.registry.bundle_path(other), expected_sha256=record.sha256)

    def snapshot(self, names: list[str]) -> dict:
        """Hashes of the base weights, every earlier bundle file and every attached task's tensors."""
        model = self.model
        return {
            "base_sha256": model.base_sha256(refresh=True),
            "bundle_files": {n: sha256_file(self.registry.bundle_path(n)) for n in names},
            "task_tensors": {n: model.task_sha256(n) for n in names},
        }

    def evaluate_task(self, name: str, batch_size: int = 64):
        """Re-evaluates a registered task on the split recorded with it."""
        task = self.registry.task(name)
        self.attach(name)
        split, targets = load_eval_split(task.data, task.labels)
        spec = self.model.spec(name)
        max_length = self.registry.bundle(name).hyperparameters.get("max_length", 128)
        encoded = encode(self.model.tokenizer, split.texts, split.pairs, targets, max_length, spec.head)
        return evaluate(self.model, name, encoded, batch_size, progress=self.progress)

    def add_task(
        self,
        name: str,
        data: DataSpec,
        adapter: AdapterConfig | None = None,
        train: TrainConfig | None = None,
        auto_size: bool = False,
        skip_reeval: bool = False,
        method: str | None = None,
    ) -> AddTaskResult | None:
        """Registers a new task (see the module docstring). Under a multi-process launch only the
        main process registers; the others train their share and return None."""
        validate_task_name(name)
        train = train or TrainConfig()
        self.registry.ensure()
        method = method or self.method
        if (method in BASELINE_METHODS or self.method in BASELINE_METHODS) and method != self.method:
            raise ConfigError(f"this registry holds {self.method!r} tasks; {method!r} needs a registry of its own")
        adapter = adapter or AdapterConfig(bottleneck=64 if method == "adapters" else 0)
        if method != "adapters" and (auto_size or adapter.bottleneck):
            raise ConfigError(f"method {method!r} trains no adapter: use --adapter-size 0")
        existing = {t.name: t for t in self.registry.tasks(include_retired=True, include_pending=True)}
        if name in existing:
            raise TaskExistsError(f"task {name!r} already exists ({existing[name].status})")
        loaded = load_task_data(data)
        model = self.model
        if not self.world.is_main:
            self._train(name, data, loaded, adapter, train, auto_size, method)
            return None
        earlier = [t.name for t in self.registry.tasks()]
        for other in earlier:
            self.attach(other)
        before = self.snapshot(earlier)
        self.registry.begin_task(
            name,
            labels=loaded.labels,
            head=data.head,
            method=method,
            primary_metric=data.primary_metric,
            data=loaded.provenance(data),
        )
        try:
            return self._train_and_register(
                name, data, loaded, adapter, train, auto_size, skip_reeval, method, earlier, before
            )
        except BaseException:
            if name in model.tasks:
                model.remove_task(name)
            self.registry.abort_task(name)
            raise

    def _train(self, name, data, loaded, adapter, train, auto_size, method):
        """Trains the task's modules (every size, under auto) and leaves the best one attached."""
        model = self.model

        def encoded(split_name, split):
            return encode(
                model.tokenizer, split.texts, split.pairs, loaded.targets[split_name], train.max_length, data.head
            )

        train_set, val_set = encoded("train", loaded.train), encoded("validation", loaded.validation)
        sizes = AUTO_SIZES if auto_size else (adapter.bottleneck,)
        top_k = self._top_k if method == "top-k" else 0
        search, best = [], None
        for size in sizes:
            spec = TaskSpec(
                name,
                labels=tuple(loaded.labels),
                head=data.head,
                method=method,
                top_k=top_k,
                adapter=replace(adapter, bottleneck=size),
            )
            torch.manual_seed(train.seed)
            model.add_task(spec)
            result = train_task(model, name, train_set, val_set, train, data.primary_metric, progress=self.progress)
            search.append(
                {
                    "bottleneck": size,
                    "best_epoch": result.best_epoch,
                    "wall_time_s": result.wall_time_s,
                    f"validation_{data.primary_metric}": result.best_score,
                }
            )
            sign = 1.0 if higher_is_better(data.primary_metric) else -1.0
            if best is None or sign * result.best_score > sign * best[1].best_score:
                best = (spec, result, {k: v.clone() for k, v in model.task_modules(name).state_dict().items()})
            model.remove_task(name)
        spec, result, state = best
        # The task cost the whole search, not just the winning size: the ledger's time says so.
        result.wall_time_s = sum(entry["wall_time_s"] for entry in search)
        model.add_task(spec).load_state_dict(state)
        model.eval()
        return spec, result, search

    def _train_and_register(
        self, name, data, loaded, adapter, train, auto_size, skip_reeval, method, earlier, before
    ) -> AddTaskResult:
        model = self.model

        def encoded(split_name, split):
            return encode(
                model.tokenizer, split.texts, split.pairs, loaded.targets[split_name], train.max_length, data.head
            )

        spec, result, search = self._train(name, data, loaded, adapter, train, auto_size, method)
        evaluation = evaluate(
            model, name, encoded(loaded.eval_split, loaded.evaluation), train.eval_batch_size, progress=self.progress
        )
        rel, sha, size = self.registry.write_file(name, bundle_bytes(model, name))
        drafts = [
            EvaluationDraft(name, loaded.eval_split, m, v, evaluation.predictions_sha256)
            for m, v in evaluation.scores.items()
        ]
        reevaluated = {}
        for other in earlier:
            if skip_reeval:
                task = self.registry.task(other)
                drafts.append(EvaluationDraft(other, task.data["eval_split"], task.primary_metric, 0.0, kind="skipped"))
                continue
            again = self.evaluate_task(other, train.eval_batch_size)
            task = self.registry.task(other)
            reevaluated[other] = again.scores[task.primary_metric]
            drafts.extend(
                EvaluationDraft(other, task.data["eval_split"], m, v, again.predictions_sha256, kind="reeval")
                for m, v in again.scores.items()
            )
        after = self.snapshot(earlier)
        if after != before and model.isolates_tasks:
            changed = [k for k in before if before[k] != after[k]]
            raise IntegrityError(f"earlier tasks or the base changed while adding {name!r}: {changed}")
        proof = {
            "before": before,
            "after": after,
            "unchanged": after == before,
            "golden": {
                "rows": list(range(min(PROBE_SIZE, len(evaluation.logits)))),
                "logits": evaluation.logits[:PROBE_SIZE].tolist(),
            },
        }
        hyper = {
            **train.to_dict(),
            "adapter": spec.adapter.__dict__,
            "method": method,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "size_search": search,
            "device": str(model.device),
            "steps": result.steps,
            "train_tokens": result.train_tokens,
        }
        train_rows = slice(0, FEATURE_CAP)
        save_centroids(
            self.registry,
            name,
            compute_centroids(
                model,
                loaded.train.texts[train_rows],
                loaded.train.pairs[train_rows] if loaded.train.pairs else None,
                loaded.train.labels[train_rows],
            ),
            model.base_sha256(),
        )
        counts = model.parameter_counts(name).to_dict()
        self.registry.set_base_model(
            model.base_name,
            model.base_sha256(),
            model.base_parameter_count,
            model.architecture,
            model.hidden_size,
            model.num_layers,
        )
        draft = BundleDraft(
            path=rel,
            sha256=sha,
            size_bytes=size,
            config={"task": spec.to_dict()},
            param_counts=counts,
            hyperparameters=hyper,
            seed=train.seed,
            library_versions=library_versions(),
            git_commit=git_commit(),
            wall_time_s=result.wall_time_s,
        )
        record = self.registry.finish_task(name, draft, drafts, proof)
        return AddTaskResult(
            record, evaluation.scores, loaded.eval_split, counts, sha, result.history, search, reevaluated, proof
        )
