"""Task bundles: one safetensors file per task, its config in the header.

A bundle holds a task's tensors (adapters, LayerNorm copies, head) and, in the safetensors
header metadata, the JSON config needed to rebuild those modules: the task spec, the
architecture, the base model and the sha256 of its weights, and the parameter counts. One
file means one sha256 covers weights and config together, so the registry can vouch for both.

Loading never trusts the file: size and header length are checked before parsing, the sha256
against the expected one, and every key, shape and dtype against what the config implies,
and every value must be finite. No pickle is ever read or written.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import TaskSpec
from .errors import BundleError, ConfigError, IntegrityError, TaskExistsError

FORMAT = "cadapt-bundle"
FORMAT_VERSION = "1"
MAX_BUNDLE_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_config(model, name: str) -> dict:
    return {
        "task": model.spec(name).to_dict(),
        "architecture": model.architecture,
        "base_model": model.base_name,
        "base_sha256": model.base_sha256(),
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "param_counts": model.parameter_counts(name).to_dict(),
    }


def bundle_bytes(model, name: str) -> bytes:
    """Serialises a task to safetensors bytes (fp32 on CPU, so the hash does not depend on device)."""
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous()
               for key, value in model.task_modules(name).state_dict().items()}
    return st_save(tensors, metadata=bundle_metadata(bundle_config(model, name)))


def bundle_metadata(config: dict) -> dict[str, str]:
    """A single metadata key: safetensors writes several keys in random order, breaking hashes."""
    return {"cadapt": json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "config": config},
                                 sort_keys=True)}


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Temp file in the same folder, fsync, rename, fsync the folder: all or nothing on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_bundle(model, name: str, path: str | Path) -> Path:
    return atomic_write(path, bundle_bytes(model, name))


def read_bundle_file(path: str | Path, expected_sha256: str | None = None) -> bytes:
    """Reads a bundle's bytes after the cheap checks, so hostile files fail before parsing."""
    path = Path(path)
    if path.is_symlink():
        raise BundleError(f"{path}: refusing a symbolic link as a bundle")
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path}: {size} bytes is larger than any bundle ({MAX_BUNDLE_BYTES})")
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise IntegrityError(f"{path}: sha256 {sha256_bytes(data)} does not match the recorded {expected_sha256}")
    return data


def parse_bundle(data: bytes, source: str = "bundle") -> tuple[dict, dict[str, torch.Tensor]]:
    """Returns (config, tensors) after validating the container and its metadata."""
    if len(data) < 8:
        raise BundleError(f"{source}: truncated ({len(data)} bytes), not a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or header_len > len(data) - 8:
        raise BundleError(f"{source}: header length {header_len} is impossible for a {len(data)}-byte file")
    try:
        header = json.loads(data[8:8 + header_len], object_pairs_hook=_no_duplicate_keys)
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{source}: not a valid safetensors file ({exc})") from None
    try:
        metadata = json.loads((header.get("__metadata__") or {}).get("cadapt", "{}"))
    except ValueError:
        metadata = {}
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT \
            or metadata.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{source}: not a {FORMAT} v{FORMAT_VERSION} bundle")
    try:
        config = metadata["config"]
        TaskSpec.from_dict(config["task"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise BundleError(f"{source}: bundle config is malformed ({exc})") from None
    return config, tensors


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys in header")
    return dict(pairs)


def check_tensors(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise BundleError(f"{source}: tensor keys do not match its config (missing {missing[:5]}, unexpected {extra[:5]})")
    for key, value in tensors.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != torch.float32:
            raise BundleError(f"{source}: tensor {key} is {value.dtype}{tuple(value.shape)}, "
                              f"config implies torch.float32{tuple(want.shape)}")
        if not torch.isfinite(value).all():
            raise BundleError(f"{source}: tensor {key} holds NaN or Inf")


def load_bundle(model, path: str | Path, expected_sha256: str | None = None,
                allow_base_mismatch: bool = False) -> TaskSpec:
    """Attaches the task stored at `path` to `model`, or raises without changing the model."""
    source = str(path)
    config, tensors = parse_bundle(read_bundle_file(path, expected_sha256), source)
    spec = TaskSpec.from_dict(config["task"])
    if config.get("architecture") != model.architecture or config.get("hidden_size") != model.hidden_size \
            or config.get("num_layers") != model.num_layers:
        raise BundleError(f"{source}: built for {config.get('architecture')} "
                          f"(hidden {config.get('hidden_size')}, {config.get('num_layers')} layers), "
                          f"this model is {model.architecture} (hidden {model.hidden_size}, {model.num_layers} layers)")
    if not allow_base_mismatch and config.get("base_sha256") != model.base_sha256():
        raise IntegrityError(f"{source}: trained on base weights {config.get('base_sha256')}, "
                             f"this model's are {model.base_sha256()}")
    if spec.name in model.tasks:
        raise TaskExistsError(f"{source}: task {spec.name!r} is already attached to this model")
    modules = model.add_task(spec)
    try:
        check_tensors(modules.state_dict(), tensors, source)
        modules.load_state_dict(tensors, strict=True)
    except BaseException:
        model.remove_task(spec.name)
        raise
    return spec
