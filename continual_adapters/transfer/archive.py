"""Moving one task between registries: `cadapt export` writes an archive, `cadapt import` registers one.

The archive's parts live beside this module: `transfer.manifest` defines and strictly checks
``manifest.json``; `transfer.tarball` writes the tar and reads one into memory without trusting
it. This module is the two commands on top of them. Export re-verifies the bundle against its
recorded sha256 before packing it. Import checks everything first (the tar, the manifest, the
bundle's tensors against its config, the base model against the target registry's, unless the
caller accepts a mismatch); only then is anything written, through the registry's begin_task ->
write_file -> finish_task protocol, so a failure anywhere leaves the target registry and its
artifact folder as they were.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from continual_adapters.core.config import ADAPTER_METHODS, TaskSpec, validate_task_name
from continual_adapters.core.errors import BundleError, ConfigError, IntegrityError, RegistryError, TaskExistsError
from continual_adapters.core.versions import split_key
from continual_adapters.files.atomic import atomic_write, sha256_file
from continual_adapters.files.bundle import bundle_metadata, parse_bundle, read_bundle_file
from continual_adapters.registry.records import BaseModelRecord
from continual_adapters.registry.registry import BundleDraft, EvaluationDraft, Registry
from continual_adapters.transfer.manifest import (
    BUNDLE,
    FORMAT,
    MANIFEST,
    build_manifest,
    check_manifest,
    manifest_bytes,
    registration_scores,
)
from continual_adapters.transfer.tarball import read_archive, tar_bytes

__all__ = ["BUNDLE", "MANIFEST", "ExportResult", "ImportResult", "export_task", "import_task"]


@dataclass(frozen=True)
class ExportResult:
    task: str
    path: str
    format: str
    sha256: str
    size_bytes: int
    bundle_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportResult:
    task: str
    position: int | None
    source_task: str
    archive_sha256: str
    bundle_sha256: str
    source_bundle_sha256: str
    base: str
    evaluations: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_task(registry: Registry, name: str, path: str | os.PathLike[str]) -> ExportResult:
    """Writes the archive atomically; the bundle is re-verified against its recorded sha256 first."""
    if Path(path).is_dir():
        raise ConfigError(f"{path} is a folder; give the archive's file name")
    task = registry.task(name)
    if task.status != "ready":
        raise RegistryError(f"task {name!r} is {task.status}; only ready tasks can be exported")
    if task.method not in ADAPTER_METHODS:
        raise ConfigError(
            f"task {name!r} is a {task.method!r} task: the archive format carries adapter bundles only "
            f"({', '.join(ADAPTER_METHODS)}); copy its registry to move it"
        )
    record = registry.verify_bundle(name)
    bundle = read_bundle_file(registry.bundle_path(name), record.sha256)
    text = manifest_bytes(build_manifest(registry, name, bundle))
    written = atomic_write(path, tar_bytes({MANIFEST: text, BUNDLE: bundle}))
    return ExportResult(name, str(written), FORMAT, sha256_file(written), written.stat().st_size, record.sha256)


def _restamp(
    config: dict[str, Any], tensors: dict[str, torch.Tensor], name: str, base: BaseModelRecord | None
) -> bytes:
    """A renamed task or an accepted foreign base needs a bundle whose header says so, else the
    runner (which checks both on every load) could never attach it."""
    config = copy.deepcopy(config)
    config["task"]["name"] = name
    if base is not None:
        config["base_model"], config["base_sha256"] = base.name, base.sha256
    return st_save(tensors, metadata=bundle_metadata(config))


def _bundle_files(registry: Registry, names: list[str]) -> dict[str, str]:
    return {n: sha256_file(registry.bundle_path(n)) for n in names}


def _check_target(
    registry: Registry,
    base_in: dict[str, Any],
    config: dict[str, Any],
    target: str,
    allow_base_mismatch: bool,
    source: str,
) -> tuple[BaseModelRecord | None, BaseModelRecord | None, list[str]]:
    """Read-only: (the registry's base or None, the base to re-stamp the bundle with or None, warnings)."""
    initialized = registry.initialized()
    base = registry.base_model() if initialized else None
    existing = registry.tasks(include_retired=True, include_pending=True) if initialized else []
    others = sorted({t.method for t in existing} - set(ADAPTER_METHODS))
    if others:
        raise ConfigError(
            f"this registry holds {', '.join(others)} tasks; an adapter task needs a registry of adapter tasks"
        )
    if target in {t.name for t in existing}:
        raise TaskExistsError(f"task {target!r} already exists in this registry; import it with --name NEW")
    if base is None:
        return None, None, []
    if (base.architecture, base.hidden_size, base.num_layers) != (
        config["architecture"],
        config["hidden_size"],
        config["num_layers"],
    ):
        raise BundleError(
            f"{source}: built for {config['architecture']} (hidden {config['hidden_size']}, "
            f"{config['num_layers']} layers), the registry's base is {base.architecture} "
            f"(hidden {base.hidden_size}, {base.num_layers} layers)"
        )
    if base.sha256 == base_in["sha256"]:
        return base, None, []
    if not allow_base_mismatch:
        raise IntegrityError(
            f"{source}: trained on base {base_in['name']} (sha256 {base_in['sha256']}), "
            f"this registry's base is {base.name} (sha256 {base.sha256}); "
            "pass --allow-base-mismatch to import anyway"
        )
    return (
        base,
        base,
        [
            f"base weights differ: trained on {base_in['name']} ({base_in['sha256'][:16]}), imported "
            f"onto {base.name} ({base.sha256[:16]}); predictions will differ from the recorded scores, "
            "so `cadapt audit` will report this task"
        ],
    )


def _bundle_draft(rel: str, sha: str, size: int, spec: TaskSpec, bundle: dict[str, Any]) -> BundleDraft:
    return BundleDraft(
        path=rel,
        sha256=sha,
        size_bytes=size,
        config={"task": spec.to_dict()},
        param_counts=bundle["param_counts"],
        hyperparameters=bundle["hyperparameters"],
        seed=bundle["seed"],
        library_versions=bundle["library_versions"],
        git_commit=bundle.get("git_commit"),
        wall_time_s=float(bundle["wall_time_s"]),
    )


def import_task(
    registry: Registry, path: str | os.PathLike[str], allow_base_mismatch: bool = False, name: str | None = None
) -> ImportResult:
    """Registers the archived task in `registry`; with ``allow_base_mismatch`` a foreign base is
    accepted, reported in ``warnings`` and recorded in the task's proof under ``imported``.

    The source's registration scores become the task's registration scores here (same bundle, same
    base, same split: the audit holds them to it). Its later history refers to another stream, so it
    is kept in the proof, not in R. An import trains nothing and touches no earlier bundle (their file
    hashes before and after are the proof), so, as with --skip-reeval, earlier tasks' row is "skipped".
    """
    source = str(path)
    archive = read_archive(path)
    config, tensors = parse_bundle(archive.bundle, f"{source}:{BUNDLE}")
    manifest = archive.manifest
    spec = check_manifest(manifest, config, tensors, source)
    task, bundle, base_in = manifest["task"], manifest["bundle"], manifest["base_model"]
    # An exported later version (key name@N) arrives as a task of its own name unless told otherwise.
    target = validate_task_name(name or split_key(spec.name)[0])
    base, foreign, warnings = _check_target(registry, base_in, config, target, allow_base_mismatch, source)
    data = archive.bundle if target == spec.name and foreign is None else _restamp(config, tensors, target, foreign)
    state = "recorded from the archive" if base is None else "mismatch allowed" if foreign else "matched"
    registered = registration_scores(manifest)
    registry.ensure()
    ready = registry.tasks()
    drafts = [
        EvaluationDraft(target, e["split"], e["metric"], float(e["value"]), e.get("predictions_sha256"))
        for e in registered
    ]
    drafts += [
        EvaluationDraft(t.name, t.data["eval_split"], t.primary_metric, 0.0, kind="skipped")
        for t in ready
        if t.data.get("eval_split")
    ]
    earlier = [t.name for t in ready]
    base_sha = base_in["sha256"] if base is None else base.sha256
    source_proof = task.get("proof") or {}
    registry.begin_task(
        target,
        labels=list(spec.labels),
        head=spec.head,
        method=task["method"],
        primary_metric=task["primary_metric"],
        data=task["data"],
    )
    try:
        before = {"base_sha256": base_sha, "bundle_files": _bundle_files(registry, earlier)}
        rel, sha, size = registry.write_file(target, data)
        after = {"base_sha256": base_sha, "bundle_files": _bundle_files(registry, earlier)}
        if before != after:
            raise IntegrityError(f"earlier bundles changed while importing {target!r}")
        proof = {
            "before": before,
            "after": after,
            "unchanged": True,
            "golden": source_proof.get("golden", {}),
            "imported": {
                "archive_sha256": archive.sha256,
                "source_task": spec.name,
                "source_bundle_sha256": bundle["sha256"],
                "source_base": base_in,
                "base": state,
                "source_evaluations": manifest["evaluations"],
                "source_proof": {k: v for k, v in source_proof.items() if k != "golden"},
                "provenance": manifest.get("provenance"),
            },
        }
        if base is None:
            revision = base_in.get("revision")
            registry.set_base_model(
                base_in["name"],
                base_sha,
                base_in["num_parameters"],
                base_in["architecture"],
                base_in["hidden_size"],
                base_in["num_layers"],
                revision if isinstance(revision, str) else None,
            )
        spec_here = TaskSpec.from_dict({**spec.to_dict(), "name": target})
        record = registry.finish_task(target, _bundle_draft(rel, sha, size, spec_here, bundle), drafts, proof)
    except BaseException:
        registry.abort_task(target)
        raise
    return ImportResult(
        target, record.position, spec.name, archive.sha256, sha, bundle["sha256"], state, len(registered), warnings
    )
