"""The sequential-task runner: add one task to a registry without touching any earlier one.

`Runner.add_task` is the whole protocol, one straight pipeline (its hand-offs are in job.py):

1. plan: validate the name, method and settings, and load every split (nothing is written if the
   data is bad);
2. encode the splits once; load the base encoder and every ready bundle (sha256-verified) and
   hash all of them; register the task as `pending`;
3. train its modules (every size, under `--adapter-size auto`) and evaluate them;
4. write the bundle file, its probe and its centroids (temp name, fsync, rename);
5. confirm the earlier tasks (confirm.py: replay their probes, or re-score them under `--reeval
   full`) and hash the base and every earlier bundle again, aborting on any difference (unless
   the method shares weights, which the proof then records); then confirm the tasks another
   process registered meanwhile (concurrent.py), so the new row of the matrix has them too;
6. register: commit the bundle, its probe and centroids, the new row of the accuracy matrix and
   the proof in one transaction.

Any failure after the pending row exists removes it and the file, leaving the registry as it was.
"""

from __future__ import annotations

from typing import Any

import torch

from continual_adapters.core.baselines import model_for_method
from continual_adapters.core.config import (
    DEFAULT_LR,
    DEFAULT_TOP_LAYERS,
    SHARED_METHODS,
    AdapterConfig,
    MethodOptions,
    TrainConfig,
    method_family,
    validate_task_name,
)
from continual_adapters.core.errors import ConfigError, IntegrityError
from continual_adapters.core.model import ContinualModel
from continual_adapters.data.taskdata import DataSpec, load_eval_split, load_task_data
from continual_adapters.files.bundle import bundle_bytes, load_stored_task
from continual_adapters.metrics.scoring import higher_is_better
from continual_adapters.registry import ArtifactDraft, BundleRecord, EvaluationDraft, Registry
from continual_adapters.stream.concurrent import confirm_late
from continual_adapters.stream.confirm import PROBE_KIND, EarlierTasks, skipped
from continual_adapters.stream.job import (
    REEVAL_POLICIES,
    AddTaskResult,
    Confirmation,
    EncodedSplits,
    PhaseClock,
    TaskJob,
    Trained,
)
from continual_adapters.stream.methods import MethodState
from continual_adapters.stream.taskid import CENTROIDS_KIND, split_statistics_bytes
from continual_adapters.training import distributed
from continual_adapters.training.loop import (
    Encoded,
    Evaluation,
    encode,
    evaluate,
    resolve_device,
    train_task,
)
from continual_adapters.training.probe import build_probe, probe_bytes


class Runner:
    """Holds one registry and, lazily, the model with every ready task attached."""

    def __init__(
        self,
        registry: Registry,
        encoder: str | None = None,
        device: str | None = None,
        progress: bool = True,
        method: str | None = None,
        top_layers: int = DEFAULT_TOP_LAYERS,
    ):
        self.registry = registry
        self.encoder = encoder
        self.world = distributed.world()
        self.device = distributed.device_for(self.world, resolve_device(device))
        if self.world.active:  # every process reads the registry; only the main one may create it
            distributed.main_first(self.world, self.device, registry.ensure)
        self.progress = progress
        self._method, self._top_layers = method, top_layers
        #: sha256 of each bundle `attach` read and checked since confirming began (see `snapshot`).
        self.read_since_start: dict[str, str] = {}
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
                self._top_layers = self.registry.bundle(first[0].name).config["task"]["top_k"]
        return self._method

    def load_model(self) -> ContinualModel:
        """The registry's base encoder with this runner's method, loaded once and checked against the
        base weights' sha256 the registry recorded."""
        if self._model is None:
            base = self.registry.base_model()
            model = model_for_method(self.method, self.encoder or (base.name if base else None), self._top_layers)
            if base is not None and base.sha256 != model.base_sha256():
                raise IntegrityError(
                    f"registry was built on base weights {base.sha256}, {model.base_name} has {model.base_sha256()}"
                )
            self._model = model.to(self.device).eval()
        return self._model

    @property
    def model(self) -> ContinualModel:
        return self.load_model()

    def attach(self, name: str, record: BundleRecord | None = None) -> None:
        """Loads a ready task's bundle into the model, its bytes checked against the recorded sha256
        as they are read. `record` is the task's bundle row when the caller fetched it already
        (`Registry.bundles`, one query for many tasks); otherwise it is read and checked here.

        When tasks share trained weights (the naive baseline), every ready task is loaded in
        stream order first, so the shared encoder is the latest one, as it would be deployed.
        """
        names = [t.name for t in self.registry.tasks()] if not self.model.isolates_tasks else []
        for other in names if name in names else [*names, name]:
            if other not in self.model.tasks:
                known = record if record is not None and other == name else self.registry.verify_bundle(other)
                load_stored_task(self.model, self.registry.store, known.path, expected_sha256=known.sha256)
                self.read_since_start[other] = known.sha256

    def snapshot(self, names: list[str], recorded: bool = False) -> dict[str, Any]:
        """Hashes of the base weights, every earlier bundle file and the tensors of those attached
        (all of them for a method that shares weights; none otherwise: their probes speak for them).

        `recorded=True` (before an addition) takes each bundle's recorded sha256 instead of hashing
        its file: confirming loads every earlier bundle checked against exactly that hash, so a file
        that differed is caught either way, for one read of each file fewer. Afterwards, a bundle
        read and hash-checked by `attach` while confirming (`read_since_start`, reset when
        confirming starts) is not read a third time: that check was on the file's bytes
        after the addition wrote everything it writes (docs/scale.md)."""
        model = self.model
        records = self.registry.bundles(names) if names else {}
        store = self.registry.store

        def file_sha256(name: str, record: BundleRecord) -> str:
            if recorded:
                return record.sha256
            if name in self.read_since_start:
                return self.read_since_start[name]
            return store.sha256(record.path)

        return {
            "base_sha256": model.base_sha256(refresh=True),
            "bundle_files": {n: file_sha256(n, r) for n, r in records.items()},
            "task_tensors": {} if model.isolates_tasks else {n: model.task_sha256(n) for n in names},
        }

    def evaluate_task(self, name: str, batch_size: int = 64) -> Evaluation:
        """Re-evaluates a registered task on the split recorded with it."""
        return self.rescore(name, batch_size)[0]

    def rescore(self, name: str, batch_size: int = 64) -> tuple[Evaluation, Encoded]:
        """A registered task's fresh evaluation on its recorded split, and that split encoded."""
        task = self.registry.task(name)
        self.attach(name)
        split, targets = load_eval_split(task.data, task.labels)
        spec = self.model.spec(name)
        max_length = self.registry.bundle(name).hyperparameters.get("max_length", 128)
        encoded = encode(self.model.tokenizer, split.texts, split.pairs, targets, max_length, spec.head)
        return evaluate(self.model, name, encoded, batch_size, progress=self.progress), encoded

    def earlier_tasks(self) -> EarlierTasks:
        return EarlierTasks(self.registry, self.model, self.attach, self.rescore)

    def add_task(
        self,
        name: str,
        data: DataSpec,
        adapter: AdapterConfig | None = None,
        train: TrainConfig | None = None,
        auto_size: bool = False,
        skip_reeval: bool = False,
        method: str | None = None,
        reeval: str = "probe",
        options: MethodOptions | None = None,
        new_version: bool = False,
    ) -> AddTaskResult | None:
        """Registers a new task (see the module docstring). Under a multi-process launch only the
        main process registers; the others train their share and return None. `reeval` is how the
        earlier tasks are confirmed (`REEVAL_POLICIES`); `skip_reeval` is the old spelling of "none";
        `options` are the settings of EWC, replay, LwF and LoRA (defaults where not given); `new_version`
        trains the next version of task `name`, keyed ``name@N``, beside the others (current once promoted)."""
        clock = PhaseClock()
        reeval = "none" if skip_reeval else reeval
        job = self.plan(name, data, adapter, train, auto_size, reeval, method, options, new_version)
        name = job.name
        encoded = self.encode(job)
        if not self.world.is_main:
            self.train(job, encoded)
            return None
        earlier = [t.name for t in self.registry.tasks()]
        if self.model.isolates_tasks:  # earlier tasks are attached a round at a time when confirmed
            for other in list(self.model.tasks):
                self.model.remove_task(other)
        else:  # one shared encoder: every earlier head rides on it
            for other in earlier:
                self.attach(other)
        before = self.snapshot(earlier, recorded=True)
        state = MethodState(self.model, self.registry, job, earlier) if job.method in SHARED_METHODS else None
        clock.lap("prepare")
        self.registry.begin_task(
            name,
            labels=job.loaded.labels,
            head=data.head,
            method=job.method,
            primary_metric=data.primary_metric,
            data=job.loaded.provenance(data),
        )
        try:
            trained = self.train(job, encoded, state)
            evaluation = evaluate(
                self.model, name, encoded.evaluation, job.train.eval_batch_size, progress=self.progress
            )
            probe = build_probe(self.model, name, encoded.evaluation)
            bundle = self.registry.write_file(name, bundle_bytes(self.model, name))
            artifacts = [
                self.registry.write_artifact(name, PROBE_KIND, probe_bytes(probe)),
                self.registry.write_artifact(
                    name, CENTROIDS_KIND, split_statistics_bytes(self.model, name, job.loaded.train)
                ),
            ]
            method_state = state.artifact(encoded) if state else None
            if method_state is not None:
                artifacts.append(self.registry.write_artifact(name, *method_state))
            clock.lap("train")
            confirmation = self.confirm(job, earlier, before)
            clock.lap("confirm")
            result = self.register(job, trained, evaluation, bundle, artifacts, confirmation)
            result.timings = clock.lap("register")
            return result
        except BaseException:
            if name in self.model.tasks:
                self.model.remove_task(name)
            self.registry.abort_task(name)
            raise

    def plan(
        self,
        name: str,
        data: DataSpec,
        adapter: AdapterConfig | None,
        train: TrainConfig | None,
        auto_size: bool,
        reeval: str,
        method: str | None,
        options: MethodOptions | None = None,
        new_version: bool = False,
    ) -> TaskJob:
        """Every check that needs no training, then the data: a refused task writes nothing.
        `new_version` plans the next version of task `name` (its key ``name@N``)."""
        validate_task_name(name)
        if reeval not in REEVAL_POLICIES:
            raise ConfigError(f"unknown re-evaluation policy {reeval!r}; choose one of {', '.join(REEVAL_POLICIES)}")
        method = method or self.method
        adapter = adapter or AdapterConfig(bottleneck=64 if method == "adapters" else 0)
        if method != "adapters" and (auto_size or adapter.bottleneck):
            raise ConfigError(f"method {method!r} trains no adapter: use --adapter-size 0")
        distributed.check_launch(self.world, method, (train or TrainConfig()).batch_size)
        self.registry.ensure()
        held = self.registry.tasks(include_retired=True)
        if held and method_family(method) != method_family(held[0].method):
            raise ConfigError(f"this registry holds {held[0].method!r} tasks; {method!r} needs a registry of its own")
        if method_family(method) != method_family(self.method):
            raise ConfigError(f"this runner's model runs {self.method!r}; {method!r} needs a runner of its own")
        return TaskJob(
            name=self.registry.key_for(name, new_version),
            data=data,
            loaded=load_task_data(data),
            method=method,
            adapter=adapter,
            train=train or TrainConfig(lr=DEFAULT_LR[method]),
            auto_size=auto_size,
            top_layers=self._top_layers if method == "top-k" else 0,
            reeval=reeval,
            options=options or MethodOptions(),
        )

    def encode(self, job: TaskJob) -> EncodedSplits:
        """Tokenises the splits once: training, model selection and the registration score reuse them."""
        return EncodedSplits.of(job, self.model.tokenizer)

    def train(self, job: TaskJob, encoded: EncodedSplits, state: MethodState | None = None) -> Trained:
        """Trains the task's modules (every size, under auto) and leaves the best one attached.
        `state` builds the objective of a method that shares the encoder (stream/methods.py)."""
        model, metric = self.model, job.data.primary_metric
        sign = 1.0 if higher_is_better(metric) else -1.0
        search: list[dict[str, Any]] = []
        best: tuple[Trained, dict[str, torch.Tensor]] | None = None
        for size in job.sizes:
            torch.manual_seed(job.train.seed)
            spec = model.add_task(job.spec(size)).spec  # as attached: a LoRA's targets resolved
            objective = state.objective(encoded) if state else None
            result = train_task(
                model, job.name, encoded.train, encoded.validation, job.train, metric, self.progress, objective
            )
            search.append(
                {
                    "bottleneck": size,
                    "best_epoch": result.best_epoch,
                    "wall_time_s": result.wall_time_s,
                    f"validation_{metric}": result.best_score,
                }
            )
            if best is None or sign * result.best_score > sign * best[0].result.best_score:
                weights = {k: v.clone() for k, v in model.task_modules(job.name).state_dict().items()}
                best = (Trained(spec, result, search), weights)
            model.remove_task(job.name)
        assert best is not None, "a job always has at least one size"
        trained, weights = best
        # The task cost the whole search, not just the winning size: the ledger's time says so.
        trained.result.wall_time_s = sum(entry["wall_time_s"] for entry in search)
        model.add_task(trained.spec).load_state_dict(weights)
        model.eval()
        return trained

    def confirm(self, job: TaskJob, earlier: list[str], before: dict[str, Any]) -> Confirmation:
        """Confirms every earlier task (confirm.py) and hashes everything again; a method that
        isolates tasks aborts here if anything it must not touch changed. A method that shares
        weights is always re-scored in full: its earlier outputs do change. Tasks that became
        ready while this one trained are confirmed last, the same way (concurrent.py)."""
        self.read_since_start.clear()
        shared = not self.model.isolates_tasks
        policy = "full" if shared and job.reeval != "none" else job.reeval
        if policy == "none":
            confirmed = skipped([self.registry.task(name) for name in earlier])
        else:
            confirmed = self.earlier_tasks().confirm(earlier, policy, keep_attached=shared)
        confirmation = Confirmation(
            before,
            self.snapshot(earlier),
            confirmed.drafts,
            confirmed.rescored,
            policy,
            confirmed.probes,
            confirmed.unavailable,
        )
        if not confirmation.unchanged and self.model.isolates_tasks:
            changed = [k for k in before if before[k] != confirmation.after[k]]
            raise IntegrityError(f"earlier tasks or the base changed while adding {job.name!r}: {changed}")
        return confirm_late(self, job, earlier, confirmation)

    def register(
        self,
        job: TaskJob,
        trained: Trained,
        evaluation: Evaluation,
        bundle: tuple[str, str, int],
        artifacts: list[ArtifactDraft],
        confirmation: Confirmation,
    ) -> AddTaskResult:
        """The task's bundle and artifact rows, scores and proof in one commit."""
        model, name = self.model, job.name
        counts = model.parameter_counts(name).to_dict()
        self.registry.set_base_model(
            model.base_name,
            model.base_sha256(),
            model.base_parameter_count,
            model.architecture,
            model.hidden_size,
            model.num_layers,
        )
        result, sha256 = trained.result, bundle[1]
        draft = trained.bundle_draft(job, bundle, counts, str(model.device))
        drafts = [
            EvaluationDraft(name, job.loaded.eval_split, m, v, evaluation.predictions_sha256)
            for m, v in evaluation.scores.items()
        ]
        proof = confirmation.proof(evaluation)
        record = self.registry.finish_task(name, draft, drafts + confirmation.drafts, proof, artifacts)
        return AddTaskResult(
            record,
            evaluation.scores,
            job.loaded.eval_split,
            counts,
            sha256,
            result.history,
            trained.search,
            confirmation.reevaluated,
            proof,
        )
