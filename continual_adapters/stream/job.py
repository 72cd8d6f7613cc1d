"""One `add-task`, as data: what is to be trained, and what each step of the runner hands the next.

`Runner.add_task` is a straight pipeline over these records: plan a `TaskJob` (every setting checked
and every split loaded before anything is written), encode its splits once (`EncodedSplits`),
train (`Trained`, including an adapter-size search), evaluate, write the bundle, confirm the
earlier tasks (`Confirmation`), register (`AddTaskResult`). Keeping the hand-offs typed and in
one file shows the whole path of a task's data at a glance.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continual_adapters.core.config import AdapterConfig, MethodOptions, TaskSpec, TrainConfig
from continual_adapters.data.reader import Split
from continual_adapters.data.taskdata import DataSpec, TaskData
from continual_adapters.registry import BundleDraft, EvaluationDraft, TaskRecord
from continual_adapters.training.loop import Encoded, Evaluation, TrainResult, encode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: The adapter sizes `--adapter-size auto` tries, keeping the best on validation.
AUTO_SIZES = (8, 64, 256)
#: Evaluation rows whose logits are stored as the task's golden outputs (checked by the audit).
GOLDEN_ROWS = 8
#: How an addition confirms the earlier tasks: replay their probes (outputs proved bit-identical,
#: the last full score carried forward), re-score them in full on their data, or not at all.
REEVAL_POLICIES = ("probe", "full", "none")


@dataclass(frozen=True)
class TaskJob:
    """A task to add, fully decided: its name, data (loaded and validated), method and settings."""

    name: str
    data: DataSpec
    loaded: TaskData
    method: str
    adapter: AdapterConfig
    train: TrainConfig
    auto_size: bool = False
    top_layers: int = 0
    reeval: str = "probe"
    options: MethodOptions = field(default_factory=MethodOptions)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The adapter bottlenecks to train: the search under auto, else the one asked for."""
        return AUTO_SIZES if self.auto_size else (self.adapter.bottleneck,)

    def spec(self, bottleneck: int) -> TaskSpec:
        return TaskSpec(
            self.name,
            labels=tuple(self.loaded.labels),
            head=self.data.head,
            method=self.method,
            top_k=self.top_layers,
            adapter=replace(self.adapter, bottleneck=bottleneck),
            lora=self.options.lora() if self.method == "lora" else None,
        )


@dataclass(frozen=True)
class EncodedSplits:
    """The task's splits tokenised once, for training, model selection and its registration score."""

    train: Encoded
    validation: Encoded
    evaluation: Encoded

    @classmethod
    def of(cls, job: TaskJob, tokenizer: PreTrainedTokenizerBase | None) -> EncodedSplits:
        """`job`'s splits, cut at its `max_length`, with its targets."""
        loaded = job.loaded

        def tokenised(split: Split, split_name: str) -> Encoded:
            targets = loaded.targets[split_name]
            return encode(tokenizer, split.texts, split.pairs, targets, job.train.max_length, job.data.head)

        return cls(
            tokenised(loaded.train, "train"),
            tokenised(loaded.validation, "validation"),
            tokenised(loaded.evaluation, loaded.eval_split),
        )


@dataclass
class Trained:
    """The winning modules' spec and training result, and every size the search tried."""

    spec: TaskSpec
    result: TrainResult
    search: list[dict[str, Any]]

    def bundle_draft(
        self, job: TaskJob, bundle: tuple[str, str, int], counts: dict[str, int], device: str
    ) -> BundleDraft:
        """The bundle row: its file, the task's spec, counts, and every setting that trained it
        (the method's own options included: EWC's lambda, the replay size, LwF's temperature)."""
        result = self.result
        hyper = {
            **job.train.to_dict(),
            "adapter": self.spec.adapter.__dict__,
            "method": job.method,
            "options": job.options.for_method(job.method),
            "best_epoch": result.best_epoch,
            "history": result.history,
            "size_search": self.search,
            "device": device,
            "steps": result.steps,
            "train_tokens": result.train_tokens,
        }
        path, sha256, size = bundle
        return BundleDraft(
            path=path,
            sha256=sha256,
            size_bytes=size,
            config={"task": self.spec.to_dict()},
            param_counts=counts,
            hyperparameters=hyper,
            seed=job.train.seed,
            library_versions=library_versions(),
            git_commit=git_commit(),
            wall_time_s=result.wall_time_s,
        )


@dataclass
class Confirmation:
    """What adding the task did to the earlier ones: hashes before and after, and their scores now."""

    before: dict[str, Any]
    after: dict[str, Any]
    drafts: list[EvaluationDraft]
    reevaluated: dict[str, float]
    policy: str = "probe"
    #: Per earlier task: the largest difference between its replayed and recorded probe logits.
    probes: dict[str, float] = field(default_factory=dict)
    #: Earlier tasks whose data could not be read for a full re-score (confirmed by probe instead).
    unavailable: dict[str, str] = field(default_factory=dict)
    #: Tasks that became ready while this one trained, confirmed after training (concurrent.py).
    late: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return self.before == self.after

    def proof(self, evaluation: Evaluation) -> dict[str, Any]:
        rows = min(GOLDEN_ROWS, len(evaluation.logits))
        return {
            "before": self.before,
            "after": self.after,
            "unchanged": self.unchanged,
            "golden": {"rows": list(range(rows)), "logits": evaluation.logits[:GOLDEN_ROWS].tolist()},
            "confirmation": self.policy,
            "probes": self.probes,
            "unavailable": self.unavailable,
            "confirmed_late": self.late,
        }


@dataclass
class AddTaskResult:
    task: TaskRecord
    scores: dict[str, float]
    eval_split: str
    param_counts: dict[str, int]
    bundle_sha256: str
    history: list[dict[str, Any]]
    size_search: list[dict[str, Any]]
    reevaluated: dict[str, float] = field(default_factory=dict)
    proof: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "version": self.task.version,
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
            "confirmation": self.proof.get("confirmation"),
            "probes": self.proof.get("probes", {}),
            "unchanged": self.proof.get("unchanged"),
            "timings_s": self.timings,
        }


class PhaseClock:
    """Wall time of an addition's phases (prepare, train, confirm, register), in seconds: what
    `--json` reports and bench/scale.py plots, so a slow addition says where its time went."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> dict[str, float]:
        now = time.perf_counter()
        self.phases[phase] = round(now - self.start, 4)
        self.start = now
        return dict(self.phases)


def library_versions() -> dict[str, str]:
    import safetensors
    import torch
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
