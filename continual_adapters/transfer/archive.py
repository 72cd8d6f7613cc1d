"""Moving one task between registries: a self-contained archive out, a fully checked import in.

An archive is an uncompressed tar of exactly two members: ``manifest.json`` (the task, bundle,
base-model and evaluation records, provenance, and the sha256 and size of every other member)
and ``bundle.safetensors`` (the task's bundle, byte for byte as the source registry stored it).
Tar because every system can list and unpack it; uncompressed because the float32 tensors do
not compress and a plain layout keeps the checks simple.

Import trusts nothing in the file. It is read into memory once and never extracted, so no
member name can reach the file system; each member must be a flat regular file named in the
manifest (no absolute paths, no ``..``, no links or devices, no duplicates, bounded sizes).
The bundle must match the manifest's sha256 and size, parse as a cadapt bundle whose tensors
fit its config, and agree with the manifest on task, base model and parameter counts; the base
model must be the target registry's, unless the caller accepts a mismatch. Only then is
anything written, through the registry's begin_task -> write_file -> finish_task protocol, so
a failure anywhere leaves the target registry and its artifact folder as they were.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import stat
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from safetensors.torch import save as st_save
from torch import nn

from continual_adapters.core.config import ADAPTER_METHODS, HEADS, TaskSpec, validate_task_name
from continual_adapters.core.errors import (
    BundleError,
    CadaptError,
    ConfigError,
    IntegrityError,
    RegistryError,
    TaskExistsError,
)
from continual_adapters.core.model import TaskModules
from continual_adapters.data import strictjson
from continual_adapters.files.atomic import atomic_write, is_sha256, sha256_bytes, sha256_file
from continual_adapters.files.bundle import (
    MAX_BUNDLE_BYTES,
    bundle_metadata,
    check_tensors,
    parse_bundle,
    read_bundle_file,
)
from continual_adapters.metrics.scoring import check_metric
from continual_adapters.registry.registry import BundleDraft, EvaluationDraft, Registry
from continual_adapters.registry.schema import EVAL_KINDS

FORMAT = "cadapt-task-archive"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"
BUNDLE = "bundle.safetensors"
MAX_MANIFEST_BYTES = 4 << 20
MAX_MEMBERS = 8
MAX_ARCHIVE_BYTES = MAX_BUNDLE_BYTES + MAX_MANIFEST_BYTES + (1 << 20)
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ExportResult:
    task: str
    path: str
    format: str
    sha256: str
    size_bytes: int
    bundle_sha256: str

    def to_dict(self) -> dict:
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Archive:
    manifest: dict
    bundle: bytes
    sha256: str


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


def _fields(record, names: tuple[str, ...]) -> dict:
    return {n: getattr(record, n) for n in names}


def _iso(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")


def build_manifest(registry: Registry, name: str, bundle: bytes) -> dict:
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


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    """Fixed owner, mode and time, so an archive says nothing about the exporting machine's users."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member_name, data in members.items():
            info = tarfile.TarInfo(member_name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def export_task(registry: Registry, name: str, path: str | os.PathLike) -> ExportResult:
    """Writes the archive atomically; the bundle is re-verified against its recorded sha256 first."""
    if Path(path).is_dir():
        raise ConfigError(f"{path} is a folder; give the archive's file name")
    task = registry.task(name)
    if task.status != "ready":
        raise RegistryError(f"task {name!r} is {task.status}; only ready tasks can be exported")
    if task.method not in ADAPTER_METHODS:
        raise ConfigError(
            f"task {name!r} is a {task.method!r} baseline: its state is encoder weights tied to its own "
            f"registry; only {', '.join(ADAPTER_METHODS)} tasks can be exported"
        )
    record = registry.verify_bundle(name)
    bundle = read_bundle_file(registry.bundle_path(name), record.sha256)
    manifest = build_manifest(registry, name, bundle)
    text = json.dumps(manifest, sort_keys=True, indent=1, allow_nan=False, default=_iso).encode()
    written = atomic_write(path, _tar_bytes({MANIFEST: text, BUNDLE: bundle}))
    return ExportResult(name, str(written), FORMAT, sha256_file(written), written.stat().st_size, record.sha256)


# -- reading an archive without trusting it ---------------------------------------------------


def _check_member(member: tarfile.TarInfo, source: str) -> None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"{source}: member {name!r} has an absolute path")
    if ".." in parts:
        raise BundleError(f"{source}: member {name!r} leaves the archive (path traversal)")
    kinds = [
        (member.issym(), "a symbolic link"),
        (member.islnk(), "a hard link"),
        (member.ischr() or member.isblk(), "a device file"),
        (member.isfifo(), "a FIFO"),
        (member.isdir(), "a directory"),
    ]
    for is_kind, what in kinds:
        if is_kind:
            raise BundleError(f"{source}: member {name!r} is {what}; only regular files are accepted")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BundleError(f"{source}: member {name!r} has unsupported tar type {member.type!r}")
    if not _MEMBER_NAME.match(name):
        raise BundleError(f"{source}: member name {name!r} is not a plain file name")
    limit = MAX_MANIFEST_BYTES if name == MANIFEST else MAX_BUNDLE_BYTES
    if member.size > limit:
        raise BundleError(f"{source}: member {name!r} is {member.size} bytes, more than the {limit} allowed")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, source: str) -> bytes:
    try:
        handle = tar.extractfile(member)
        data = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{source}: member {member.name!r} is truncated or damaged ({exc})") from None
    if len(data) != member.size:
        raise BundleError(f"{source}: member {member.name!r} is truncated ({len(data)} of {member.size} bytes)")
    return data


def _members(tar: tarfile.TarFile, source: str) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise BundleError(f"{source}: damaged or truncated tar archive ({exc})") from None
        if member is None:
            return members
        _check_member(member, source)
        if member.name in members:
            raise BundleError(f"{source}: member {member.name!r} appears twice")
        if len(members) == MAX_MEMBERS:
            raise BundleError(f"{source}: more than {MAX_MEMBERS} members; not a cadapt archive")
        members[member.name] = member


def _strict_json(data: bytes, source: str):
    try:
        return strictjson.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{source}: {MANIFEST} is not valid JSON ({exc})") from None


def read_archive(path: str | os.PathLike) -> Archive:
    """Everything from one in-memory read, so what is checked is exactly what gets imported."""
    source = str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"{source}: no such archive") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{source}: not a regular file; refusing to read it as an archive")
    if st.st_size > MAX_ARCHIVE_BYTES:
        raise BundleError(f"{source}: {st.st_size} bytes is larger than any archive ({MAX_ARCHIVE_BYTES})")
    data = Path(path).read_bytes()
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as exc:
        raise BundleError(f"{source}: not an uncompressed tar archive ({exc})") from None
    with tar:
        members = _members(tar, source)
        if MANIFEST not in members:
            raise BundleError(f"{source}: no {MANIFEST}; not a cadapt archive")
        manifest = _strict_json(_read_member(tar, members[MANIFEST], source), source)
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or set(files) != {BUNDLE}:
            raise BundleError(f"{source}: {MANIFEST} must list exactly one file, {BUNDLE}")
        for member_name in members:
            if member_name not in files and member_name != MANIFEST:
                raise BundleError(f"{source}: member {member_name!r} is not listed in {MANIFEST}")
        if BUNDLE not in members:
            raise BundleError(f"{source}: {BUNDLE} is listed in {MANIFEST} but missing")
        bundle = _read_member(tar, members[BUNDLE], source)
    entry = files[BUNDLE]
    if (
        not isinstance(entry, dict)
        or entry.get("size_bytes") != len(bundle)
        or entry.get("sha256") != sha256_bytes(bundle)
    ):
        said = f"{entry.get('size_bytes')} bytes, sha256 {entry.get('sha256')}" if isinstance(entry, dict) else entry
        raise IntegrityError(
            f"{source}: {BUNDLE} is {len(bundle)} bytes with sha256 {sha256_bytes(bundle)}, {MANIFEST} says {said}"
        )
    return Archive(manifest, bundle, sha256_bytes(data))


# -- checking the manifest against itself and the bundle ----------------------------------------


def _need(obj: dict, key: str, kinds, where: str):
    """No stored field is a bool, and JSON's true would pass for the integer 1, so bools are refused."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise BundleError(f"{where}.{key} is missing or malformed ({value!r})")
    return value


def _sha(value, where: str) -> str:
    if not is_sha256(value):
        raise BundleError(f"{where} is not a sha256 ({value!r})")
    return value


def registration_scores(manifest: dict) -> list[dict]:
    position = manifest["task"].get("position")
    return [e for e in manifest["evaluations"] if e["kind"] == "registration" and e["after_tasks"] == position]


def check_manifest(manifest: dict, config: dict, tensors: dict, source: str) -> TaskSpec:
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
        validate_task_name(_need(task, "name", str, f"{where}.task"))
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
    for key, kinds in (
        ("param_counts", dict),
        ("hyperparameters", dict),
        ("library_versions", dict),
        ("seed", int),
        ("wall_time_s", (int, float)),
    ):
        _need(bundle, key, kinds, f"{where}.bundle")
    if bundle.get("git_commit") is not None:
        _need(bundle, "git_commit", str, f"{where}.bundle")
    if bundle["param_counts"] != config.get("param_counts"):
        raise BundleError(f"{where}: bundle.param_counts differ from those in the bundle's own config")
    _sha(base.get("sha256"), f"{where}.base_model.sha256")
    for key, kinds in (
        ("name", str),
        ("num_parameters", int),
        ("architecture", str),
        ("hidden_size", int),
        ("num_layers", int),
    ):
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
        for key, kinds in (
            ("after_tasks", int),
            ("split", str),
            ("metric", str),
            ("value", (int, float)),
            ("kind", str),
        ):
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


# -- importing --------------------------------------------------------------------------------


def _restamp(config: dict, tensors: dict, name: str, base) -> bytes:
    """A renamed task or an accepted foreign base needs a bundle whose header says so, else the
    runner (which checks both on every load) could never attach it."""
    config = copy.deepcopy(config)
    config["task"]["name"] = name
    if base is not None:
        config["base_model"], config["base_sha256"] = base.name, base.sha256
    return st_save(tensors, metadata=bundle_metadata(config))


def _bundle_files(registry: Registry, names: list[str]) -> dict[str, str]:
    return {n: sha256_file(registry.bundle_path(n)) for n in names}


def _check_target(registry: Registry, base_in: dict, config: dict, target: str, allow_base_mismatch: bool, source: str):
    """Read-only: (the registry's base or None, the base to re-stamp the bundle with or None, warnings)."""
    initialized = registry.initialized()
    base = registry.base_model() if initialized else None
    existing = registry.tasks(include_retired=True, include_pending=True) if initialized else []
    baselines = sorted({t.method for t in existing} - set(ADAPTER_METHODS))
    if baselines:
        raise ConfigError(
            f"this registry holds {', '.join(baselines)} baseline tasks; an adapter task needs a "
            "registry of adapter tasks"
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


def _bundle_draft(rel: str, sha: str, size: int, spec: TaskSpec, bundle: dict) -> BundleDraft:
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
    registry: Registry, path: str | os.PathLike, allow_base_mismatch: bool = False, name: str | None = None
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
    target = validate_task_name(name or spec.name)
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
