"""The archive's ``manifest.json``: what an exported task carries, and the strict check of it on import.

A manifest holds only portable facts (the task, bundle, base-model and evaluation records,
provenance, and the sha256 and size of every other member), never the source registry's owners,
status, paths or signatures. Building it and checking it live together so the schema is written
down once: every field `check_manifest` type-checks is one `build_manifest` writes, and every
field the import stores has been checked here before anything is written.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from torch import nn

from continual_adapters.core.config import ADAPTER_METHODS, HEADS, TaskSpec, validate_task_key
from continual_adapters.core.errors import BundleError, CadaptError, IntegrityError, RegistryError
from continual_adapters.core.task_modules import TaskModules
from continual_adapters.files.atomic import is_sha256, sha256_bytes
from continual_adapters.files.bundle import check_tensors, parse_bundle
from continual_adapters.metrics.scoring import check_metric
from continual_adapters.registry.registry import Registry
from continual_adapters.registry.schema import EVAL_KINDS

FORMAT = "cadapt-task-archive"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"
BUNDLE = "bundle.safetensors"

# A JSON type check as `isinstance` takes it: one type or a tuple of them.
Kinds = type | tuple[type, ...]

# What travels: portable facts only, never this registry's owners, status, paths or signatures.
TASK_FIELDS = (
    "name",
    "position",
    "labels",
    "head",
    "method",
    "primary_metric",
    "data",
    "proof",
    "created_at",
    "updated_at",
)
BUNDLE_FIELDS = (
    "sha256",
    "size_bytes",
    "config",
    "param_counts",
    "hyperparameters",
    "seed",
    "library_versions",
    "git_commit",
    "wall_time_s",
    "created_at",
)
BASE_FIELDS = ("name", "revision", "sha256", "num_parameters", "architecture", "hidden_size", "num_layers")
EVALUATION_FIELDS = ("after_tasks", "split", "metric", "value", "predictions_sha256", "kind", "created_at")

# The fields check_manifest requires, with their JSON types, beyond those it checks one by one.
BUNDLE_KINDS: tuple[tuple[str, Kinds], ...] = (
    ("param_counts", dict),
    ("hyperparameters", dict),
    ("library_versions", dict),
    ("seed", int),
    ("wall_time_s", (int, float)),
)
BASE_KINDS: tuple[tuple[str, Kinds], ...] = (
    ("name", str),
    ("num_parameters", int),
    ("architecture", str),
    ("hidden_size", int),
    ("num_layers", int),
)
EVALUATION_KINDS: tuple[tuple[str, Kinds], ...] = (
    ("after_tasks", int),
    ("split", str),
    ("metric", str),
    ("value", (int, float)),
    ("kind", str),
)


def _fields(record: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(record, n) for n in names}


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")


def build_manifest(registry: Registry, name: str, bundle: bytes) -> dict[str, Any]:
    task = registry.task(name)
    record = registry.bundle(name)
    base = registry.base_model()
    if base is None:
        raise RegistryError(f"{registry!r} records no base model; cannot export {name!r}")
    config, _ = parse_bundle(bundle, str(registry.bundle_path(name)))
    if config.get("base_sha256") != base.sha256:
        raise IntegrityError(
            f"bundle of task {name!r} was trained on base {config.get('base_sha256')}, "
            f"the registry's base is {base.sha256}"
        )
    stream = [t.name for t in registry.tasks(include_retired=True) if t.position is not None]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": _fields(task, TASK_FIELDS),
        "bundle": _fields(record, BUNDLE_FIELDS),
        "base_model": _fields(base, BASE_FIELDS),
        "evaluations": [_fields(e, EVALUATION_FIELDS) for e in registry.evaluations(name)],
        "provenance": {
            "exported_at": datetime.now(timezone.utc).isoformat(),
            "source_registry": repr(registry),
            "source_stream": stream,
            "source_position": task.position,
        },
        "files": {BUNDLE: {"sha256": sha256_bytes(bundle), "size_bytes": len(bundle)}},
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Sorted keys and no NaN, so the same task exports the same manifest text; timestamps as ISO 8601."""
    return json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False, default=_iso).encode()


def _need(obj: object, key: str, kinds: Kinds, where: str) -> Any:
    """No stored field is a bool, and JSON's true would pass for the integer 1, so bools are refused."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise BundleError(f"{where}.{key} is missing or malformed ({value!r})")
    return value


def _sha(value: Any, where: str) -> str:
    if not is_sha256(value):
        raise BundleError(f"{where} is not a sha256 ({value!r})")
    return value


def registration_scores(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    position = manifest["task"].get("position")
    return [e for e in manifest["evaluations"] if e["kind"] == "registration" and e["after_tasks"] == position]


def check_manifest(manifest: dict[str, Any], config: dict[str, Any], tensors: dict[str, Any], source: str) -> TaskSpec:
    """Every field the import will store is type-checked here, before anything is written."""
    where = f"{source}: {MANIFEST}"
    if (_need(manifest, "format", str, where), _need(manifest, "format_version", str, where)) != (
        FORMAT,
        FORMAT_VERSION,
    ):
        raise BundleError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} archive")
    task = _need(manifest, "task", dict, where)
    bundle = _need(manifest, "bundle", dict, where)
    base = _need(manifest, "base_model", dict, where)
    try:
        spec = TaskSpec.from_dict(config["task"])
        validate_task_key(_need(task, "name", str, f"{where}.task"))
        check_metric(_need(task, "head", str, f"{where}.task"), _need(task, "primary_metric", str, f"{where}.task"))
    except (CadaptError, KeyError, TypeError) as exc:
        raise BundleError(f"{where}: task is malformed ({exc})") from None
    if (task["name"], task.get("labels"), task["head"]) != (spec.name, list(spec.labels), spec.head):
        raise BundleError(
            f"{where}: task {task['name']!r} (labels {task.get('labels')}, head {task['head']}) does "
            f"not match the bundle's task {spec.name!r} (labels {list(spec.labels)}, head {spec.head})"
        )
    if task["head"] not in HEADS or _need(task, "method", str, f"{where}.task") != spec.method:
        raise BundleError(f"{where}: task head or method does not match the bundle's")
    if spec.method not in ADAPTER_METHODS:
        raise BundleError(
            f"{where}: task {spec.name!r} is a {spec.method!r} baseline; only "
            f"{', '.join(ADAPTER_METHODS)} tasks can be imported"
        )
    _need(task, "position", int, f"{where}.task")
    data = _need(task, "data", dict, f"{where}.task")
    _need(data, "eval_split", str, f"{where}.task.data")
    proof = task.get("proof") or {}
    golden = proof.get("golden", {}) if isinstance(proof, dict) else None
    if not isinstance(golden, dict) or not all(
        isinstance(row, list) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in row)
        for row in golden.get("logits", [])
    ):
        raise BundleError(f"{where}: task.proof.golden is malformed")
    _sha(bundle.get("sha256"), f"{where}.bundle.sha256")
    listed = manifest["files"][BUNDLE]
    if (bundle["sha256"], bundle.get("size_bytes")) != (listed["sha256"], listed["size_bytes"]):
        raise IntegrityError(f"{where}: bundle and files[{BUNDLE}] disagree on sha256 or size")
    for key, kinds in BUNDLE_KINDS:
        _need(bundle, key, kinds, f"{where}.bundle")
    if bundle.get("git_commit") is not None:
        _need(bundle, "git_commit", str, f"{where}.bundle")
    if bundle["param_counts"] != config.get("param_counts"):
        raise BundleError(f"{where}: bundle.param_counts differ from those in the bundle's own config")
    _sha(base.get("sha256"), f"{where}.base_model.sha256")
    for key, kinds in BASE_KINDS:
        _need(base, key, kinds, f"{where}.base_model")
    shape = (base["architecture"], base["hidden_size"], base["num_layers"], base["sha256"])
    if shape != (
        config.get("architecture"),
        config.get("hidden_size"),
        config.get("num_layers"),
        config.get("base_sha256"),
    ):
        raise BundleError(f"{where}: base_model does not match the base recorded in the bundle")
    evaluations = _need(manifest, "evaluations", list, where)
    for i, e in enumerate(evaluations):
        at = f"{where}.evaluations[{i}]"
        for key, kinds in EVALUATION_KINDS:
            _need(e, key, kinds, at)
        if e["kind"] not in EVAL_KINDS or max(len(e["split"]), len(e["metric"])) > 64:
            raise BundleError(f"{at}: kind, split or metric is malformed")
        if e.get("predictions_sha256") is not None:
            _sha(e["predictions_sha256"], f"{at}.predictions_sha256")
    own = registration_scores(manifest)
    if not any(e["metric"] == task["primary_metric"] for e in own):
        raise BundleError(f"{where}: no registration score for {task['primary_metric']} at the task's position")
    if len({(e["split"], e["metric"]) for e in own}) != len(own):
        raise BundleError(f"{where}: the same registration score appears twice")
    hidden, layers = config["hidden_size"], config["num_layers"]
    expected = TaskModules(spec, hidden, [nn.LayerNorm(hidden) for _ in range(2 * layers)]).state_dict()
    check_tensors(expected, tensors, f"{source}:{BUNDLE}")
    return spec
